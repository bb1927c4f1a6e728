"""A real uvicorn server on a free loopback port, run in a thread for one test.

The server runs its own event loop in a background thread, so tests drive it with
real clients (the openai SDK, httpx, raw sockets) exactly as users would, and can
still look at the app's services (engine counters) afterwards.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

from ziggurat.app import build_app
from ziggurat.config import Settings
from ziggurat.connection.http.deps import Services
from ziggurat.connection.http.server import DrainingServer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class RunningServer:
    app: FastAPI
    base_url: str
    server: DrainingServer
    thread: threading.Thread

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services


@contextmanager
def running_server(settings: Settings, *, ready_timeout_s: float = 60) -> Iterator[RunningServer]:
    port = free_port()
    app = build_app(settings)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on"
    )
    server = DrainingServer(config, app.state.draining)  # what `ziggurat serve` runs
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + ready_timeout_s
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the test server failed to start")
        if time.monotonic() > deadline:
            raise TimeoutError("the test server did not start in time")
        time.sleep(0.02)
    try:
        yield RunningServer(app=app, base_url=f"http://127.0.0.1:{port}", server=server, thread=thread)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def wait_until(predicate: Callable[[], bool], *, timeout_s: float = 5.0) -> bool:
    """Poll `predicate` until it holds (True) or the time is up (False); for cross-thread state."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
