"""ExecutionService: paper execution against the signal's pool snapshot, or on chain.

On chain (live mode, a ``bandit.chain.execute.ChainExecutor``) both legs go in one transaction
that reverts unless the predicted output comes back; the record then carries the realized
output, the transaction hash, gas used and gas price.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from bandit.protocol import OrderExecution, OrderRequest, OrderStatus, RejectReason
from bandit.services.risk import expected_fill
from bandit.tokens import usd_e6
from mycelium_mono import MessageHandler

__all__ = ["ExecutionConfig", "ExecutionService"]


@dataclass(frozen=True)
class ExecutionConfig:
    """``report_path``: each approved order's id is appended here (flushed) once it is in the
    audit log (see :meth:`ExecutionService.report_when_audited`; without an audit logger,
    once its execution was handed downstream): what a crash test compares the audit log
    against."""

    report_path: Path | None = None


class ExecutionService(MessageHandler[OrderRequest]):
    """Fills approved orders on paper and emits one :class:`OrderExecution` per request.

    Rejected requests pass through as ``REJECTED`` executions so the audit trail holds every
    decision in one stream of one message type.
    """

    def __init__(self, config: ExecutionConfig | None = None, *, chain: Any = None) -> None:
        self.config = config or ExecutionConfig()
        self.chain = chain  # a ChainExecutor: fill on chain instead of on paper
        self.handled = 0
        self.stale = 0  # on chain: orders whose simulation reverted, never sent
        self.filled = 0
        self.rejected = 0
        self.pnl_usd_e6 = 0
        self._report: IO[str] | None = None
        # Approved order ids not yet reported, while an audit logger reports them for us.
        self._unaudited: set[int] | None = None
        if self.config.report_path is not None:
            self._report = open(self.config.report_path, "a", encoding="ascii")  # noqa: SIM115

    def handle(self, req: OrderRequest) -> None:
        self.handled += 1
        if req.approved:
            execution = self.fill(req)
            if execution.status == OrderStatus.FILLED:
                self.filled += 1
            else:  # on chain: stale or reverted
                self.rejected += 1
            self.pnl_usd_e6 += execution.pnl_usd_e6
        else:
            execution = self._rejection(req)
            self.rejected += 1
        reports = self._report is not None and req.approved
        if reports and self._unaudited is not None:
            # Before emit: in the monolith the audit logger runs (and reports) inside it.
            self._unaudited.add(req.order_id)
        self.emit(execution)
        if reports and self._unaudited is None:
            self._write_report(req.order_id)  # no audit logger to wait for: handed downstream

    def report_when_audited(self, audit: Any) -> None:
        """Report each approved order only once ``audit`` (an AuditLogger) has written it.

        On a bus (inproc, distributed's strategies node) ``emit`` only queues the execution:
        the runtime drains this service's whole batch before the audit logger runs, so
        reporting after ``emit`` announced hundreds of orders a ``kill -9`` then found in
        no audit log. The audit logger's ``on_logged`` reports them instead, in every mode.
        """
        self._unaudited = set()
        audit.on_logged = self._audited

    def _audited(self, execution: OrderExecution) -> None:
        if self._unaudited is not None and execution.order_id in self._unaudited:
            self._unaudited.discard(execution.order_id)
            self._write_report(execution.order_id)

    def _write_report(self, order_id: int) -> None:
        if self._report is not None:
            self._report.write(f"{order_id}\n")
            self._report.flush()

    def fill(self, req: OrderRequest) -> OrderExecution:
        """The paper fill: both legs with the pair contract's math on the snapshot."""
        out = expected_fill(req)
        if self.chain is not None:
            return self._fill_on_chain(req, out)
        pnl = out - req.amount_in - req.gas_cost
        return _execution(req, OrderStatus.FILLED, out, req.gas_cost, usd_e6(req.token_in, pnl))

    def _fill_on_chain(self, req: OrderRequest, predicted_out: int) -> OrderExecution:
        """One atomic transaction; it reverts (status REJECTED, gas spent) below the prediction.

        Simulated first (``eth_call``): a cycle that is already gone is rejected as ``STALE``
        without spending gas.
        """
        legs = (req.buy_pool, req.sell_pool, req.token_in, req.amount_in, predicted_out)
        if not self.chain.would_succeed(*legs):
            self.stale += 1
            return _execution(req, OrderStatus.REJECTED, amount_out=0, gas_cost=0, pnl_usd_e6=0,
                              reason=RejectReason.STALE)
        fill = self.chain.execute(*legs)
        pnl = fill.amount_out - req.amount_in - req.gas_cost if fill.ok else -req.gas_cost
        status = OrderStatus.FILLED if fill.ok else OrderStatus.REJECTED
        return _execution(req, status, fill.amount_out, req.gas_cost,
                          usd_e6(req.token_in, pnl), chain=fill)

    def _rejection(self, req: OrderRequest) -> OrderExecution:
        return _execution(req, OrderStatus.REJECTED, amount_out=0, gas_cost=0, pnl_usd_e6=0)

    def close(self) -> None:
        """Close the report file."""
        if self._report is not None:
            self._report.close()
            self._report = None


def _execution(
    req: OrderRequest, status: OrderStatus, amount_out: int, gas_cost: int, pnl_usd_e6: int,
    chain: Any = None, reason: int | None = None,
) -> OrderExecution:
    """The execution record of ``req``: what the request says, plus the outcome."""
    return OrderExecution(
        order_id=req.order_id,
        source_seq=req.source_seq,
        timestamp_ns=req.timestamp_ns,
        status=int(status),
        reason=req.reason if reason is None else int(reason),
        buy_pool=req.buy_pool,
        sell_pool=req.sell_pool,
        token_in=req.token_in,
        amount_in=req.amount_in,
        amount_out=amount_out,
        gas_cost=gas_cost,
        pnl_usd_e6=pnl_usd_e6,
        tx_hash=chain.tx_hash if chain is not None else 0,
        gas_used=chain.gas_used if chain is not None else 0,
        gas_price=chain.gas_price if chain is not None else 0,
    )
