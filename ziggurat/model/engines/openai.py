"""Relay generation to a remote OpenAI-compatible server (vLLM, SGLang, TGI, llama.cpp, Ollama).

In production the GPUs sit behind a dedicated inference server; a worker only has to
forward each request and turn the server's SSE stream into `TextDelta`s and one
`GenerationEnd`. This relay is on the hot path of every token, hence:

- aiohttp, never httpx or the openai SDK: at thousands of concurrent streams httpx's
  pool costs 17-22x the CPU per streamed request, and the SDK builds a pydantic model
  per chunk. Each `data:` line is parsed once with orjson, reading only what we need.
- One pooled, kept-alive `ClientSession` per engine, opened in `start()`.
- Closing the consumer (task cancelled or iterator closed) closes the HTTP connection:
  the only signal an OpenAI-compatible server has to stop generating and free its slot.

Several servers can serve one model (`openai_endpoints.py`): each request goes to one
of them by weight, a circuit breaker per server stops sending to one that keeps failing,
and a request that fails before its first token is tried on another server (at most
`max_attempts` servers). Once text has been relayed nothing is retried: the answer would
change. Falling back to another *model* is the gateway's business (`service/routing`).
The wire format lives in `openai_wire.py`. It relays sampling controls and token
logprobs, not tool calls, reasoning content or `n > 1`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from typing import Final

import aiohttp
import orjson

from ziggurat.errors import ConfigurationError, InvalidRequest, UpstreamFailed, ZigguratError
from ziggurat.model.breaker import CircuitBreaker
from ziggurat.model.engine import (
    ChatMessage,
    EndpointStats,
    EngineStats,
    GenerationEnd,
    GenerationEvent,
    GenerationRequest,
    ModelInfo,
    TextDelta,
    estimate_tokens,
)
from ziggurat.model.engines.openai_capacity import (
    CapacityTracker,
    LoadPolicy,
    LoadPoller,
    endpoint_stats,
    total_stats,
)
from ziggurat.model.engines.openai_endpoints import (
    Endpoint,
    EndpointConfig,
    EndpointPool,
    RelayPolicy,
    RequestVerdict,
)
from ziggurat.model.engines.openai_wire import (
    SseDecoder,
    StreamState,
    apply_payload,
    describe_failure,
    drain,
    error_text,
    estimate_usage,
    loads_or_none,
    merged_delta,
    to_chat_completion_request,
)
from ziggurat.model.engines.read_deadline import ReadDeadline
from ziggurat.model.engines.read_pacing import ReadTicker, resume_upstream_once_per_read

log = logging.getLogger(__name__)

# Below the 5 s idle timeout of uvicorn (vLLM, SGLang): reusing a socket the server is
# closing fails a POST, which aiohttp (rightly) never retries.
_KEEPALIVE_S: Final = 4.0
_MAX_ERROR_BODY_BYTES: Final = 1 << 16
# Statuses that mean the request itself was bad (vLLM answers 400, TGI 422): the
# client can fix them, and they say nothing about the server's health.
_CLIENT_FAULT_STATUSES: Final = frozenset({400, 413, 422})
# The server is up but busy: try another one, without holding it against this one.
_BUSY_STATUSES: Final = frozenset({408, 429})
NO_ENDPOINT = "every remote model server is failing; none is being tried for now"


class _ServerBusy(UpstreamFailed):
    """HTTP 408/429: worth another server, but no sign of a broken one."""


class OpenAIEngine:
    """Relays each generation to `{url}/chat/completions` of one of its endpoints, with `stream=true`.

    Give `base_url` and `api_key` for one server, or `endpoints`. `capacity` is
    `max_concurrency`; the pool holds one more connection per server so a health
    probe never queues behind busy streams. `is_ready` is True while some server
    was healthy when last seen (a probe or a request: unreachable, 5xx, 401, 404 or
    the model not listed make it unhealthy, a successful request or
    `check_health()` healthy again) and its breaker is not open.
    """

    def __init__(
        self,
        *,
        remote_model: str,
        served_name: str,
        max_concurrency: int,
        timeout_s: float,
        base_url: str | None = None,
        api_key: str | None = None,
        endpoints: Sequence[EndpointConfig] = (),
        relay: RelayPolicy | None = None,
        context_length: int | None = None,
        default_max_tokens: int | None = None,
        load: LoadPolicy | None = None,
    ) -> None:
        if max_concurrency < 1 or timeout_s <= 0:
            raise ConfigurationError("OpenAIEngine needs max_concurrency >= 1 and timeout_s > 0")
        configs = list(endpoints) or ([EndpointConfig(base_url, api_key)] if base_url else [])
        self._relay = relay or RelayPolicy.uniform(timeout_s)
        if self._relay.max_attempts < 1:
            raise ConfigurationError("OpenAIEngine needs max_attempts >= 1")
        self._pool = EndpointPool(
            [
                Endpoint(
                    config,
                    CircuitBreaker(
                        failure_threshold=self._relay.breaker_failures,
                        cooldown_s=self._relay.breaker_cooldown_s,
                    ),
                    max_concurrency=max_concurrency,
                )
                for config in configs
            ]
        )
        policy = load or LoadPolicy()
        self._capacity = CapacityTracker(self._pool.endpoints, max_concurrency=max_concurrency, policy=policy)
        self._poller = LoadPoller(
            endpoints=self._pool.endpoints,
            model=remote_model,
            policy=policy,
            timeout_s=timeout_s,
            on_update=self._capacity.refresh,
        )
        self._remote_model = remote_model
        self._max_concurrency = max_concurrency
        self._default_max_tokens = default_max_tokens
        self._stream_timeout = aiohttp.ClientTimeout(sock_connect=self._relay.connect_timeout_s)
        servers = ", ".join(endpoint.safe_url for endpoint in self._pool.endpoints)
        self._info = ModelInfo(
            name=served_name,
            engine="openai",
            description=f"relayed to {servers}",
            context_length=context_length,
        )
        self._session: aiohttp.ClientSession | None = None
        interval = self._relay.read_interval_s
        self._ticker = ReadTicker(interval) if interval > 0 else None

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def read_interval_s(self) -> float:
        """How often a stream is read after its first text (0: as it arrives): the engine coalesces."""
        return self._relay.read_interval_s

    @property
    def capacity(self) -> int:
        """The most generations this engine ever runs at once (the queue's prefetch)."""
        return self._max_concurrency

    @property
    def available_capacity(self) -> int:
        """How many it should run now, from the servers' health and load (`openai_capacity.py`)."""
        return self._capacity.available

    async def capacity_changed(self) -> None:
        """Return when `available_capacity` next changes."""
        await self._capacity.changed()

    def stats(self) -> EngineStats:
        """The servers' own figures where they publish them (theirs include other clients' requests)."""
        return total_stats(self._pool.endpoints)

    def endpoint_stats(self) -> list[EndpointStats]:
        return [endpoint_stats(endpoint) for endpoint in self._pool.endpoints]

    @property
    def is_ready(self) -> bool:
        return self._session is not None and self._pool.is_ready

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        return self._pool.endpoints

    async def start(self) -> None:
        """Open the connection pool and probe the servers; servers that are down do not fail start."""
        if self._session is not None:
            return
        limit = self._max_concurrency + len(self._pool.endpoints)
        connector = aiohttp.TCPConnector(limit=limit, keepalive_timeout=_KEEPALIVE_S)
        self._session = aiohttp.ClientSession(
            connector=connector, headers={"Content-Type": "application/json"}
        )
        await self.check_health()
        self._poller.start(self._session)

    async def check_health(self) -> bool:
        """Probe every server now (`/models` lists `remote_model`) and read its load; True when ready."""
        session = self._session
        if session is None:
            return False
        await self._poller.poll_once(session)
        return self.is_ready

    async def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """An estimate: the remote server's tokenizer is not here, and asking it would cost a request."""
        return estimate_tokens(messages)

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationEvent, None]:
        session = self._session
        if session is None:
            raise RuntimeError("OpenAIEngine.generate called before start()")
        body = orjson.dumps(to_chat_completion_request(request, self._remote_model, self._default_max_tokens))
        loop = asyncio.get_running_loop()
        total = self._relay.total_timeout_s
        deadline = loop.time() + total if total is not None else None
        tried: list[Endpoint] = []
        while True:
            endpoint = self._pool.acquire(tried)
            if endpoint is None:
                raise UpstreamFailed(NO_ENDPOINT)
            tried.append(endpoint)
            # One upstream request, inlined rather than a generator of its own: each generator
            # layer costs a resumption per token. Its verdict goes to the endpoint's breaker
            # however it ends (`RequestVerdict`).
            verdict = RequestVerdict(endpoint)
            try:
                first_token_at = _earliest(loop.time() + self._relay.first_token_timeout_s, deadline)
                response = await self._open_stream(
                    session, endpoint, body, request.request_id, first_token_at
                )
                state = StreamState(wants_logprobs=request.params.logprobs)
                reading = self._read(response, endpoint, state, first_token_at, deadline)
                async with aclosing(reading) as deltas:
                    async for delta in deltas:
                        verdict.has_text = True
                        yield delta
                if state.finish_reason is None and not state.is_done:
                    raise UpstreamFailed("the remote model server ended the stream before finishing")
                verdict.is_ok = True
                usage = state.usage or estimate_usage(request, state.completion_chars)
                yield GenerationEnd(finish_reason=state.finish_reason or "stop", usage=usage)
                return
            except InvalidRequest:
                verdict.is_ok = True  # the request's fault, not the server's
                raise
            except UpstreamFailed as failure:
                if not isinstance(failure, _ServerBusy):  # busy is worth another server, not a failure
                    verdict.is_ok = False
                    self._mark_unhealthy(endpoint, failure.message)
                is_last_try = len(tried) >= self._relay.max_attempts or not self._pool.has_untried(tried)
                if verdict.has_text or is_last_try:
                    raise
                log.warning(
                    "openai_engine_trying_another_server",
                    extra={"base_url": endpoint.safe_url, "reason": failure.message},
                )
            finally:
                verdict.settle()

    async def aclose(self) -> None:
        await self._poller.aclose()
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _read(
        self,
        response: aiohttp.ClientResponse,
        endpoint: Endpoint,
        state: StreamState,
        first_token_at: float,
        deadline: float | None,
    ) -> AsyncGenerator[TextDelta, None]:
        """The stream's deltas; waits are bounded until the first text, between texts, and overall."""
        loop = asyncio.get_running_loop()
        inter_token_s = self._relay.inter_token_timeout_s
        wait_until = first_token_at
        decoder = SseDecoder()
        is_reusable = False
        guard = ReadDeadline()
        ticker = self._ticker
        tick: int | None = None
        if ticker is not None:
            resume_upstream_once_per_read(response.content)
        try:
            # The deadline holds only while reading, never while the consumer holds a text (at `yield`).
            with guard.reading():
                while not state.is_done:
                    guard.set(wait_until)
                    data = await response.content.readany()
                    guard.done()
                    # At the end of the body, a newline flushes a last line that lacked one.
                    payloads = decoder.feed(data or b"\n")
                    if not state.wants_logprobs:
                        # What one read brought (a paced slice: several tokens) goes on as one delta.
                        delta = merged_delta(state, payloads, endpoint.api_key)
                        if delta is not None:
                            wait_until = _earliest(loop.time() + inter_token_s, deadline)
                            yield delta
                    else:  # a delta per token, each with its own logprobs
                        for payload in payloads:
                            text = apply_payload(state, payload, endpoint.api_key)
                            if text:
                                state.completion_chars += len(text)
                                wait_until = _earliest(loop.time() + inter_token_s, deadline)
                                yield TextDelta(text, state.logprobs)
                    if not data:
                        break
                    if ticker is not None and state.completion_chars and not state.is_done:
                        # Texts after the first would wait for the worker's next flush: read them then.
                        now = loop.time()
                        tick = ticker.first_tick(now) if tick is None else ticker.following(tick, now)
                        connection = response.connection
                        if connection is not None and connection.transport is not None:
                            # The next read waits for the tick; the deadline counts that wait as before.
                            ticker.pause(connection.transport, tick)
            is_reusable = await drain(response) if state.is_done else True
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamFailed(describe_failure(exc)) from exc
        finally:
            if is_reusable:
                response.release()
            else:
                # Closing the socket is how the remote learns to stop generating.
                response.close()

    async def _open_stream(
        self,
        session: aiohttp.ClientSession,
        endpoint: Endpoint,
        body: bytes,
        request_id: str,
        first_token_at: float,
    ) -> aiohttp.ClientResponse:
        try:
            async with asyncio.timeout_at(first_token_at):
                response = await session.post(
                    endpoint.chat_url,
                    data=body,
                    headers={"X-Request-Id": request_id, **endpoint.headers},
                    timeout=self._stream_timeout,
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamFailed(describe_failure(exc)) from exc
        if response.status == 200:
            if not endpoint.is_healthy:
                endpoint.is_healthy = True
                self._capacity.refresh()
            return response
        try:
            detail = await response.content.read(_MAX_ERROR_BODY_BYTES)
        except (aiohttp.ClientError, TimeoutError):
            detail = b""  # the status alone says the request failed; the body only adds detail
        finally:
            response.close()
        raise self._status_error(endpoint, response.status, detail)

    def _status_error(self, endpoint: Endpoint, status: int, body: bytes) -> ZigguratError:
        detail = error_text(loads_or_none(body), endpoint.api_key)
        suffix = f": {detail}" if detail else ""
        if status in _CLIENT_FAULT_STATUSES:
            return InvalidRequest(f"the remote model server rejected the request (HTTP {status}){suffix}")
        log.warning("openai_engine_http_error", extra={"base_url": endpoint.safe_url, "status": status})
        message = f"the remote model server returned HTTP {status}{suffix}"
        return _ServerBusy(message) if status in _BUSY_STATUSES else UpstreamFailed(message)

    def _mark_unhealthy(self, endpoint: Endpoint, reason: str) -> None:
        if endpoint.is_healthy:
            endpoint.is_healthy = False
            self._capacity.refresh()
        log.warning("openai_engine_request_failed", extra={"base_url": endpoint.safe_url, "reason": reason})


def _earliest(moment: float, deadline: float | None) -> float:
    return moment if deadline is None else min(moment, deadline)
