from library.messages import BookBorrowed, BookReturned, FineIssued  # noqa: F401
from library.services import Catalog, FineDesk, Ledger, Shelf
from mycelium_mono import routing_config


@routing_config
class LoanBus:
    BookBorrowed = [Catalog, Shelf]
    BookReturned = [FineDesk, Ledger]
    FineIssued = [Ledger]
