"""A TCP proxy on loopback that injects network faults between a client and a server.

Used by the storage tests in front of Azurite. Runs an asyncio loop in a background
thread; knobs on ``proxy.faults`` can change between requests:

* ``latency_s`` — one-way delay per chunk (pipelined, so throughput is not capped);
* ``rate_bps`` — server→client bandwidth per connection;
* ``reset_after`` / ``close_after`` / ``stall_after`` — after this many server→client
  bytes of a connection: TCP RST, clean FIN (truncation), or stop forwarding (hang);
* ``fault_conns`` — only the first N connections since ``reset_counters()`` are faulty;
* ``refuse`` — reset every new connection at once.

``proxy.requests`` logs every HTTP request line seen going upstream (method, path and the
``Range`` header), so tests can count GETs and spot ranged retries.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass
class Faults:
    latency_s: float = 0.0
    rate_bps: float | None = None
    reset_after: int | None = None
    close_after: int | None = None
    stall_after: int | None = None
    fault_conns: int | None = None
    refuse: bool = False


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    conn: int


@dataclass
class Counters:
    connections: int = 0
    faults: int = 0
    bytes_down: int = 0
    requests: list[Request] = field(default_factory=list)


class FaultProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1", chunk: int = 64 << 10) -> None:
        if target_host not in LOOPBACK:
            raise ValueError("the fault proxy only forwards to loopback")
        self.target = (target_host, target_port)
        self.chunk = chunk
        self.faults = Faults()
        self.counters = Counters()
        self._index = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def requests(self) -> list[Request]:
        return self.counters.requests

    def start(self) -> FaultProxy:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True, name="faultproxy")
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fault proxy did not start")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return

        async def close() -> None:
            self._server.close()
            for w in list(self._writers):
                w.transport.abort()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = None

    def reset_counters(self) -> None:
        self._index = 0
        self.counters = Counters()

    def kill_all(self) -> None:
        """Reset every open connection now (also drops a client's pooled sockets)."""
        def kill() -> None:
            for w in list(self._writers):
                _reset(w)
        self._loop.call_soon_threadsafe(kill)

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.counters.connections += 1
        index, self._index = self._index, self._index + 1
        f = self.faults
        if f.refuse:
            _reset(client_w)
            return
        faulty = f.fault_conns is None or index < f.fault_conns
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            _reset(client_w)
            return
        self._writers.update((client_w, server_w))
        tasks = {asyncio.create_task(self._pump(client_r, server_w, False, faulty, client_w, index)),
                 asyncio.create_task(self._pump(server_r, client_w, True, faulty, server_w, index))}
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            t.cancel()
        for w in (client_w, server_w):
            self._writers.discard(w)
            if not w.is_closing():
                w.close()

    def _log_requests(self, buffer: bytearray, conn: int, skip: list[int]) -> None:
        """Record complete request heads in ``buffer``; ``skip[0]`` body bytes still to pass."""
        while True:
            if skip[0]:
                n = min(skip[0], len(buffer))
                del buffer[:n]
                skip[0] -= n
                if skip[0]:
                    return
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buffer[:end]).decode("latin-1").split("\r\n")
            parts = head[0].split(" ")
            headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
            if len(parts) >= 2:
                rng = headers.get("range") or headers.get("x-ms-range")  # Azure sends x-ms-range
                self.counters.requests.append(Request(parts[0], parts[1], rng, conn))
            del buffer[: end + 4]
            skip[0] = int(headers.get("content-length", "0") or 0)

    async def _pump(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, down: bool, faulty: bool,
                    peer: asyncio.StreamWriter, conn: int) -> None:
        f = self.faults
        queue: asyncio.Queue = asyncio.Queue(maxsize=256)

        async def read() -> None:
            while True:
                data = await r.read(self.chunk)
                await queue.put((time.monotonic() + f.latency_s, data))
                if not data:
                    return

        reader = asyncio.create_task(read())
        sent, started, pending, skip = 0, None, bytearray(), [0]
        try:
            while True:
                due, data = await queue.get()
                if due > time.monotonic():
                    await asyncio.sleep(due - time.monotonic())
                if not data:
                    if w.can_write_eof():
                        w.write_eof()
                    return
                if not down:
                    pending += data
                    self._log_requests(pending, conn, skip)
                if down and faulty:
                    for limit, action in ((f.reset_after, "reset"), (f.close_after, "close"),
                                          (f.stall_after, "stall")):
                        if limit is not None and sent + len(data) > limit:
                            w.write(data[: max(0, limit - sent)])
                            await w.drain()
                            self.counters.faults += 1
                            if action == "reset":
                                _reset(w)
                                _reset(peer)
                            elif action == "close":
                                w.close()
                                peer.close()
                            else:
                                await asyncio.sleep(3600)
                            return
                w.write(data)
                await w.drain()
                sent += len(data)
                if down:
                    self.counters.bytes_down += len(data)
                    if f.rate_bps:
                        started = started or time.monotonic()
                        ahead = sent / f.rate_bps - (time.monotonic() - started)
                        if ahead > 0:
                            await asyncio.sleep(ahead)
        finally:
            reader.cancel()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0: the peer sees a TCP RST (ECONNRESET), not a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()
