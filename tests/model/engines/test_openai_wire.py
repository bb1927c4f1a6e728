"""The remote engine's wire decoding: SSE payloads of one read merged into one counted delta."""

from __future__ import annotations

import orjson
import pytest

from ziggurat.errors import UpstreamFailed
from ziggurat.model.engine import TextDelta, Usage
from ziggurat.model.engines.openai_wire import SseDecoder, StreamState, merged_delta


def _event(content: str | None = None, *, finish: str | None = None, usage: bool = False) -> bytes:
    chunk: dict[str, object] = {"id": "c", "object": "chat.completion.chunk", "model": "m"}
    if usage:
        chunk["choices"] = []
        chunk["usage"] = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    else:
        delta = {} if content is None else {"content": content}
        chunk["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def test_one_reads_tokens_become_one_delta_that_counts_them() -> None:
    state = StreamState()
    payloads = SseDecoder().feed(_event("Hel") + _event("lo") + _event(","))
    assert merged_delta(state, payloads, None) == TextDelta("Hello,", None, 3)
    assert state.completion_chars == 6 and not state.is_done


def test_the_last_read_folds_in_the_finish_the_usage_and_done() -> None:
    state = StreamState()
    data = _event(" end") + _event(finish="length") + _event(usage=True) + b"data: [DONE]\n\n"
    assert merged_delta(state, SseDecoder().feed(data), None) == TextDelta(" end", None, 1)
    assert state.is_done and state.finish_reason == "length"
    assert state.usage == Usage(prompt_tokens=3, completion_tokens=4)


def test_a_data_field_without_a_space_and_a_comment_are_read_as_sse_says() -> None:
    payloads = SseDecoder().feed(b': ping\n\ndata:{"choices":[{"delta":{"content":"x"}}]}\n\n')
    assert payloads == [b'{"choices":[{"delta":{"content":"x"}}]}']
    assert merged_delta(StreamState(), payloads, None) == TextDelta("x", None, 1)


def test_a_malformed_payload_among_good_ones_is_named_malformed_json() -> None:
    payloads = SseDecoder().feed(_event("a") + b"data: {not json}\n\n" + _event("b"))
    with pytest.raises(UpstreamFailed, match="malformed JSON"):
        merged_delta(StreamState(), payloads, None)


def test_two_broken_payloads_that_would_parse_as_an_array_together_are_still_refused() -> None:
    # Joined with a comma, these read as two objects; each alone is not JSON.
    payloads = [b'{"choices":[{"delta":{"content":"a"}}]},{"x":[1', b"2]}"]
    with pytest.raises(UpstreamFailed, match="malformed JSON"):
        merged_delta(StreamState(), payloads, None)


def test_an_error_mid_stream_ends_the_read_with_its_message_and_no_secret() -> None:
    error = b'data: {"object":"error","message":"bad key sk-secret"}\n\n'
    payloads = SseDecoder().feed(_event("a") + error)
    with pytest.raises(UpstreamFailed, match=r"failed mid-stream: bad key \*\*\*"):
        merged_delta(StreamState(), payloads, "sk-secret")
