"""Token choice for the running batch: greedy rows, seeded sampling, and the nucleus (top-p) cut."""

from __future__ import annotations

import pytest
import torch

from ziggurat.model.engines.transformers_batching import choose_tokens

pytestmark = pytest.mark.model

# Probabilities 0.5, 0.3, 0.15, 0.05 over four tokens.
LOGITS = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()


def _seeded(seed: int) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def _samples(top_p: float, count: int = 300) -> set[int]:
    generator = _seeded(0)
    logits = LOGITS.unsqueeze(0)
    return {choose_tokens(logits, [1.0], [top_p], [generator])[0] for _ in range(count)}


def test_temperature_zero_rows_take_the_argmax_and_others_sample() -> None:
    logits = torch.stack([LOGITS, LOGITS.flip(0)])

    chosen = choose_tokens(logits, [0.0, 0.0], [1.0, 1.0], [None, None])

    assert chosen == [0, 3]


def test_top_p_keeps_the_smallest_set_reaching_the_mass() -> None:
    assert _samples(top_p=1.0) == {0, 1, 2, 3}
    assert _samples(top_p=0.7) == {0, 1}
    assert _samples(top_p=0.45) == {0}
    assert _samples(top_p=0.01) == {0}


def test_the_same_seed_draws_the_same_tokens() -> None:
    logits = LOGITS.unsqueeze(0)

    def draw(seed: int) -> list[int]:
        generator = _seeded(seed)
        return [choose_tokens(logits, [1.0], [1.0], [generator])[0] for _ in range(50)]

    assert draw(3) == draw(3)
    assert draw(3) != draw(4)
