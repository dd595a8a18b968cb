"""Services of the library; they never name each other."""

from library.messages import Ledger, Loan, Return
from mycelium_mono import MessageHandler, handles


class Desk(MessageHandler[Loan]):
    def __init__(self) -> None:
        self.lent = 0

    def handle(self, loan: Loan) -> None:
        self.lent += 1
        self.emit(Ledger(member=loan.member, balance=-1))


class Archivist:
    def __init__(self) -> None:
        self.seen: list[bytes] = []

    @handles(Loan)
    @handles(Return)
    def on_book(self, m: Loan | Return) -> None:
        self.seen.append(m.isbn)


class Auditor:
    def __init__(self) -> None:
        self.balance = 0

    @handles(Ledger)
    async def on_ledger(self, entry: Ledger) -> None:
        self.balance += entry.balance


class Shelver:
    @handles(Return)
    @staticmethod
    def on_return(m: Return) -> None:
        print("shelve", m.isbn.hex())

    @handles(Loan)
    @classmethod
    def on_loan(cls, m: Loan) -> None:
        print(cls.__name__, m.title)
