"""Token choice on hand-made logits: greedy, top-k/top-p, seeds, penalties, logprobs, parameter checks.

These tests need no model: each row is a small dataclass with settings and a
token history, and the logits are written by hand so every assertion can be
worked out on paper.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
import torch

from ziggurat.errors import InvalidRequest
from ziggurat.model.engine import SamplingParams
from ziggurat.model.engines.transformers_sampling import (
    SamplingSettings,
    apply_penalties,
    check_sampling_params,
    choose_tokens,
    resolve_settings,
    uniforms,
)


@dataclass(slots=True)
class Row:
    sampling: SamplingSettings
    prompt_ids: list[int] = field(default_factory=list)
    output_ids: list[int] = field(default_factory=list)


def _tokens(logits: torch.Tensor, rows: Sequence[Row]) -> list[int]:
    return [choice.token for choice in choose_tokens(logits, rows)]


def _random_logits(rows: int, vocab: int = 50, seed: int = 0) -> torch.Tensor:
    return torch.randn((rows, vocab), generator=torch.Generator().manual_seed(seed)) * 3


def test_greedy_rows_take_the_argmax() -> None:
    logits = _random_logits(6)
    rows = [Row(SamplingSettings(temperature=0, seed=seed)) for seed in range(6)]

    assert _tokens(logits, rows) == logits.argmax(dim=-1).tolist()


def test_top_k_of_one_is_greedy_whatever_the_temperature_and_seed() -> None:
    logits = _random_logits(8)
    rows = [Row(SamplingSettings(temperature=1.7, top_k=1, seed=seed)) for seed in range(8)]

    for step in range(5):
        for row in rows:
            row.output_ids = [0] * step
        assert _tokens(logits, rows) == logits.argmax(dim=-1).tolist()


def test_greedy_and_sampled_rows_mix_in_one_batch() -> None:
    logits = _random_logits(4)
    rows = [
        Row(SamplingSettings(temperature=0)),
        Row(SamplingSettings(temperature=1.0, seed=3)),
        Row(SamplingSettings(temperature=0)),
        Row(SamplingSettings(temperature=1.0, top_p=0.5, seed=4)),
    ]
    alone = [_tokens(logits[row : row + 1], [rows[row]])[0] for row in range(4)]

    tokens = _tokens(logits, rows)

    assert tokens == alone
    assert tokens[0] == int(logits[0].argmax()) and tokens[2] == int(logits[2].argmax())


def test_a_seeded_row_samples_the_same_tokens_whatever_else_is_in_the_batch() -> None:
    vocab = 40
    target = _random_logits(1, vocab, seed=11) / 3
    settings = SamplingSettings(temperature=1.2, top_p=0.9, top_k=20, seed=1234)
    alone: list[int] = []
    crowded: list[int] = []
    for step in range(30):
        history = list(range(step))
        alone.append(_tokens(target, [Row(settings, output_ids=history)])[0])
        others = _random_logits(5, vocab, seed=step)
        batch = torch.cat([others[:2], target, others[2:]])
        rows = [Row(SamplingSettings(temperature=0.8, seed=step + other)) for other in range(5)]
        rows.insert(2, Row(settings, output_ids=history))
        crowded.append(_tokens(batch, rows)[2])

    assert alone == crowded
    assert len(set(alone)) > 3, "precondition: the row really samples"


def test_different_seeds_give_different_samples_and_the_same_seed_the_same() -> None:
    logits = torch.zeros((1, 100))
    runs = {
        seed: [
            _tokens(logits, [Row(SamplingSettings(seed=seed), output_ids=[0] * step)])[0]
            for step in range(20)
        ]
        for seed in (1, 2, 1 << 40, -5)
    }

    assert len({tuple(tokens) for tokens in runs.values()}) == 4
    again = [_tokens(logits, [Row(SamplingSettings(seed=2), output_ids=[0] * step)])[0] for step in range(20)]
    assert again == runs[2]


def test_samples_follow_the_softmax_distribution() -> None:
    probabilities = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probabilities.log().unsqueeze(0)
    draws = 4000
    counts = Counter(_tokens(logits, [Row(SamplingSettings(seed=seed))])[0] for seed in range(draws))

    for token, probability in enumerate(probabilities.tolist()):
        assert abs(counts[token] / draws - probability) < 0.03


def test_temperature_sharpens_the_distribution() -> None:
    logits = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    draws = 2000
    hot = sum(_tokens(logits, [Row(SamplingSettings(temperature=2.0, seed=s))])[0] == 0 for s in range(draws))
    cold = sum(
        _tokens(logits, [Row(SamplingSettings(temperature=0.25, seed=s))])[0] == 0 for s in range(draws)
    )

    assert cold / draws > 0.9 > 0.5 > hot / draws


def test_top_p_keeps_the_smallest_prefix_that_reaches_it() -> None:
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    seen = {_tokens(logits, [Row(SamplingSettings(top_p=0.6, seed=seed))])[0] for seed in range(500)}

    assert seen == {0, 1}


def test_top_k_keeps_the_k_most_likely() -> None:
    logits = torch.tensor([[0.1, 2.0, 0.3, 1.5, 0.0, 1.9]])
    seen = {_tokens(logits, [Row(SamplingSettings(top_k=3, seed=seed))])[0] for seed in range(500)}

    assert seen == {1, 3, 5}


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits_of_seen_tokens() -> None:
    logits = torch.tensor([[2.0, -2.0, 2.0, -2.0, 1.0]])
    row = Row(SamplingSettings(repetition_penalty=2.0), prompt_ids=[0], output_ids=[1, 1])

    penalised = apply_penalties(logits, [row])

    assert penalised.tolist() == [[1.0, -4.0, 2.0, -2.0, 1.0]]


def test_frequency_and_presence_penalties_count_only_generated_tokens() -> None:
    logits = torch.zeros((1, 4))
    row = Row(
        SamplingSettings(frequency_penalty=0.5, presence_penalty=0.25),
        prompt_ids=[3, 3],
        output_ids=[0, 0, 0, 1],
    )

    penalised = apply_penalties(logits, [row])

    assert penalised.tolist() == [[-1.75, -0.75, 0.0, 0.0]]


def test_negative_penalties_encourage_and_rows_without_penalties_are_untouched() -> None:
    logits = torch.zeros((2, 3))
    rows = [
        Row(SamplingSettings(presence_penalty=-1.0), output_ids=[2]),
        Row(SamplingSettings(), output_ids=[2]),
    ]

    penalised = apply_penalties(logits, rows)

    assert penalised.tolist() == [[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]


def test_a_penalty_changes_the_greedy_choice() -> None:
    logits = torch.tensor([[3.0, 2.5, 0.0]])
    plain = Row(SamplingSettings(temperature=0), output_ids=[0])
    penalised = Row(SamplingSettings(temperature=0, frequency_penalty=1.0), output_ids=[0])

    assert _tokens(logits, [plain, penalised]) == [0, 1]


def test_logprobs_are_sorted_non_positive_and_match_log_softmax() -> None:
    logits = _random_logits(3, vocab=30, seed=5)
    rows = [
        Row(SamplingSettings(temperature=0, top_logprobs=5)),
        Row(SamplingSettings(temperature=1.0, seed=9, top_logprobs=0)),
        Row(SamplingSettings(temperature=0)),
    ]
    expected = torch.log_softmax(logits, dim=-1)

    choices = choose_tokens(logits, rows)

    first, second, third = choices
    assert first.logprob is not None and second.logprob is not None
    assert math.isclose(first.logprob, float(expected[0, first.token]), abs_tol=1e-5)
    assert math.isclose(second.logprob, float(expected[1, second.token]), abs_tol=1e-5)
    values = [value for _, value in first.top]
    assert len(first.top) == 5 and values == sorted(values, reverse=True) and all(v <= 0 for v in values)
    assert first.top[0][0] == first.token  # greedy: the chosen token is the most likely
    assert second.top == ()
    assert third.logprob is None and third.top == ()


def test_logprobs_are_taken_after_penalties() -> None:
    logits = torch.tensor([[1.0, 1.0]])
    row = Row(SamplingSettings(temperature=0, presence_penalty=2.0, top_logprobs=2), output_ids=[0])

    (choice,) = choose_tokens(logits, [row])

    assert choice.token == 1
    assert choice.logprob is not None
    assert math.isclose(
        choice.logprob, float(torch.log_softmax(torch.tensor([-1.0, 1.0]), 0)[1]), abs_tol=1e-6
    )


def test_uniforms_lie_in_the_unit_interval_and_depend_only_on_seed_and_step() -> None:
    seeds = [0, 1, 2**62, -1, 7, 7]
    steps = [0, 0, 3, 9, 1, 2]

    values = uniforms(seeds, steps, torch.device("cpu"))

    assert ((values >= 0) & (values < 1)).all()
    assert values[4] != values[5]
    assert uniforms([7], [2], torch.device("cpu"))[0] == values[5]


def test_resolve_settings_fills_the_model_defaults_and_draws_a_seed() -> None:
    settings = resolve_settings(
        SamplingParams(top_k=5, logprobs=True), default_temperature=0.7, default_top_p=0.9
    )
    other = resolve_settings(SamplingParams(), default_temperature=0.7, default_top_p=0.9)

    assert (settings.temperature, settings.top_p, settings.top_k, settings.top_logprobs) == (0.7, 0.9, 5, 0)
    assert other.top_logprobs is None and other.repetition_penalty == 1.0
    assert settings.seed != other.seed


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"repetition_penalty": 0.0}, "repetition_penalty"),
        ({"frequency_penalty": 2.5}, "frequency_penalty"),
        ({"presence_penalty": -3.0}, "presence_penalty"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"stop_token_ids": (5, -1)}, "stop_token_ids"),
    ],
)
def test_out_of_range_parameters_are_refused_by_name(change: dict[str, object], param: str) -> None:
    params = dataclasses.replace(SamplingParams(), **change)  # type: ignore[arg-type]

    with pytest.raises(InvalidRequest) as caught:
        check_sampling_params(params)

    assert caught.value.param == param


def test_in_range_parameters_pass() -> None:
    check_sampling_params(
        SamplingParams(
            max_tokens=1,
            temperature=0,
            top_p=1,
            top_k=0,
            repetition_penalty=1.2,
            frequency_penalty=-2,
            presence_penalty=2,
            logprobs=True,
            top_logprobs=20,
            stop_token_ids=(0, 7),
        )
    )
