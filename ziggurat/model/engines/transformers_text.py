"""Text on both sides of the transformers engine: chat prompt in, clean UTF-8 deltas out.

In: messages become token ids through the tokenizer's own chat template, or,
when the model ships none (base models), through `FALLBACK_TEMPLATE`.

Out: tokens become text one step at a time. Byte-level and byte-fallback
tokenizers split one character (Chinese, emoji) over several tokens, so a
token may decode to half a character; `IncrementalDetokenizer` holds text back
while its tail is U+FFFD, so every delta is whole characters. `StopStrings`
holds back any tail that could still grow into a stop string, so a client never
sees the stop string, nor a piece of it that later turns out to be one.

This module touches the tokenizer only through the small `ChatTokenizer`
protocol and imports neither torch nor transformers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ziggurat.model.engine import ChatMessage

REPLACEMENT_CHAR = "\ufffd"

FALLBACK_TEMPLATE = "{role}: {content}\n\n"
"""Used for tokenizers without a chat template: each message as `Role: content`
followed by a blank line, then `Assistant:` to cue the answer. The tokenizer adds
its own special tokens (BOS) around it. `FALLBACK_STOP` ends the answer when a
base model starts writing the next user turn itself."""

FALLBACK_STOP = ("\nUser:",)


class ChatTokenizer(Protocol):
    """The part of a Hugging Face tokenizer this engine uses."""

    chat_template: str | None

    def apply_chat_template(self, conversation: list[dict[str, str]], **kwargs: Any) -> Any: ...

    def __call__(self, text: str, **kwargs: Any) -> Any: ...

    def decode(self, token_ids: list[int], **kwargs: Any) -> Any: ...


def has_chat_template(tokenizer: ChatTokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_fallback_prompt(messages: Sequence[ChatMessage]) -> str:
    turns = "".join(
        FALLBACK_TEMPLATE.format(role=message.role.capitalize(), content=message.content)
        for message in messages
    )
    return turns + "Assistant:"


def encode_chat(
    tokenizer: ChatTokenizer, messages: Sequence[ChatMessage], continuation: str = ""
) -> list[int]:
    """Token ids of the prompt, ending where the assistant's answer begins.

    `continuation` (the start of an answer another worker already sent) is
    appended after the generation prompt, so the model goes on from there.
    """
    if has_chat_template(tokenizer):
        conversation = [{"role": message.role, "content": message.content} for message in messages]
        text = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        # The template writes its own BOS and role markers; adding special tokens would double them.
        encoded = tokenizer(str(text) + continuation, add_special_tokens=False)
    else:
        encoded = tokenizer(render_fallback_prompt(messages) + continuation, add_special_tokens=True)
    return [int(token_id) for token_id in encoded["input_ids"]]


def make_decoder(tokenizer: ChatTokenizer) -> Callable[[list[int]], str]:
    def decode(token_ids: list[int]) -> str:
        # Clean-up would rewrite spaces differently depending on where a window starts.
        text = tokenizer.decode(token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return str(text)

    return decode


class IncrementalDetokenizer:
    """Turns a growing list of token ids into deltas of whole characters.

    Each step decodes a short window twice, with and without the newest tokens,
    and emits the difference once it no longer ends in U+FFFD. Decoding a window
    that starts one token early keeps tokenizers that drop a leading space on
    the first token (SentencePiece) from losing it.
    """

    __slots__ = ("_decode", "_prefix_offset", "_read_offset", "_token_ids")

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self._decode = decode
        self._token_ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0

    def push(self, token_id: int) -> str:
        """Add one token; return the text it completes (often empty while a character is split)."""
        self._token_ids.append(token_id)
        return self._read(is_final=False)

    def flush(self) -> str:
        """The text still held back, once no more tokens will come.

        A character the model left unfinished (generation stopped between its
        bytes) is dropped rather than shown as U+FFFD.
        """
        return self._read(is_final=True)

    def _read(self, *, is_final: bool) -> str:
        prefix_text = self._decode(self._token_ids[self._prefix_offset : self._read_offset])
        full_text = self._decode(self._token_ids[self._prefix_offset :])
        if full_text.endswith(REPLACEMENT_CHAR):
            if not is_final:
                return ""
            full_text = full_text.rstrip(REPLACEMENT_CHAR)
        if len(full_text) <= len(prefix_text):
            return ""
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._token_ids)
        return full_text[len(prefix_text) :]


class StopStrings:
    """Cuts the output at the first stop string and never shows any part of it.

    Text that could be the start of a stop string is held until the next text
    proves it is not (then it is released) or completes the stop string (then
    the stream ends before it).
    """

    __slots__ = ("_pending", "_stops")

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(stop for stop in stops if stop)
        self._pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Returns the text safe to show and whether a stop string was reached."""
        if not self._stops:
            return text, False
        self._pending += text
        positions = [index for stop in self._stops if (index := self._pending.find(stop)) >= 0]
        if positions:
            visible = self._pending[: min(positions)]
            self._pending = ""
            return visible, True
        held = self._held_length()
        visible = self._pending[: len(self._pending) - held]
        self._pending = self._pending[len(self._pending) - held :]
        return visible, False

    def flush(self) -> str:
        """The held text once the output has ended without completing a stop string."""
        text, self._pending = self._pending, ""
        return text

    def _held_length(self) -> int:
        longest = 0
        for stop in self._stops:
            for length in range(min(len(stop) - 1, len(self._pending)), longest, -1):
                if self._pending.endswith(stop[:length]):
                    longest = length
                    break
        return longest


class OutputText:
    """One sequence's output: detokenizing, then stop strings, in that order."""

    __slots__ = ("_detokenizer", "_stops")

    def __init__(self, decode: Callable[[list[int]], str], stops: Sequence[str]) -> None:
        self._detokenizer = IncrementalDetokenizer(decode)
        self._stops = StopStrings(stops)

    def push(self, token_id: int) -> tuple[str, bool]:
        """The visible text this token adds, and whether a stop string was reached."""
        return self._stops.feed(self._detokenizer.push(token_id))

    def finish(self) -> tuple[str, bool]:
        """Everything still held back once generation has ended for another reason."""
        text, is_stopped = self._stops.feed(self._detokenizer.flush())
        if is_stopped:
            return text, True
        return text + self._stops.flush(), False
