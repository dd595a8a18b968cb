"""The payments line's message types (type ids 39401..39404): request -> fraud check ->
ledger posting -> notification. ``pay_id`` counts from 1, so loss, repeats and order can be
counted at the end (a payment is identified by its id: a repeat is deduplicated by it)."""

from __future__ import annotations

from mycelium_mono import I64, U64, message


@message(type_id=39401, topic="pay9_request")
class PaymentRequest:
    pay_id: U64
    amount_cents: I64


@message(type_id=39402, topic="pay9_cleared")
class FraudCleared:
    pay_id: U64
    amount_cents: I64


@message(type_id=39403, topic="pay9_posting")
class LedgerPosting:
    pay_id: U64
    amount_cents: I64
