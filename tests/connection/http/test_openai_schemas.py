import orjson
import pytest
from pydantic import ValidationError

from ziggurat.connection.http.openai_schemas import ChatCompletionRequest, ChunkEncoder, to_generation_request
from ziggurat.errors import InvalidRequest
from ziggurat.model.engine import GenerationEnd, Usage


def parse_frame(frame: bytes) -> dict[str, object]:
    assert frame.startswith(b"data: ") and frame.endswith(b"\n\n")
    parsed: dict[str, object] = orjson.loads(frame[len(b"data: ") : -2])
    return parsed


def test_chunk_frames_are_valid_openai_chunks() -> None:
    encoder = ChunkEncoder(completion_id="chatcmpl-1", model='we"ird', created=7)
    role = parse_frame(encoder.role())
    assert role["choices"] == [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
    ]
    delta = parse_frame(encoder.delta('你好 "quoted" \n'))
    assert delta["id"] == "chatcmpl-1" and delta["model"] == 'we"ird' and delta["created"] == 7
    assert delta["object"] == "chat.completion.chunk"
    assert delta["choices"][0]["delta"] == {"content": '你好 "quoted" \n'}  # type: ignore[index]
    finish = parse_frame(encoder.finish("length"))
    assert finish["choices"][0]["finish_reason"] == "length"  # type: ignore[index]
    usage = parse_frame(encoder.usage(GenerationEnd("stop", Usage(3, 4))))
    assert usage["choices"] == []
    assert usage["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


def test_request_conversion_maps_roles_and_params() -> None:
    body = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [
                {"role": "developer", "content": "be brief"},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}],
                },
            ],
            "max_completion_tokens": 9,
            "max_tokens": 100,
            "temperature": 0,
            "stop": "END",
            "seed": 3,
        }
    )
    request = to_generation_request(body, request_id="r", model="m")
    assert [(m.role, m.content) for m in request.messages] == [("system", "be brief"), ("user", "hi there")]
    assert request.params.max_tokens == 9
    assert request.params.temperature == 0
    assert request.params.stop == ("END",)
    assert request.params.seed == 3


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "messages": []},
        {"model": "m"},
        {"model": "m", "messages": [{"role": "user", "content": ""}]},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 3},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": ["a", "b", "c", "d", "e"]},
        {"model": "m", "messages": [{"role": "wizard", "content": "x"}]},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2},
    ],
)
def test_invalid_bodies_are_rejected(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ChatCompletionRequest.model_validate(body)


def test_empty_stop_string_is_invalid() -> None:
    body = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": [""]}
    )
    with pytest.raises(InvalidRequest):
        to_generation_request(body, request_id="r", model="m")
