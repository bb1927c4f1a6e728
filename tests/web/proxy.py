"""A TCP proxy the browser tests can sever: every open connection dies at once, as on a real network.

Chromium's offline emulation leaves an open response streaming, so it cannot show
what the web app does when a reply's connection breaks mid-answer. This proxy sits
between the browser and the server on its own event loop (in a thread, since the
tests drive Playwright synchronously). `cut()` resets every connection it carries
(TCP RST towards the browser, a close towards the server) and, for `down_s`, resets
new ones as soon as they arrive, so the page's first reconnection attempts fail too.
`cut_before_answer(marker)` arms a one-shot trap instead: the next request containing
`marker` reaches the server, and its connection is reset just before the first byte
of the answer reaches the browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from tests.server import free_port

_CHUNK = 64 * 1024


@dataclass
class SeverableProxy:
    upstream_host: str
    upstream_port: int
    port: int = field(default_factory=free_port)
    connections: int = 0
    """Connections accepted and carried (refused ones not counted)."""
    refused: int = 0
    cuts: int = 0
    _loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    _open: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = field(default_factory=set)
    _down_until: float = 0.0
    _trap: bytes | None = None
    trapped: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut(self, down_s: float = 0.0) -> int:
        """Reset every open connection, then refuse new ones for `down_s`; the number cut."""
        future = asyncio.run_coroutine_threadsafe(self._cut(down_s), self._loop)
        return future.result(timeout=5)

    def cut_before_answer(self, marker: bytes) -> None:
        self._loop.call_soon_threadsafe(setattr, self, "_trap", marker)

    async def _cut(self, down_s: float) -> int:
        self._down_until = time.monotonic() + down_s
        severed = list(self._open)
        self._open.clear()
        for client, upstream in severed:
            client.transport.abort()
            upstream.transport.abort()
        self.cuts += 1
        return len(severed)

    async def _serve(self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        if time.monotonic() < self._down_until:
            self.refused += 1
            client.transport.abort()
            return
        try:
            upstream_reader, upstream = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        except OSError:
            client.transport.abort()
            return
        self.connections += 1
        pair = (client, upstream)
        self._open.add(pair)
        caught = False

        def to_server(chunk: bytes) -> bool:
            nonlocal caught
            if self._trap is not None and self._trap in chunk:
                self._trap, caught = None, True
            return True

        def to_browser(chunk: bytes) -> bool:
            if caught:
                self.trapped += 1
                client.transport.abort()
                upstream.transport.abort()
                return False
            return True

        pumps = [
            asyncio.ensure_future(_pump(client_reader, upstream, to_server)),
            asyncio.ensure_future(_pump(upstream_reader, client, to_browser)),
        ]
        try:
            # Either side finishing ends the connection (HTTP/1.1 never half-closes here).
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            self._open.discard(pair)
            client.close()
            upstream.close()

    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", self.port))
        except BaseException as exc:  # reported to the starting thread
            failure.append(exc)
            ready.set()
            return
        ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            # Reset what is still open, so each connection's task ends by itself (a cancelled one
            # would be reported by asyncio's stream server as an error).
            self._loop.run_until_complete(self._cut(0.0))
            pending = asyncio.all_tasks(self._loop)
            if pending:
                self._loop.run_until_complete(asyncio.wait(pending, timeout=2))
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            self._loop.run_until_complete(server.wait_closed())
            self._loop.close()

    @contextmanager
    def running(self) -> Iterator[SeverableProxy]:
        ready = threading.Event()
        failure: list[BaseException] = []
        thread = threading.Thread(target=self._run, args=(ready, failure), name="cut-proxy", daemon=True)
        thread.start()
        ready.wait(timeout=10)
        if failure:
            raise failure[0]
        try:
            yield self
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            thread.join(timeout=10)


async def _pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, passes: Callable[[bytes], bool]
) -> None:
    """Copy until EOF; `passes(chunk)` False stops (it has reset the connection)."""
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while chunk := await reader.read(_CHUNK):
            if not passes(chunk):
                return
            writer.write(chunk)
            await writer.drain()
