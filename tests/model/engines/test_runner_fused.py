"""The runner's fused path: shared weights, the module path under hooks (LoRA), the prefill ramp."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.model.engines.runner_helpers import Recorder, hf_greedy, load_tiny, plan
from ziggurat.model.engines.transformers_runner import PrefillChunk
from ziggurat.model.engines.transformers_runner_batch import RAMP_FACTOR

pytestmark = pytest.mark.model


def _prompt(seed: int, length: int, vocab: int) -> list[int]:
    return torch.randint(5, vocab, (length,), generator=torch.Generator().manual_seed(seed)).tolist()


def test_fusing_shares_the_modules_weights_and_keeps_the_hf_forward(tiny_llama_path: Path) -> None:
    model: Any = load_tiny(tiny_llama_path)
    untouched: Any = load_tiny(tiny_llama_path)
    ids = torch.tensor([_prompt(1, 15, model.config.vocab_size)])
    plan(model)
    attention = model.model.layers[0].self_attn
    mlp = model.model.layers[1].mlp
    storage = attention.q_proj.weight.untyped_storage().data_ptr()
    # q, k and v (and gate, up) now live in one tensor each: no second copy of the weights.
    assert attention.k_proj.weight.untyped_storage().data_ptr() == storage
    assert attention.v_proj.weight.untyped_storage().data_ptr() == storage
    gate_storage = mlp.gate_proj.weight.untyped_storage().data_ptr()
    assert mlp.up_proj.weight.untyped_storage().data_ptr() == gate_storage
    with torch.inference_mode():
        assert torch.equal(model(input_ids=ids).logits, untouched(input_ids=ids).logits)


def test_a_hooked_module_is_honoured_by_prefill_and_decode(tiny_llama_path: Path) -> None:
    """LoRA adds its deltas in forward hooks: while any exists the runner must call the modules."""
    model: Any = load_tiny(tiny_llama_path)
    runner = plan(model).batcher._runner  # type: ignore[attr-defined]
    prompt = _prompt(2, 11, model.config.vocab_size)
    unhooked = hf_greedy(model, prompt, 6)

    def shift(module: Any, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        return output + 0.5 * torch.sign(output)

    handle = model.model.layers[0].self_attn.v_proj.register_forward_hook(shift)
    try:
        expected = hf_greedy(model, prompt, 6)
        assert expected != unhooked  # otherwise the test proves nothing
        with torch.inference_mode():
            logits = runner.prefill([PrefillChunk(0, 0, prompt, True)])
            tokens = [int(logits.argmax(-1)[0])]
            for step in range(5):
                logits = runner.decode([0], [len(prompt) + step], [tokens[-1]])
                tokens.append(int(logits.argmax(-1)[0]))
    finally:
        handle.remove()
    assert tokens == expected


def test_a_burst_of_prompts_is_prefilled_in_bigger_rounds_but_a_lone_long_one_in_chunks(
    tiny_llama_path: Path,
) -> None:
    model: Any = load_tiny(tiny_llama_path)
    chunk = 8
    batcher: Any = plan(model, slots=8, chunk=chunk).batcher
    recorder = Recorder()
    vocab = model.config.vocab_size
    burst = [recorder.sequence(f"b{index}", _prompt(index, chunk, vocab), 2) for index in range(8)]
    for sequence in burst:
        batcher.add(sequence)
    assert batcher.prefill_budget() == RAMP_FACTOR * chunk
    with torch.inference_mode():
        done, logits = batcher.prefill_step()
        assert done == burst  # all eight 8-token prompts in one round instead of eight
        tokens = [int(token) for token in logits.argmax(-1)]
        batcher.commit_prefill(done, tokens, [False] * len(done))
    for sequence, token in zip(burst, tokens, strict=True):
        assert token == hf_greedy(model, sequence.prompt_ids, 1)[0]
    batcher.clear()
    lone = recorder.sequence("long", _prompt(9, 5 * chunk, vocab), 2)
    batcher.add(lone)
    assert batcher.prefill_budget() == chunk


def test_the_triton_decode_path_is_cuda_bf16_only_and_can_be_switched_off(
    tiny_llama_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Triton layer never runs where its kernels cannot (CPU, float32): those steps keep the
    reference math that the greedy-equality tests check."""
    from ziggurat.model.engines import transformers_triton

    model: Any = load_tiny(tiny_llama_path)
    runner = plan(model).batcher._runner  # type: ignore[attr-defined]
    assert not runner.triton_decode
    assert not transformers_triton.available(torch.device("cpu"), torch.bfloat16)
    assert not transformers_triton.available(torch.device("cuda"), torch.float32)
    monkeypatch.setenv("ZIGGURAT_TRITON_DECODE", "0")
    assert not transformers_triton.available(torch.device("cuda"), torch.bfloat16)
    assert transformers_triton.triton_next_power_of_2(5) == 8
    assert transformers_triton.triton_next_power_of_2(16) == 16
