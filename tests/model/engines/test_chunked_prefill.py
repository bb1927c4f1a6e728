"""Chunked prefill: a long prompt never stalls the running batch for more than one chunk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.model.engines.runner_helpers import LoopThread, Recorder, hf_greedy, load_tiny, plan

pytestmark = pytest.mark.model

CHUNK = 8
LONG_PROMPT = 96


def test_decoding_continues_while_a_long_prompt_is_prefilled(tiny_llama_path: Path) -> None:
    model: Any = load_tiny(tiny_llama_path)
    vocab = model.config.vocab_size
    long_prompt = torch.randint(5, vocab, (LONG_PROMPT,), generator=torch.Generator().manual_seed(5)).tolist()
    recorder = Recorder()
    with LoopThread(plan(model, chunk=CHUNK, context=160)) as loop:
        running = recorder.sequence("running", [7, 8, 9], 60)
        loop.submit(running)
        while len(running.output_ids) < 2:
            pass
        before = len(running.output_ids)
        long = recorder.sequence("long", long_prompt, 3)
        loop.submit(long)
        recorder.wait("running", "long")
    # One prefill chunk per round, one decode step per round: the running sequence keeps getting
    # a token each round while the long prompt's 12 chunks go through.
    during = recorder.tokens_before("running", ("long", "token")) - before
    assert during >= LONG_PROMPT // CHUNK - 2
    assert long.output_ids == hf_greedy(model, long_prompt, 3)
