"""Test doubles for the caches: a TCP proxy that can cut Redis off, and an embedder without a model."""

import asyncio
import contextlib
import hashlib
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt


class TcpProxy:
    """Forwards a local port to Redis; `stop` cuts every connection, `start` listens on that port again."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        for pipe in list(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        self._writers.clear()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        except OSError:
            client_writer.close()
            return
        self._writers.update((client_writer, upstream_writer))
        for reader, writer in ((client_reader, upstream_writer), (upstream_reader, client_writer)):
            pipe = asyncio.create_task(self._pipe(reader, writer))
            self._pipes.add(pipe)
            pipe.add_done_callback(self._pipes.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()


class SilentServer:
    """Accepts connections and never answers: a Redis behind a black hole."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)

    async def stop(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class FakeEmbedder:
    """Known texts get the vectors given (normalised); any other text a fixed pseudo-random one."""

    def __init__(self, vectors: Mapping[str, Sequence[float]], dimensions: int = 8) -> None:
        self.dimensions = dimensions
        self._vectors = {text: self._unit(np.asarray(v, dtype=np.float32)) for text, v in vectors.items()}
        self.calls: list[str] = []
        self.is_started = False

    @staticmethod
    def _unit(vector: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        result: npt.NDArray[np.float32] = (vector / np.linalg.norm(vector)).astype(np.float32)
        return result

    async def start(self) -> None:
        self.is_started = True

    async def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.calls.extend(texts)
        rows = []
        for text in texts:
            known = self._vectors.get(text)
            if known is None:
                seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
                random = np.random.default_rng(seed).standard_normal(self.dimensions)
                known = self._unit(random.astype(np.float32))
            rows.append(known)
        return np.stack(rows)
