from library.messages import Ledger, Loan, Return  # noqa: F401
from library.services import Archivist, Auditor, Desk, Shelver
from mycelium_mono import route, routing_config


@routing_config
class LibraryBus:
    Loan = route(sync=[Desk, Archivist], background=[Shelver])
    Return = [Archivist, Shelver]
    Ledger = route(background=[Auditor])
