"""Process 1 of the ZeroMQ run: the admissions desk publishes three admissions to the ward
and prints the ward's three answers (two beds, then a full ward)."""

import asyncio
import sys

from ward.messages import Admission, BedAssigned, WardFull

from mycelium_mono import MessageBus


async def main(port: int, peer: int) -> None:
    bus = MessageBus.with_tcp(f"127.0.0.1:{port}")
    beds = bus.subscribe(BedAssigned, maxsize=100)
    full = bus.subscribe(WardFull, maxsize=100)
    await bus.connect_to(f"127.0.0.1:{peer}")
    await bus.ready()
    await bus.wait_for_subscribers(1, Admission, timeout=20)
    publisher = bus.publisher(Admission)
    blank = Admission.from_bytes(bytes(Admission.SIZE))
    for n in range(3):
        await publisher.publish(blank.replace(patient_ref=n.to_bytes(8, "little"), ward_no=7,
                                              name=f"Zoë {n}"))
    async with asyncio.timeout(20):
        got = [(await beds.recv()).bed, (await beds.recv()).bed, (await full.recv()).waiting]
    print("desk got", got)
    await bus.close()


asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
