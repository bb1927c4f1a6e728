"""uvicorn's server with a drain before its shutdown, so a SIGTERM cuts no stream.

uvicorn's own shutdown closes the listening socket, closes every WebSocket at
once (code 1012) and gives the other connections `timeout_graceful_shutdown`
before cancelling them. A chat answer streaming over a WebSocket would be cut.
So the first SIGTERM (or Ctrl+C) only starts draining (`service/lifecycle.py`):
`/readyz` answers 503, new generation requests get 503 + Retry-After, the
streams in flight go on and a worker finishes its jobs. The socket stays open
meanwhile, so a request that a load balancer sends before it has seen the
readiness change gets that clean 503 rather than a refused connection, and
`/metrics` is still scraped. uvicorn's shutdown starts once nothing is in
flight or the grace period is over, with what is left of the period as its
own timeout; the lifespan shutdown then closes everything.

A second signal skips the drain (uvicorn's usual stop); a further Ctrl+C
forces the exit. A drained stop exits with status 0.
"""

from __future__ import annotations

import math
from types import FrameType

import uvicorn

from ziggurat.service.lifecycle import Draining

MIN_SHUTDOWN_S = 1
"""What uvicorn's own shutdown gets at least, for requests that are not streams (a sign-in, a page)."""


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, draining: Draining) -> None:
        super().__init__(config)
        self.draining = draining
        self._is_drain_requested = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler: it only sets a flag, which `on_tick` acts on from the event loop.
        if self._is_drain_requested or not self.started:
            super().handle_exit(sig, frame)
            return
        self._is_drain_requested = True

    async def on_tick(self, counter: int) -> bool:
        """uvicorn's main loop calls this every 0.1 s; it stops serving when this returns True."""
        if self._is_drain_requested and not self.should_exit:
            self.draining.begin()
            if self.draining.is_drained:
                remaining = math.ceil(self.draining.remaining_s())
                self.config.timeout_graceful_shutdown = max(MIN_SHUTDOWN_S, remaining)
                self.should_exit = True
        return await super().on_tick(counter)
