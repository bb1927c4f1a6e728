"""A multi-process ziggurat on loopback: gateways and workers as real `ziggurat serve` processes.

They share the test PostgreSQL database, Redis and RabbitMQ, each test with a
key and queue prefix of its own, exactly as replicas share them in production.
Processes are killed with SIGKILL when a test wants a crash, never mocked.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.server import free_port
from ziggurat.model.engines.demo import compose_reply

QUESTION = "Tell me about the ziggurat of Ur and its builders"
EXPECTED = compose_reply(QUESTION, seed=None)
"""The demo engine is deterministic: the whole answer to QUESTION, known in advance."""


@dataclass
class Process:
    role: str
    port: int
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        """A crash: SIGKILL, no chance to clean up."""
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Cluster:
    env: dict[str, str]
    tmp_path: Path
    processes: list[Process] = field(default_factory=list)

    def start(self, role: str, *, wait: bool = True, **env: str) -> Process:
        port = free_port()
        log_path = self.tmp_path / f"{role}-{port}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                [sys.executable, "-m", "ziggurat.cli", "serve", "--role", role, "--port", str(port)],
                env={**self.env, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        process = Process(role, port, popen, log_path)
        self.processes.append(process)
        if wait:
            self.wait_ready(process)
        return process

    def wait_ready(self, process: Process, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.popen.poll() is not None:
                raise RuntimeError(f"{process.role} exited:\n{process.log()}")
            try:
                response = httpx.get(process.url + "/readyz", timeout=2)
                if response.status_code == 200:  # a gateway is ready once a worker advertised a model
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{process.role} on {process.port} never became ready:\n{process.log()}")

    def stop_all(self) -> None:
        for process in self.processes:
            process.stop()


@contextmanager
def cluster(
    tmp_path: Path, *, database_url: str, redis_url: str, amqp_url: str, prefix: str, **settings: str
) -> Iterator[Cluster]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ZIGGURAT_")},
        "ZIGGURAT_DATA_DIR": str(tmp_path / "data"),
        "ZIGGURAT_CACHE_DIR": str(tmp_path / "cache"),
        "ZIGGURAT_DATABASE_URL": database_url,
        "ZIGGURAT_REDIS_URL": redis_url,
        "ZIGGURAT_BROKER_URL": amqp_url,
        "ZIGGURAT_SECRET_KEY": "x" * 40,
        "ZIGGURAT_BROKER__QUEUE_PREFIX": prefix,
        "ZIGGURAT_BROKER__REDIS_PREFIX": prefix,
        "ZIGGURAT_ENGINE__KIND": "demo",
        "ZIGGURAT_LOG__JSON_FORMAT": "true",
        **settings,
    }
    running = Cluster(env=env, tmp_path=tmp_path)
    try:
        yield running
    finally:
        running.stop_all()
