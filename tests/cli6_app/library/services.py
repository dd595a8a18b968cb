import os

from library.messages import BookBorrowed, BookReturned, FineIssued
from mycelium_mono import MessageHandler, handles


class Catalog(MessageHandler[BookBorrowed]):
    def __init__(self) -> None:
        self.out: set[int] = set()

    def handle(self, msg: BookBorrowed) -> None:
        self.out.add(msg.book_id)


class FineDesk(MessageHandler[BookReturned]):
    def handle(self, msg: BookReturned) -> None:
        if msg.days_late:
            self.emit(FineIssued(msg.member_id, cents=msg.days_late * 25))


class Ledger:
    def __init__(self) -> None:
        self.total = 0

    @handles(FineIssued)
    def on_fine(self, fine: FineIssued) -> None:
        self.total += fine.cents

    @handles(BookReturned)
    def on_return(self, returned: BookReturned) -> None:
        pass


class FastShelf(MessageHandler[BookBorrowed]):
    def handle(self, msg: BookBorrowed) -> None:
        pass


class SlowShelf(MessageHandler[BookBorrowed]):
    def handle(self, msg: BookBorrowed) -> None:
        pass


# Picked when the module is imported: a file digest cannot see which one the cache was built for.
Shelf = FastShelf if os.environ.get("LIBRARY_FAST_SHELF") else SlowShelf
