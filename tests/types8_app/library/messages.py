"""A lending library's messages."""

from typing import Annotated

from mycelium_mono import I64, U64, Bytes, Message, Text, message


@message(type_id=58801, topic="library.loans")
class Loan(Message):
    member: U64
    isbn: Annotated[bytes, Bytes(20)]
    title: Annotated[str, Text(24)]


@message(type_id=58802, topic="library.returns")
class Return(Message):
    member: U64
    isbn: Annotated[bytes, Bytes(20)]


@message(type_id=58803, topic="library.ledger")
class Ledger(Message):
    member: U64
    balance: I64
