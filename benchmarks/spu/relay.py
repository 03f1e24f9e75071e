"""A delaying TCP relay on loopback: each direction holds a chunk for the one-way delay and paces it to a bandwidth.

SPU's parties talk over brpc; they cannot be shaped from inside, so each party
dials its peer through one of these relays. A chunk read at time t leaves at
max(t + RTT / 2, when the previous chunk finished) and occupies the link for
8 n / bandwidth seconds: the same model as the project's sender-side shaper
(``parties.transport.Shaper``). Standard library only (it runs in the SPU
environment).
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Link:
    name: str
    rtt_s: float
    bandwidth_bps: float  # 0 = unlimited


LINKS: dict[str, Link] = {
    "none": Link("none", 0.0, 0.0),
    "lan": Link("lan", 0.3e-3, 3e9),
    "wan": Link("wan", 40e-3, 400e6),
}

CHUNK = 1 << 16


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: Link) -> None:
    """Copy one direction, delayed and paced."""
    queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

    async def read() -> None:
        while data := await reader.read(CHUNK):
            queue.put_nowait((time.monotonic(), data))
        queue.put_nowait(None)

    async def write() -> None:
        free_at = 0.0
        while (item := await queue.get()) is not None:
            arrived, data = item
            start = max(arrived + link.rtt_s / 2, free_at)
            free_at = start + (8 * len(data) / link.bandwidth_bps if link.bandwidth_bps else 0.0)
            delay = free_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(data)
            await writer.drain()
        writer.close()

    await asyncio.gather(read(), write())


class Relay:
    """Listen on ``listen_port``, forward every connection to ``target_port`` (both on 127.0.0.1) through ``link``."""

    def __init__(self, listen_port: int, target_port: int, link: Link) -> None:
        self.listen_port, self.target_port, self.link = listen_port, target_port, link
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "Relay":
        self._thread.start()
        self._ready.wait(10)
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stopped = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", self.listen_port)
        self._ready.set()
        async with server:
            await self._stopped.wait()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(600):  # the target party may not listen yet
            try:
                t_reader, t_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
                break
            except OSError:
                await asyncio.sleep(0.05)
        else:
            writer.close()
            return
        await asyncio.gather(_pump(reader, t_writer, self.link), _pump(t_reader, writer, self.link),
                             return_exceptions=True)

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(10)
