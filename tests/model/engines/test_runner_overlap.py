"""The decode loop's overlap (next step launched before the host reads this one's tokens), on CPU.

On CUDA the overlap is on by default; here the same bookkeeping runs with the
flag forced on, so a row that ends on an end token, a stop token or a stop
string is found one step after the runner already computed its next token: that
extra token must never be emitted or counted, and the outputs must equal HF's
greedy tokens and the serial loop's.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.model.engines.runner_helpers import Recorder, hf_greedy, load_tiny, plan
from ziggurat.model.engines.transformers_decode import DecodeLoop, SequenceState
from ziggurat.model.engines.transformers_runner import PrefillChunk
from ziggurat.model.engines.transformers_runner_batch import SlotBatcher
from ziggurat.model.engines.transformers_sampling import SamplingSettings
from ziggurat.model.engines.transformers_text import OutputText

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def model(tiny_llama_path: Path) -> Any:
    return load_tiny(tiny_llama_path)


def _prompt(seed: int, length: int, vocab: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(5, vocab, (length,), generator=generator).tolist()


class OverlapLoop:
    """A decode loop over a `SlotBatcher` with overlap forced on, counting chained steps."""

    def __init__(self, model: Any, *, overlap: bool = True, eos: frozenset[int] = frozenset()) -> None:
        batcher = plan(model, slots=4).batcher
        assert isinstance(batcher, SlotBatcher)
        batcher.overlap = overlap
        self.batcher = batcher
        self.chained_steps = 0
        original = batcher.decode_step

        def counted(*, chained: bool = False) -> Any:
            self.chained_steps += chained
            return original(chained=chained)

        batcher.decode_step = counted  # type: ignore[method-assign]
        self.loop = DecodeLoop(batcher=batcher, eos_token_ids=eos)
        self._thread = threading.Thread(target=self.loop.run, daemon=True)

    def __enter__(self) -> OverlapLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.stop()
        self._thread.join()


def _with_stops(sequence: SequenceState, stop_ids: frozenset[int], stop_text: str | None) -> SequenceState:
    stops = (stop_text,) if stop_text else ()
    return replace(
        sequence,
        stop_token_ids=stop_ids,
        text=OutputText(lambda ids: "".join(f"<{token}>" for token in ids), stops),
    )


def test_overlapped_greedy_rows_match_hf_and_count_every_token_once(model: Any) -> None:
    vocab = model.config.vocab_size
    lengths = {"a": 12, "b": 7, "c": 1, "d": 2}
    prompts = {name: _prompt(index, 9 + 4 * index, vocab) for index, name in enumerate(lengths)}
    recorder = Recorder()
    with OverlapLoop(model) as harness:
        sequences = {name: recorder.sequence(name, prompts[name], count) for name, count in lengths.items()}
        for sequence in sequences.values():
            harness.loop.submit(sequence)
        recorder.wait(*lengths)
        assert harness.chained_steps > 0  # the overlap really ran
        assert harness.loop.generated_tokens == sum(lengths.values())
        assert harness.batcher.room == 4  # every slot freed
    for name, count in lengths.items():
        assert sequences[name].output_ids == hf_greedy(model, prompts[name], count), name
        assert recorder.ended[name].usage.completion_tokens == count
        assert recorder.ended[name].finish_reason == "length"
        assert recorder.tokens_before(name, (name, "end")) == count


@pytest.mark.parametrize("how", ["eos", "stop_token", "stop_string"])
def test_a_row_that_ends_early_is_found_one_step_late_and_its_extra_token_is_discarded(
    model: Any, how: str
) -> None:
    vocab = model.config.vocab_size
    prompt = _prompt(11, 13, vocab)
    expected = hf_greedy(model, prompt, 16)
    # The run ends on the first token (from the 4th on) that it has not produced before.
    cut = next(index for index in range(3, 16) if expected[index] not in expected[:index])
    end_token = expected[cut]
    recorder = Recorder()
    eos = frozenset({end_token}) if how == "eos" else frozenset()
    with OverlapLoop(model, eos=eos) as harness:
        sequence = recorder.sequence("s", prompt, 16)
        if how == "stop_token":
            sequence = _with_stops(sequence, frozenset({end_token}), None)
        elif how == "stop_string":
            sequence = _with_stops(sequence, frozenset(), f"<{end_token}>")
        other = recorder.sequence("other", _prompt(12, 8, vocab), 16)
        harness.loop.submit(sequence)
        harness.loop.submit(other)
        recorder.wait("s", "other")
        assert harness.chained_steps > 0
        # Exactly the tokens up to the end one; the token computed after it never surfaced.
        assert sequence.output_ids == expected[: cut + 1]
        assert recorder.ended["s"].finish_reason == "stop"
        assert recorder.ended["s"].usage.completion_tokens == cut + 1
        assert harness.loop.generated_tokens == cut + 1 + 16
        assert other.output_ids == hf_greedy(model, other.prompt_ids, 16)
        assert harness.batcher.room == 4


def test_overlap_and_serial_loops_give_the_same_tokens_with_a_sampled_row_and_a_cancel(model: Any) -> None:
    vocab = model.config.vocab_size
    outputs: dict[bool, dict[str, list[int]]] = {}
    for overlap in (False, True):
        recorder = Recorder()
        with OverlapLoop(model, overlap=overlap) as harness:
            greedy = recorder.sequence("greedy", _prompt(21, 10, vocab), 20)
            sampled = replace(
                recorder.sequence("sampled", _prompt(22, 10, vocab), 6),
                sampling=SamplingSettings(temperature=0.8, seed=5),
            )
            doomed = recorder.sequence("doomed", _prompt(23, 10, vocab), 200)
            for sequence in (greedy, sampled, doomed):
                harness.loop.submit(sequence)
            while len(doomed.output_ids) < 12:
                pass
            harness.loop.cancel(doomed)
            recorder.wait("greedy", "sampled")
            assert "doomed" not in recorder.ended
            assert len(doomed.output_ids) < 200
            assert harness.batcher.room == 4
            if overlap:
                assert harness.chained_steps > 0
        outputs[overlap] = {"greedy": greedy.output_ids, "sampled": sampled.output_ids}
        assert greedy.output_ids == hf_greedy(model, greedy.prompt_ids, 20)
    assert outputs[True] == outputs[False]


def test_runner_steps_on_device_tokens_like_host_tokens(model: Any) -> None:
    runner = plan(model).batcher._runner  # type: ignore[attr-defined]
    prompt = _prompt(31, 15, model.config.vocab_size)
    expected = hf_greedy(model, prompt, 8)
    with torch.inference_mode():
        for slots in ([0], [2]):
            logits = runner.prefill([PrefillChunk(slots[0], 0, prompt, True)])
            first = int(logits.argmax(-1)[0])
            logits = runner.decode(slots, [len(prompt)], [first])
            tokens = [first]
            for step in range(1, 7):
                staged = runner.feed_greedy(logits)
                logits = runner.decode(slots, [len(prompt) + step], None)
                tokens += staged.tokens()
            tokens += runner.feed_greedy(logits).tokens()
            assert tokens == expected
