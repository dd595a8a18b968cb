"""MetricsCollector: counters and latency histograms, in Prometheus text format over HTTP."""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bandit.protocol import ArbitrageSignal, OrderExecution, OrderStatus, V2Swap
from mycelium_mono import MessageHandler, handles

__all__ = ["Histogram", "MetricsCollector", "MetricsConfig"]


@dataclass(frozen=True)
class MetricsConfig:
    """``http_port``: serve ``/metrics`` on ``http_host`` (0 picks a free port; None: no server)."""

    http_host: str = "127.0.0.1"
    http_port: int | None = None


# Seconds; from 1 µs (a monolith dispatch) to 1 s (a slow database commit).
_BUCKETS = (1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 1e-2, 1e-1, 1.0)


class Histogram:
    """A Prometheus histogram with fixed buckets (cumulative on output)."""

    def __init__(self, buckets: tuple[float, ...] = _BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, seconds)] += 1
        self.total += seconds
        self.count += 1

    def render(self, name: str, labels: str) -> list[str]:
        lines, running = [], 0
        sep = "," if labels else ""
        for bound, n in zip(self.buckets, self.counts, strict=False):
            running += n
            lines.append(f'{name}_bucket{{{labels}{sep}le="{bound:g}"}} {running}')
        lines.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}')
        lines.append(f"{name}_sum{{{labels}}} {self.total:.9f}")
        lines.append(f"{name}_count{{{labels}}} {self.count}")
        return lines


class MetricsCollector(MessageHandler):  # type: ignore[type-arg]  # @handles methods
    """Counts swaps, signals and orders; records latencies the runner measures."""

    def __init__(self, config: MetricsConfig | None = None) -> None:
        self.config = config or MetricsConfig()
        self.counters: dict[str, int] = {
            "swaps": 0, "signals": 0, "orders_filled": 0, "orders_rejected": 0,
        }
        self.pnl_usd_e6 = 0
        self.latency: dict[str, Histogram] = {}
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    @handles(V2Swap)
    def on_swap(self, swap: V2Swap) -> None:
        self.counters["swaps"] += 1

    @handles(ArbitrageSignal)
    def on_signal(self, sig: ArbitrageSignal) -> None:
        self.counters["signals"] += 1

    @handles(OrderExecution)
    def on_execution(self, execution: OrderExecution) -> None:
        if execution.status == OrderStatus.FILLED:
            self.counters["orders_filled"] += 1
            self.pnl_usd_e6 += execution.pnl_usd_e6
        else:
            self.counters["orders_rejected"] += 1

    def observe(self, stage: str, seconds: float) -> None:
        """Record one latency sample for ``stage`` (e.g. ``"dispatch"``)."""
        hist = self.latency.get(stage)
        if hist is None:
            hist = self.histogram(stage)
        hist.observe(seconds)

    def histogram(self, stage: str) -> Histogram:
        """``stage``'s histogram (created if new): a per-swap caller binds its ``observe``
        once instead of looking the stage up for every sample."""
        with self._lock:
            return self.latency.setdefault(stage, Histogram())

    def render(self) -> str:
        """Everything in the Prometheus text exposition format (version 0.0.4)."""
        lines = []
        for name, value in list(self.counters.items()):
            lines += [f"# TYPE bandit_{name}_total counter", f"bandit_{name}_total {value}"]
        lines += ["# TYPE bandit_pnl_usd gauge", f"bandit_pnl_usd {self.pnl_usd_e6 / 1e6:.6f}"]
        lines.append("# TYPE bandit_latency_seconds histogram")
        with self._lock:
            stages = sorted(self.latency.items())
        for stage, hist in stages:
            lines += hist.render("bandit_latency_seconds", f'stage="{stage}"')
        return "\n".join(lines) + "\n"

    def serve(self) -> int:
        """Start the ``/metrics`` endpoint in a daemon thread; returns the bound port."""
        if self.config.http_port is None:
            raise RuntimeError("metrics http_port is not configured\n"
                               "help: set [metrics] http_port = 9464 (or 0 for any free port)")
        collector = self

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics lives here")
                    return
                body = collector.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return  # scrapes every few seconds would flood stderr

        self._server = ThreadingHTTPServer((self.config.http_host, self.config.http_port), _Handler)
        threading.Thread(target=self._server.serve_forever, name="bandit-metrics",
                         daemon=True).start()
        return int(self._server.server_address[1])

    def close(self) -> None:
        """Stop the HTTP endpoint, if it runs."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
