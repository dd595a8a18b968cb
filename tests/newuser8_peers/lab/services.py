"""The lab's services: plain classes that never name each other."""

from lab.messages import PageSent, ResultReady, SampleTaken
from mycelium_mono import MessageHandler, handles


def is_critical(sample_id: int) -> bool:
    """What the Analyzer below decides for a sample: ids 17, 18, 19 of every 20."""
    return 4.0 + sample_id % 20 > 20.0


class Analyzer(MessageHandler[SampleTaken]):
    def handle(self, sample: SampleTaken) -> None:
        glucose = 4.0 + sample.sample_id % 20
        self.emit(ResultReady(sample.sample_id, glucose=glucose, critical=glucose > 20.0))


class Registrar(MessageHandler[SampleTaken]):
    def __init__(self) -> None:
        self.seen = 0

    def handle(self, sample: SampleTaken) -> None:
        self.seen += 1


class Notifier(MessageHandler[ResultReady]):
    def handle(self, result: ResultReady) -> None:
        if result.critical:
            self.emit(PageSent(result.sample_id, ward=7))


class Auditor:
    def __init__(self) -> None:
        self.lines: list[str] = []

    @handles(ResultReady)
    def on_result(self, result: ResultReady) -> None:
        self.lines.append(f"result {result.sample_id}")

    @handles(PageSent)
    def on_page(self, page: PageSent) -> None:
        self.lines.append(f"page {page.sample_id}")


class PagerArchive(MessageHandler[PageSent]):
    async def handle(self, page: PageSent) -> None:  # may await: runs in the background
        print("archived page", page.sample_id)
