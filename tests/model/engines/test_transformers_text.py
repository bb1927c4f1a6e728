"""Incremental detokenizing and stop strings, on the tiny model's byte-level tokenizer and on plain text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from ziggurat.model.engine import ChatMessage
from ziggurat.model.engines.transformers_text import (
    REPLACEMENT_CHAR,
    IncrementalDetokenizer,
    OutputText,
    StopStrings,
    encode_chat,
    make_decoder,
    render_fallback_prompt,
)

MIXED = "你好！今天天气很好 😀👍 再见, hello 🎉"


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_path: Path) -> Any:
    return AutoTokenizer.from_pretrained(tiny_llama_path)


@pytest.mark.model
def test_detokenizer_holds_split_characters_until_whole(tokenizer: Any) -> None:
    token_ids = tokenizer(MIXED, add_special_tokens=False)["input_ids"]
    assert any(REPLACEMENT_CHAR in tokenizer.decode([token_id]) for token_id in token_ids), (
        "precondition: some characters span several tokens"
    )
    detokenizer = IncrementalDetokenizer(make_decoder(tokenizer))

    chunks = [detokenizer.push(token_id) for token_id in token_ids]
    chunks.append(detokenizer.flush())

    assert "".join(chunks) == MIXED
    assert all(REPLACEMENT_CHAR not in chunk for chunk in chunks)
    assert "" in chunks, "some pushes completed no character and must have returned nothing"


@pytest.mark.model
def test_detokenizer_flush_drops_a_character_the_model_left_unfinished(tokenizer: Any) -> None:
    token_ids = tokenizer("ok 😀", add_special_tokens=False)["input_ids"]
    assert REPLACEMENT_CHAR in tokenizer.decode(token_ids[:-1]), "precondition: the emoji spans tokens"
    detokenizer = IncrementalDetokenizer(make_decoder(tokenizer))

    shown = "".join(detokenizer.push(token_id) for token_id in token_ids[:-1])

    assert shown.rstrip() == "ok"
    assert REPLACEMENT_CHAR not in shown + detokenizer.flush()


def test_detokenizer_keeps_invalid_bytes_in_the_middle_as_replacement_characters() -> None:
    # What a byte-level decoder gives for: a lone continuation byte, then "x".
    decoded = {(1,): REPLACEMENT_CHAR, (1, 2): REPLACEMENT_CHAR + "x"}
    detokenizer = IncrementalDetokenizer(lambda token_ids: decoded.get(tuple(token_ids), ""))

    assert detokenizer.push(1) == ""
    assert detokenizer.push(2) == REPLACEMENT_CHAR + "x"
    assert detokenizer.flush() == ""


@pytest.mark.model
def test_detokenizer_skips_special_tokens(tokenizer: Any) -> None:
    detokenizer = IncrementalDetokenizer(make_decoder(tokenizer))
    token_ids = [*tokenizer("hi", add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]

    text = "".join(detokenizer.push(token_id) for token_id in token_ids) + detokenizer.flush()

    assert text == "hi"


@pytest.mark.model
def test_encode_chat_applies_the_chat_template_once(tokenizer: Any) -> None:
    token_ids = encode_chat(tokenizer, (ChatMessage(role="user", content="hi"),))

    assert tokenizer.decode(token_ids) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def _feed(stops: tuple[str, ...], pieces: list[str]) -> tuple[list[str], bool]:
    buffer = StopStrings(stops)
    shown: list[str] = []
    for piece in pieces:
        text, is_stopped = buffer.feed(piece)
        shown.append(text)
        if is_stopped:
            return shown, True
    shown.append(buffer.flush())
    return shown, False


@pytest.mark.parametrize(
    ("stops", "pieces", "expected_shown", "expected_stopped"),
    [
        ((), ["a", "b"], ["a", "b", ""], False),
        (("END",), ["hello ", "E", "N", "D", "more"], ["hello ", "", "", ""], True),
        (("END",), ["hello E", "Nx"], ["hello ", "ENx", ""], False),
        (("END",), ["xEN"], ["x", "EN"], False),
        (("a", "bc"), ["xb", "ca"], ["x", ""], True),
        (("bc", "cd"), ["bcd"], [""], True),
        (("。",), ["你好", "。再见"], ["你好", ""], True),
        (("\n\n",), ["one\n", "two\n", "\nthree"], ["one", "\ntwo", ""], True),
    ],
)
def test_stop_strings_are_cut_and_their_prefixes_held_back(
    stops: tuple[str, ...], pieces: list[str], expected_shown: list[str], expected_stopped: bool
) -> None:
    shown, is_stopped = _feed(stops, pieces)

    assert shown == expected_shown
    assert is_stopped is expected_stopped
    for stop in stops:
        assert stop not in "".join(shown)


def test_output_text_finish_can_complete_a_stop_string() -> None:
    # Token 2 ends mid-character, so its "c" is held by the detokenizer until the end.
    decoded = {(1,): "ab", (1, 2): "abc" + REPLACEMENT_CHAR}

    def decode(token_ids: list[int]) -> str:
        return decoded.get(tuple(token_ids), "")

    output = OutputText(decode, stops=("bc",))

    assert output.push(1) == ("a", False)
    assert output.push(2) == ("", False)
    assert output.finish() == ("", True)


def test_fallback_template_reads_as_a_transcript() -> None:
    messages = (ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="Hi"))

    assert render_fallback_prompt(messages) == "System: Be brief.\n\nUser: Hi\n\nAssistant:"
