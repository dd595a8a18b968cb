# ruff: noqa  (test fixtures: deliberately broken or unused names; F401/F821 are the point)
from mycelium_mono import U64, Address, message


@message(type_id=6101)
class Swap:
    pool: Address
    amount: U64


@message(type_id=6102)
class Signal:
    amount: U64


@message(type_id=6103)
class Order:
    amount: U64


class NotAMessage:
    """A plain class: routing it is error E0003."""
