"""The lean Llama runner against the model's own forward: same greedy tokens on CPU float32."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from tests.model.engines.runner_helpers import LoopThread, Recorder, hf_greedy, load_tiny, plan
from ziggurat.model.engines.transformers_runner import PrefillChunk, batch_bucket, length_bucket, refusal

pytestmark = pytest.mark.model

NEW_TOKENS = 12


@pytest.fixture(scope="module")
def model(tiny_llama_path: Path) -> Any:
    return load_tiny(tiny_llama_path)


def _prompt(seed: int, length: int, vocab: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(5, vocab, (length,), generator=generator).tolist()


def test_prefill_and_decode_give_the_hf_greedy_tokens_from_any_slot(model: Any) -> None:
    batch_plan = plan(model)
    runner = batch_plan.batcher._runner  # type: ignore[attr-defined]
    prompt = _prompt(0, 21, model.config.vocab_size)
    expected = hf_greedy(model, prompt, NEW_TOKENS)
    for slot in (0, 3):
        with torch.inference_mode():
            logits = runner.prefill([PrefillChunk(slot, 0, prompt, True)])
            tokens = [int(logits.argmax(-1)[0])]
            for step in range(NEW_TOKENS - 1):
                logits = runner.decode([slot], [len(prompt) + step], [tokens[-1]])
                tokens.append(int(logits.argmax(-1)[0]))
        assert tokens == expected


def test_concurrent_sequences_with_chunked_prefill_match_each_alone(model: Any) -> None:
    vocab = model.config.vocab_size
    prompts = {f"s{index}": _prompt(index, length, vocab) for index, length in enumerate((5, 40, 17, 9))}
    recorder = Recorder()
    with LoopThread(plan(model, chunk=8)) as loop:
        sequences = {name: recorder.sequence(name, prompt, NEW_TOKENS) for name, prompt in prompts.items()}
        for sequence in sequences.values():
            loop.submit(sequence)
        recorder.wait(*prompts)
        assert loop.max_batch_observed >= 2
    for name, prompt in prompts.items():
        assert sequences[name].output_ids == hf_greedy(model, prompt, NEW_TOKENS), name
        assert recorder.ended[name].finish_reason == "length"


def test_a_mid_batch_arrival_starts_before_the_batch_finishes_and_a_cancel_frees_its_slot(model: Any) -> None:
    vocab = model.config.vocab_size
    recorder = Recorder()
    with LoopThread(plan(model, slots=2)) as loop:
        long = recorder.sequence("long", _prompt(1, 10, vocab), 100)
        cancelled = recorder.sequence("cancelled", _prompt(2, 10, vocab), 100)
        loop.submit(long)
        loop.submit(cancelled)
        while len(long.output_ids) < 3:
            pass
        late = recorder.sequence("late", _prompt(3, 10, vocab), 4)
        loop.submit(late)  # both slots are held: it waits for one
        loop.cancel(cancelled)
        recorder.wait("late")
        assert len(long.output_ids) < 100  # the late one ran while the first was still decoding
        assert "cancelled" not in recorder.ended
        recorder.wait("long")
    assert late.output_ids == hf_greedy(model, late.prompt_ids, 4)


def test_other_architectures_are_refused_and_use_the_hf_path() -> None:
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50))
    assert refusal(gpt2, 64) is not None
    assert plan(gpt2).path == "hf"


def test_buckets_round_up_and_stay_within_limits() -> None:
    assert [batch_bucket(rows) for rows in (1, 3, 64, 65)] == [1, 4, 64, 128]
    assert [length_bucket(length, 1000) for length in (1, 64, 65, 999)] == [64, 64, 128, 1000]
