"""The ward's services: a bed allocator that emits into a hybrid route once the beds run out."""

from mycelium_mono import MessageHandler, handles
from ward.messages import Admission, BedAssigned, WardFull


class BedAllocator(MessageHandler[Admission]):
    def __init__(self, beds: int = 2) -> None:
        self.free = list(range(1, beds + 1))
        self.waiting = 0

    def handle(self, adm: Admission) -> None:
        if self.free:
            self.emit(BedAssigned(adm.patient_ref, bed=self.free.pop(0), isolation=adm.isolation))
        else:
            self.waiting += 1
            self.emit(WardFull(ward_no=adm.ward_no, waiting=self.waiting))


class Triage(MessageHandler[Admission]):
    def __init__(self) -> None:
        self.seen = 0

    def handle(self, adm: Admission) -> None:
        self.seen += 1


class Journal:
    def __init__(self) -> None:
        self.lines: list[str] = []

    @handles(BedAssigned)
    def on_bed(self, b: BedAssigned) -> None:
        self.lines.append(f"bed {b.bed}")

    @handles(WardFull)
    def on_full(self, f: WardFull) -> None:
        self.lines.append(f"full {f.waiting}")


class Pager(MessageHandler[WardFull]):
    def __init__(self) -> None:
        self.paged: list[int] = []

    async def handle(self, f: WardFull) -> None:
        self.paged.append(f.waiting)
