"""A deterministic feed of readings, shared by every mode."""

from __future__ import annotations

from gridwatch.messages import MeterReading


def reading(seq: int, voltage: float = 230.0, feeder: int = 7) -> MeterReading:
    return MeterReading(
        seq=seq, feeder_id=feeder, phase=seq % 3, voltage=voltage, current=12.5,
        temp_c=-12, trim=-3, delta_wh=-40, energy_wh=2**40, ts_s=1_700_000_000,
        serial=2**100, tariff=2**255, online=True, station=bytes(range(20)),
        cert=b"\x01" * 32, meter=b"MTR-01", label="Nord-Ost",
    )


def feed(n: int) -> list[MeterReading]:
    # every 5th reading over the limit, every 10th far over it (a trip)
    return [reading(i, 290.0 if i % 10 == 0 else 260.0 if i % 5 == 0 else 230.0)
            for i in range(n)]
