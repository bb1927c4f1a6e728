"""The OpenAI streaming wire format, as the remote engine reads and writes it.

Request bodies, the SSE decoder and the folding of each `data:` payload into a
`StreamState`, usage parsing and estimates, and client-safe error texts. No
I/O policy here (endpoints, retries, timeouts): see `openai.py`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Final

import aiohttp
import orjson

from ziggurat.errors import UpstreamFailed
from ziggurat.model.engine import FinishReason, GenerationRequest, TextDelta, TokenLogprob, Usage

_MAX_LINE_BYTES: Final = 1 << 20
# Servers end the body right after `[DONE]`; one that lingers is not worth waiting for.
_DRAIN_S: Final = 1.0
_MAX_MESSAGE_CHARS: Final = 500
_CHARS_PER_TOKEN: Final = 4
_LENGTH_REASONS: Final = frozenset({"length", "max_tokens"})


class SseDecoder:
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
        return [line[6:] if line[5:6] == b" " else line[5:] for line in lines if line[:5] == b"data:"]


@dataclass(slots=True)
class StreamState:
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    completion_chars: int = 0
    is_done: bool = False
    wants_logprobs: bool = False
    """The request asked for logprobs: only then is a chunk's `logprobs` read at all."""
    logprobs: tuple[TokenLogprob, ...] | None = None
    """The logprobs of the text `apply_payload` returned last (None when absent)."""


def apply_payload(state: StreamState, payload: bytes, secret: str | None) -> str | None:
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
    return _apply_chunk(state, chunk, secret)


def _apply_chunk(state: StreamState, chunk: object, secret: str | None) -> str | None:
    """`apply_payload` for a payload parsed already."""
    if not isinstance(chunk, dict):
        raise UpstreamFailed("the remote model server sent a malformed stream")
    if not state.wants_logprobs and chunk.get("usage") is None and chunk.get("error") is None:
        # The usual chunk, one per token: a text delta and nothing else to fold in.
        try:
            choice = chunk["choices"][0]
            text = choice["delta"]["content"]
        except (KeyError, IndexError, TypeError):
            pass
        else:
            if type(text) is str and choice.get("finish_reason") is None and chunk.get("object") != "error":
                return text
    if chunk.get("error") is not None or chunk.get("object") == "error":
        detail = error_text(chunk, secret) or "no details"
        raise UpstreamFailed(f"the remote model server failed mid-stream: {detail}")
    usage = parse_usage(chunk.get("usage"))
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
    if state.wants_logprobs:
        state.logprobs = parse_logprobs(choice.get("logprobs"))
    return text if isinstance(text, str) else None


def parse_logprobs(value: object) -> tuple[TokenLogprob, ...] | None:
    """A chunk's `choices[0].logprobs.content` as `TokenLogprob`s; None when missing or malformed.

    Servers send `-9999.0` (vLLM) or `-inf`-like values for impossible tokens: kept as given.
    """
    content = value.get("content") if isinstance(value, dict) else None
    if not isinstance(content, list):
        return None
    parsed: list[TokenLogprob] = []
    for item in content:
        entry = _token_logprob(item)
        if entry is None or not isinstance(item, dict):
            return None
        alternatives = item.get("top_logprobs")
        if isinstance(alternatives, list) and alternatives:
            top = (_token_logprob(alt) for alt in alternatives)
            entry = TokenLogprob(entry.token, entry.logprob, tuple((t.token, t.logprob) for t in top if t))
        parsed.append(entry)
    return tuple(parsed)


def _token_logprob(item: object) -> TokenLogprob | None:
    if not isinstance(item, dict):
        return None
    token, logprob = item.get("token"), item.get("logprob")
    if not isinstance(token, str) or not isinstance(logprob, int | float) or isinstance(logprob, bool):
        return None
    return TokenLogprob(token, float(logprob))


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
    _add_extra_sampling(body, request)
    return body


def _add_extra_sampling(body: dict[str, object], request: GenerationRequest) -> None:
    """The controls beyond OpenAI's core set: vLLM and SGLang read `top_k`, `repetition_penalty`
    and `stop_token_ids` at the top level of the body; each is sent only when set."""
    params = request.params
    if params.top_k:
        body["top_k"] = params.top_k
    if params.repetition_penalty is not None:
        body["repetition_penalty"] = params.repetition_penalty
    if params.frequency_penalty is not None:
        body["frequency_penalty"] = params.frequency_penalty
    if params.presence_penalty is not None:
        body["presence_penalty"] = params.presence_penalty
    if params.stop_token_ids:
        body["stop_token_ids"] = list(params.stop_token_ids)
    if params.logprobs:
        body["logprobs"] = True
        if params.top_logprobs:
            body["top_logprobs"] = params.top_logprobs


def loads_or_none(data: bytes) -> object:
    """Parsed JSON, or None for a body that is not JSON (a proxy's HTML page, a cut-off read)."""
    try:
        parsed: object = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return parsed


def parse_usage(value: object) -> Usage | None:
    if not isinstance(value, dict):
        return None
    prompt, completion = value.get("prompt_tokens"), value.get("completion_tokens")
    if isinstance(prompt, int) and isinstance(completion, int):
        return Usage(prompt_tokens=prompt, completion_tokens=completion)
    return None


def estimate_usage(request: GenerationRequest, completion_chars: int) -> Usage:
    """About four characters per token (English-biased, chat template not counted).

    Only for servers that ignore `include_usage`, so that limits and accounting still see a cost.
    """
    prompt_chars = sum(len(message.content) for message in request.messages)
    return Usage(
        prompt_tokens=-(-prompt_chars // _CHARS_PER_TOKEN),
        completion_tokens=-(-completion_chars // _CHARS_PER_TOKEN),
    )


def error_text(body: object, secret: str | None) -> str | None:
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


async def drain(response: aiohttp.ClientResponse) -> bool:
    """After `[DONE]`, wait briefly for the end of the body so the connection can be reused."""
    try:
        async with asyncio.timeout(_DRAIN_S):
            while await response.content.readany():
                pass
    except (aiohttp.ClientError, TimeoutError):
        # The answer is complete; this connection is just not worth keeping.
        return False
    return True


def lists_model(body: bytes, model: str) -> bool:
    """Whether a `/models` listing names `model` (Ollama lists `name:latest` for `name`)."""
    listing = loads_or_none(body)
    entries = listing.get("data") if isinstance(listing, dict) else None
    names = {e.get("id") for e in entries if isinstance(e, dict)} if isinstance(entries, list) else set()
    return model in names or f"{model}:latest" in names


def describe_failure(exc: BaseException) -> str:
    """A client-safe reason for a transport failure: no host names, no credentials."""
    if isinstance(exc, TimeoutError):
        return "the remote model server timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "the remote model server is unreachable"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return "the remote model server dropped the connection"
    return "the request to the remote model server failed"


def merged_delta(state: StreamState, payloads: list[bytes], secret: str | None) -> TextDelta | None:
    """The texts of one read's `data:` payloads as one delta that counts them; None when none has text."""
    chunks = _parsed_together(payloads) if not state.is_done else None
    if chunks is not None:
        folded = (_apply_chunk(state, chunk, secret) for chunk in chunks)
    else:  # the last read ([DONE] is not JSON), or a payload that is not JSON: one at a time
        folded = (apply_payload(state, payload, secret) for payload in payloads)
    texts = [text for text in folded if text]
    if not texts:
        return None
    text = "".join(texts)
    state.completion_chars += len(text)
    return TextDelta(text, None, len(texts))


def _parsed_together(payloads: list[bytes]) -> list[object] | None:
    """A read's payloads parsed in one call (as one JSON array), which saves orjson's per-call
    cost on every token; None when any of them is not one JSON object (then each is parsed alone,
    and the malformed one named as such)."""
    if len(payloads) < 2:
        return None if not payloads else _parsed_one(payloads[0])
    if not all(payload[:1] == b"{" and payload[-1:] == b"}" for payload in payloads):
        return None
    try:
        parsed: object = orjson.loads(b"[" + b",".join(payloads) + b"]")
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, list) and len(parsed) == len(payloads) else None


def _parsed_one(payload: bytes) -> list[object] | None:
    try:
        return [orjson.loads(payload)]
    except orjson.JSONDecodeError:
        return None
