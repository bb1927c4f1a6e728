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

It deliberately does not retry, fall back or break circuits (the service layer does),
and does not relay tool calls, logprobs, reasoning content or `n > 1`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import aiohttp
import orjson
from yarl import URL

from ziggurat.errors import ConfigurationError, InvalidRequest, UpstreamFailed, ZigguratError
from ziggurat.model.engine import (
    ChatMessage,
    FinishReason,
    GenerationEnd,
    GenerationEvent,
    GenerationRequest,
    ModelInfo,
    TextDelta,
    Usage,
    estimate_tokens,
)

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Sequence

log = logging.getLogger(__name__)

# Below the 5 s idle timeout of uvicorn (vLLM, SGLang): reusing a socket the server is
# closing fails a POST, which aiohttp (rightly) never retries.
_KEEPALIVE_S: Final = 4.0
_MAX_LINE_BYTES: Final = 1 << 20
# Servers end the body right after `[DONE]`; one that lingers is not worth waiting for.
_DRAIN_S: Final = 1.0
_MAX_ERROR_BODY_BYTES: Final = 1 << 16
_MAX_MESSAGE_CHARS: Final = 500
_CHARS_PER_TOKEN: Final = 4
_LENGTH_REASONS: Final = frozenset({"length", "max_tokens"})
# Statuses that mean the request itself was bad (vLLM answers 400, TGI 422): the
# client can fix them, and they say nothing about the server's health.
_CLIENT_FAULT_STATUSES: Final = frozenset({400, 413, 422})
_BUSY_STATUSES: Final = frozenset({408, 429})


class _SseDecoder:
    """Splits an SSE byte stream into the payloads of its `data:` lines.

    OpenAI-compatible servers send one JSON object per `data:` line, so multi-line `data:`
    fields (legal SSE, never sent) are not joined. Comments (`: ping`), other fields and
    blank lines are skipped. A line split across reads, even inside a multi-byte
    character, waits in `_pending` until its end arrives, so JSON is decoded whole.
    """

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> list[bytes]:
        if self._pending:
            data = self._pending + data
        lines = data.splitlines()
        self._pending = b"" if data.endswith((b"\n", b"\r")) or not lines else lines.pop()
        if len(self._pending) > _MAX_LINE_BYTES:
            raise UpstreamFailed("the remote model server sent an oversized stream line")
        payloads = []
        for line in lines:
            if line.startswith(b"data:"):
                payloads.append(line[6:] if line.startswith(b"data: ") else line[5:])
        return payloads


@dataclass(slots=True)
class _StreamState:
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    completion_chars: int = 0
    is_done: bool = False


class OpenAIEngine:
    """Relays each generation to `{base_url}/chat/completions` with `stream=true`.

    `capacity` is `max_concurrency`; the pool holds one more connection so a health probe
    never queues behind busy streams. `timeout_s` bounds connecting and any silence in a
    stream (time to first byte included), never a whole generation. `is_ready` turns False
    when a probe or request shows the server down or misconfigured (unreachable, 5xx, 401,
    404, model not listed) and True after a successful request or `check_health()`:
    `generate` always tries the server, so each request is itself a re-check.
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        remote_model: str,
        served_name: str,
        max_concurrency: int,
        timeout_s: float,
        context_length: int | None = None,
        default_max_tokens: int | None = None,
    ) -> None:
        base = URL(base_url)
        if base.scheme not in ("http", "https") or not base.host or max_concurrency < 1 or timeout_s <= 0:
            raise ConfigurationError(
                "OpenAIEngine needs an http(s) base_url, max_concurrency >= 1, timeout_s > 0"
            )
        self._chat_url = (base / "chat/completions").with_query(base.query)
        self._models_url = (base / "models").with_query(base.query)
        self._safe_base_url = str(base.with_user(None).with_query(None).with_fragment(None))
        self._api_key = api_key or None
        self._remote_model = remote_model
        self._max_concurrency = max_concurrency
        self._default_max_tokens = default_max_tokens
        self._stream_timeout = aiohttp.ClientTimeout(sock_connect=timeout_s, sock_read=timeout_s)
        self._probe_timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._info = ModelInfo(
            name=served_name,
            engine="openai",
            description=f"relayed to {self._safe_base_url}",
            context_length=context_length,
        )
        self._session: aiohttp.ClientSession | None = None
        self._is_ready = False

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def capacity(self) -> int:
        return self._max_concurrency

    @property
    def is_ready(self) -> bool:
        return self._is_ready

    async def start(self) -> None:
        """Open the connection pool and probe the server; a server that is down does not fail start."""
        if self._session is not None:
            return
        headers = {"Content-Type": "application/json"}
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key}"
        connector = aiohttp.TCPConnector(limit=self._max_concurrency + 1, keepalive_timeout=_KEEPALIVE_S)
        self._session = aiohttp.ClientSession(connector=connector, headers=headers)
        await self.check_health()

    async def check_health(self) -> bool:
        """GET `/models`: ready when the server answers and lists `remote_model`."""
        session = self._session
        if session is None:
            self._is_ready = False
            return False
        problem: str | None = None
        try:
            async with session.get(self._models_url, timeout=self._probe_timeout) as response:
                if response.status != 200:
                    problem = f"HTTP {response.status} (does base_url end in /v1?)"
                elif not _lists_model(await response.read(), self._remote_model):
                    problem = "model not listed by the server"
        except (aiohttp.ClientError, TimeoutError) as exc:
            problem = _describe_failure(exc)
        if problem is not None:
            context = {"base_url": self._safe_base_url, "model": self._remote_model, "reason": problem}
            log.warning("openai_engine_not_ready", extra=context)
        self._is_ready = problem is None
        return self._is_ready

    async def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """An estimate: the remote server's tokenizer is not here, and asking it would cost a request."""
        return estimate_tokens(messages)

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationEvent, None]:
        session = self._session
        if session is None:
            raise RuntimeError("OpenAIEngine.generate called before start()")
        body = orjson.dumps(to_chat_completion_request(request, self._remote_model, self._default_max_tokens))
        response = await self._open_stream(session, body, request.request_id)
        state = _StreamState()
        decoder = _SseDecoder()
        is_reusable = False
        try:
            while not state.is_done:
                data = await response.content.readany()
                # At the end of the body, a newline flushes a last line that lacked one.
                for payload in decoder.feed(data or b"\n"):
                    text = self._apply(state, payload)
                    if text:
                        state.completion_chars += len(text)
                        yield TextDelta(text)
                if not data:
                    break
            is_reusable = await _drain(response) if state.is_done else True
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._mark_unhealthy(exc)
            raise UpstreamFailed(_describe_failure(exc)) from exc
        finally:
            if is_reusable:
                response.release()
            else:
                # Closing the socket is how the remote learns to stop generating.
                response.close()
        if state.finish_reason is None and not state.is_done:
            raise UpstreamFailed("the remote model server ended the stream before finishing")
        usage = state.usage or _estimate_usage(request, state.completion_chars)
        yield GenerationEnd(finish_reason=state.finish_reason or "stop", usage=usage)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        self._is_ready = False
        if session is not None:
            await session.close()

    async def _open_stream(
        self, session: aiohttp.ClientSession, body: bytes, request_id: str
    ) -> aiohttp.ClientResponse:
        try:
            response = await session.post(
                self._chat_url,
                data=body,
                headers={"X-Request-Id": request_id},
                timeout=self._stream_timeout,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._mark_unhealthy(exc)
            raise UpstreamFailed(_describe_failure(exc)) from exc
        if response.status == 200:
            self._is_ready = True
            return response
        try:
            body = await response.content.read(_MAX_ERROR_BODY_BYTES)
        except (aiohttp.ClientError, TimeoutError):
            body = b""  # the status alone says the request failed; the body only adds detail
        finally:
            response.close()
        raise self._status_error(response.status, body)

    def _status_error(self, status: int, body: bytes) -> ZigguratError:
        detail = _error_text(_loads_or_none(body), self._api_key)
        suffix = f": {detail}" if detail else ""
        if status in _CLIENT_FAULT_STATUSES:
            return InvalidRequest(f"the remote model server rejected the request (HTTP {status}){suffix}")
        if status not in _BUSY_STATUSES:
            self._is_ready = False
        log.warning("openai_engine_http_error", extra={"base_url": self._safe_base_url, "status": status})
        return UpstreamFailed(f"the remote model server returned HTTP {status}{suffix}")

    def _apply(self, state: _StreamState, payload: bytes) -> str | None:
        """Fold one `data:` payload into `state`; return its text delta, if any."""
        if state.is_done:
            return None
        if payload == b"[DONE]":
            state.is_done = True
            return None
        try:
            chunk: object = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise UpstreamFailed("the remote model server sent malformed JSON") from exc
        if not isinstance(chunk, dict):
            raise UpstreamFailed("the remote model server sent a malformed stream")
        if chunk.get("error") is not None or chunk.get("object") == "error":
            detail = _error_text(chunk, self._api_key) or "no details"
            raise UpstreamFailed(f"the remote model server failed mid-stream: {detail}")
        usage = _parse_usage(chunk.get("usage"))
        if usage is not None:
            state.usage = usage
        choices = chunk.get("choices")
        if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
            return None
        choice = choices[0]
        reason = choice.get("finish_reason")
        if isinstance(reason, str):
            # Ours has no content_filter or tool_calls: anything but a length cut is a stop.
            state.finish_reason = "length" if reason in _LENGTH_REASONS else "stop"
        delta = choice.get("delta")
        text = delta.get("content") if isinstance(delta, dict) else None
        return text if isinstance(text, str) else None

    def _mark_unhealthy(self, exc: BaseException) -> None:
        self._is_ready = False
        reason = _describe_failure(exc)
        log.warning("openai_engine_request_failed", extra={"base_url": self._safe_base_url, "reason": reason})


def to_chat_completion_request(
    request: GenerationRequest, remote_model: str, default_max_tokens: int | None
) -> dict[str, object]:
    """The OpenAI `/chat/completions` body for `request`, always streamed with usage."""
    params = request.params
    messages = [{"role": message.role, "content": message.content} for message in request.messages]
    body: dict[str, object] = {
        "model": remote_model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if request.continuation:
        # Resume an answer another worker started: vLLM and SGLang continue the final assistant message.
        messages.append({"role": "assistant", "content": request.continuation})
        body["continue_final_message"] = True
        body["add_generation_prompt"] = False
    # Unset sampling fields stay unset, so the remote server applies the model's own defaults.
    if params.temperature is not None:
        body["temperature"] = params.temperature
    if params.top_p is not None:
        body["top_p"] = params.top_p
    max_tokens = params.max_tokens if params.max_tokens is not None else default_max_tokens
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if params.stop:
        body["stop"] = list(params.stop)
    if params.seed is not None:
        body["seed"] = params.seed
    return body


def _loads_or_none(data: bytes) -> object:
    """Parsed JSON, or None for a body that is not JSON (a proxy's HTML page, a cut-off read)."""
    try:
        parsed: object = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return parsed


def _parse_usage(value: object) -> Usage | None:
    if not isinstance(value, dict):
        return None
    prompt, completion = value.get("prompt_tokens"), value.get("completion_tokens")
    if isinstance(prompt, int) and isinstance(completion, int):
        return Usage(prompt_tokens=prompt, completion_tokens=completion)
    return None


def _estimate_usage(request: GenerationRequest, completion_chars: int) -> Usage:
    """About four characters per token (English-biased, chat template not counted).

    Only for servers that ignore `include_usage`, so that limits and accounting still see a cost.
    """
    prompt_chars = sum(len(message.content) for message in request.messages)
    return Usage(
        prompt_tokens=-(-prompt_chars // _CHARS_PER_TOKEN),
        completion_tokens=-(-completion_chars // _CHARS_PER_TOKEN),
    )


def _error_text(body: object, secret: str | None) -> str | None:
    """The message of an error body (OpenAI, vLLM, TGI, FastAPI shapes), safe to show."""
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    if isinstance(error, dict):
        message = error.get("message")
    elif isinstance(error, str):
        message = error
    else:
        message = body.get("message") if body.get("object") == "error" else body.get("detail")
    if not isinstance(message, str) or not message:
        return None
    if secret:
        # Some servers echo the key they rejected.
        message = message.replace(secret, "***")
    return message[:_MAX_MESSAGE_CHARS]


async def _drain(response: aiohttp.ClientResponse) -> bool:
    """After `[DONE]`, wait briefly for the end of the body so the connection can be reused."""
    try:
        async with asyncio.timeout(_DRAIN_S):
            while await response.content.readany():
                pass
    except (aiohttp.ClientError, TimeoutError):
        # The answer is complete; this connection is just not worth keeping.
        return False
    return True


def _lists_model(body: bytes, model: str) -> bool:
    """Whether a `/models` listing names `model` (Ollama lists `name:latest` for `name`)."""
    listing = _loads_or_none(body)
    entries = listing.get("data") if isinstance(listing, dict) else None
    names = {e.get("id") for e in entries if isinstance(e, dict)} if isinstance(entries, list) else set()
    return model in names or f"{model}:latest" in names


def _describe_failure(exc: BaseException) -> str:
    """A client-safe reason for a transport failure: no host names, no credentials."""
    if isinstance(exc, TimeoutError):
        return "the remote model server timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "the remote model server is unreachable"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return "the remote model server dropped the connection"
    return "the request to the remote model server failed"
