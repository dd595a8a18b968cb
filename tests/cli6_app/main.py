import sys

from library.messages import BookBorrowed, BookReturned
from library.routing import LoanBus
from library.services import Catalog, FineDesk, Ledger, SlowShelf


def main() -> int:
    bus = LoanBus(catalog=Catalog(), slow_shelf=SlowShelf(), fine_desk=FineDesk(), ledger=Ledger())
    bus.emit_book_borrowed(BookBorrowed(book_id=1, member_id=7))
    late = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    bus.emit_book_returned(BookReturned(book_id=1, member_id=7, days_late=late))
    print("origin", LoanBus.__mycelium_origin__, "fines", bus.ledger.total, "argv", sys.argv[1:])
    return 3 if bus.ledger.total else 0


if __name__ == "__main__":
    sys.exit(main())
