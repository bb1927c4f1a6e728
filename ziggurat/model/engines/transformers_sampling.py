"""Choosing the next token for every row of a batch at once: penalties, temperature, top-k/p, seeds, logprobs.

One call of `choose_tokens` runs a fixed set of tensor operations on the whole
`(rows, vocab)` logits, whatever mix of settings the rows carry: batches reach
hundreds of rows on a GPU, and a Python loop per row would cost more than the
forward pass. Work that no row needs is skipped (no sort when no row uses top-k
or top-p, no history scatter when no row has a penalty, no log-softmax when no
row asks for logprobs), so an all-greedy batch costs one `argmax`.

Randomness is counter-based rather than a `torch.Generator` per row: the
uniform number a row draws at step `t` is a hash of (its seed, `t`), computed
for all rows in a few integer tensor operations, and the token is found by
inverse-CDF sampling (`searchsorted` over the cumulative probabilities). A
row's choice therefore depends only on its own logits, seed and step, never on
which other requests share the batch, and rows need no generator state.

Logprobs are the log-softmax of the logits after the repetition, frequency and
presence penalties and before temperature, top-k and top-p: the model's own
(penalised) distribution, which stays defined for greedy rows (temperature 0)
and does not change with the sampling temperature. vLLM calls this choice
"processed logits" minus temperature; OpenAI does not document its own.

Not here: stop strings and detokenising (`transformers_text`), min-p, typical-p,
logit bias, beam search.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from ziggurat.errors import InvalidRequest
from ziggurat.model.engine import SamplingParams

MAX_TOP_LOGPROBS = 20
_MASK32 = 0xFFFFFFFF
_UNIFORM_BITS = 24


@dataclass(slots=True, frozen=True)
class SamplingSettings:
    """One request's resolved decoding settings (client values over the model's defaults).

    `top_k == 0` means no limit; `top_logprobs is None` means no logprobs at all,
    `0` the chosen token's only. `seed` is always set: a request without one gets
    a random seed, so every row is sampled the same way.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    seed: int = 0
    top_logprobs: int | None = None

    @property
    def is_greedy(self) -> bool:
        return self.temperature <= 0

    @property
    def has_penalties(self) -> bool:
        return self.repetition_penalty != 1.0 or self.frequency_penalty != 0 or self.presence_penalty != 0

    @property
    def is_truncated(self) -> bool:
        """Whether sampling keeps only part of the vocabulary (needs the sorted distribution)."""
        return not self.is_greedy and (self.top_k > 0 or self.top_p < 1.0)


@dataclass(slots=True, frozen=True)
class TokenChoice:
    """The token picked for one row, with its logprob and the best alternatives when asked for."""

    token: int
    logprob: float | None = None
    top: tuple[tuple[int, float], ...] = ()


class SampledRow(Protocol):
    """What the sampler reads from a sequence: its settings and its tokens so far."""

    @property
    def sampling(self) -> SamplingSettings: ...

    @property
    def prompt_ids(self) -> Sequence[int]: ...

    @property
    def output_ids(self) -> Sequence[int]: ...


def check_sampling_params(params: SamplingParams) -> None:
    """Refuse out-of-range values with an error that names the parameter (`InvalidRequest`)."""
    if params.max_tokens is not None and params.max_tokens < 1:
        raise InvalidRequest("max_tokens must be at least 1.", param="max_tokens")
    if params.temperature is not None and not 0 <= params.temperature <= 2:
        raise InvalidRequest("temperature must be between 0 and 2.", param="temperature")
    if params.top_p is not None and not 0 < params.top_p <= 1:
        raise InvalidRequest("top_p must be greater than 0 and at most 1.", param="top_p")
    if params.top_k is not None and params.top_k < 0:
        raise InvalidRequest("top_k must be 0 (no limit) or a positive number of tokens.", param="top_k")
    if params.repetition_penalty is not None and not 0 < params.repetition_penalty <= 10:
        raise InvalidRequest(
            "repetition_penalty must be greater than 0 and at most 10.", param="repetition_penalty"
        )
    for name in ("frequency_penalty", "presence_penalty"):
        value = getattr(params, name)
        if value is not None and not -2 <= value <= 2:
            raise InvalidRequest(f"{name} must be between -2 and 2.", param=name)
    if not 0 <= params.top_logprobs <= MAX_TOP_LOGPROBS:
        raise InvalidRequest(f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}.", param="top_logprobs")
    if params.top_logprobs and not params.logprobs:
        raise InvalidRequest("top_logprobs needs logprobs to be true.", param="top_logprobs")
    if any(token_id < 0 for token_id in params.stop_token_ids):
        raise InvalidRequest("stop_token_ids must not be negative.", param="stop_token_ids")


def resolve_settings(
    params: SamplingParams, *, default_temperature: float, default_top_p: float
) -> SamplingSettings:
    """The settings one request decodes with; the model's defaults fill what the client left unset."""
    return SamplingSettings(
        temperature=default_temperature if params.temperature is None else params.temperature,
        top_p=default_top_p if params.top_p is None else params.top_p,
        top_k=params.top_k or 0,
        repetition_penalty=1.0 if params.repetition_penalty is None else params.repetition_penalty,
        frequency_penalty=params.frequency_penalty or 0.0,
        presence_penalty=params.presence_penalty or 0.0,
        seed=secrets.randbits(63) if params.seed is None else params.seed,
        top_logprobs=params.top_logprobs if params.logprobs else None,
    )


def choose_tokens(logits: torch.Tensor, rows: Sequence[SampledRow]) -> list[TokenChoice]:
    """One token per row of `logits` `(rows, vocab)`, float32, on any device."""
    settings = [row.sampling for row in rows]
    device = logits.device
    if any(setting.has_penalties for setting in settings):
        logits = apply_penalties(logits, rows)
    greedy = logits.argmax(dim=-1)
    tokens = greedy
    if not all(setting.is_greedy for setting in settings):
        sampled = _sample(logits, settings, [len(row.output_ids) for row in rows])
        is_greedy = torch.tensor([setting.is_greedy for setting in settings], device=device)
        tokens = torch.where(is_greedy, greedy, sampled)
    wanted = [setting.top_logprobs for setting in settings]
    if all(count is None for count in wanted):
        return [TokenChoice(token) for token in tokens.tolist()]
    return _with_logprobs(logits, tokens, wanted)


def apply_penalties(logits: torch.Tensor, rows: Sequence[SampledRow]) -> torch.Tensor:
    """Logits with each row's penalties applied (a new tensor; rows without penalties are unchanged).

    Repetition (HF sense, over prompt and answer): a seen token's logit is divided
    by the penalty when positive, multiplied when negative. Frequency and presence
    (OpenAI sense, over the answer only): `count * frequency + (count > 0) * presence`
    is subtracted.
    """
    settings = [row.sampling for row in rows]
    device, vocab = logits.device, logits.shape[-1]
    # Padding points at an extra column that is dropped afterwards, so rows need no masks.
    seen = _scatter_counts(
        [
            [*row.prompt_ids, *row.output_ids] if row.sampling.repetition_penalty != 1.0 else []
            for row in rows
        ],
        vocab,
        device,
    )
    generated = _scatter_counts([list(row.output_ids) for row in rows], vocab, device)
    repetition = _column([setting.repetition_penalty for setting in settings], device)
    frequency = _column([setting.frequency_penalty for setting in settings], device)
    presence = _column([setting.presence_penalty for setting in settings], device)
    penalised = torch.where(logits > 0, logits / repetition, logits * repetition)
    logits = torch.where(seen > 0, penalised, logits)
    return logits - generated * frequency - (generated > 0).to(logits.dtype) * presence


def uniforms(seeds: Sequence[int], steps: Sequence[int], device: torch.device) -> torch.Tensor:
    """A number in [0, 1) per row that depends only on (seed, step): a counter-based random stream.

    Three rounds of a 32-bit integer mixer (lowbias32) over the seed's two halves
    and the step, done in int64 with explicit masking so the result is the same
    on every device.
    """
    # Seeds may exceed int64's range (or be negative): split them into 32-bit halves in Python.
    low = torch.tensor([value & _MASK32 for value in seeds], dtype=torch.int64, device=device)
    high = torch.tensor([(value >> 32) & _MASK32 for value in seeds], dtype=torch.int64, device=device)
    step = torch.tensor(list(steps), dtype=torch.int64, device=device)
    mixed = _mix32(high ^ _mix32(low ^ _mix32((step + 0x9E3779B9) & _MASK32)))
    return (mixed >> (32 - _UNIFORM_BITS)).to(torch.float32) / float(1 << _UNIFORM_BITS)


def _mix32(value: torch.Tensor) -> torch.Tensor:
    # Products wrap modulo 2**64; only their low 32 bits are kept, which wrapping does not change.
    value = value & _MASK32
    value = value ^ (value >> 16)
    value = (value * 0x7FEB352D) & _MASK32
    value = value ^ (value >> 15)
    value = (value * 0x846CA68B) & _MASK32
    return value ^ (value >> 16)


def _sample(logits: torch.Tensor, settings: Sequence[SamplingSettings], steps: Sequence[int]) -> torch.Tensor:
    """A sampled token per row (greedy rows get an arbitrary one that the caller discards)."""
    device = logits.device
    temperature = _column(
        [setting.temperature if setting.temperature > 0 else 1.0 for setting in settings], device
    )
    scaled = logits / temperature
    order: torch.Tensor | None = None
    if any(setting.is_truncated for setting in settings):
        scaled, order = scaled.sort(dim=-1, descending=True, stable=True)
        scaled = _truncate_sorted(scaled, settings)
    probabilities = torch.softmax(scaled, dim=-1)
    cumulative = probabilities.cumsum(dim=-1)
    targets = (
        uniforms([setting.seed for setting in settings], steps, device).unsqueeze(1) * cumulative[:, -1:]
    )
    index = torch.searchsorted(cumulative, targets, right=True).clamp_(max=logits.shape[-1] - 1)
    # Never land on a token whose probability is zero (rounding at the top of the CDF).
    index = torch.minimum(index, (probabilities > 0).cumsum(dim=-1).argmax(dim=-1, keepdim=True))
    if order is not None:
        index = order.gather(1, index)
    return index.squeeze(1)


def _truncate_sorted(sorted_logits: torch.Tensor, settings: Sequence[SamplingSettings]) -> torch.Tensor:
    """Mask (to -inf) what top-k and then top-p leave out of each row's descending logits."""
    device, vocab = sorted_logits.device, sorted_logits.shape[-1]
    top_k = torch.tensor(
        [setting.top_k if 0 < setting.top_k < vocab else vocab for setting in settings], device=device
    )
    ranks = torch.arange(vocab, device=device).unsqueeze(0)
    masked = sorted_logits.masked_fill(ranks >= top_k.unsqueeze(1), float("-inf"))
    probabilities = torch.softmax(masked, dim=-1)
    # Keep the smallest prefix whose mass reaches top_p; the most likely token is always kept.
    top_p = _column([setting.top_p for setting in settings], device)
    outside = (probabilities.cumsum(dim=-1) - probabilities) >= top_p
    outside[:, 0] = False
    return masked.masked_fill(outside, float("-inf"))


def _with_logprobs(
    logits: torch.Tensor, tokens: torch.Tensor, wanted: Sequence[int | None]
) -> list[TokenChoice]:
    logprobs = torch.log_softmax(logits, dim=-1)
    chosen = logprobs.gather(1, tokens.unsqueeze(1)).squeeze(1)
    widest = max(count or 0 for count in wanted)
    top_values, top_ids = logprobs.topk(widest, dim=-1)
    token_list: list[int] = tokens.tolist()
    chosen_list: list[float] = chosen.tolist()
    value_rows: list[list[float]] = top_values.tolist()
    id_rows: list[list[int]] = top_ids.tolist()
    choices: list[TokenChoice] = []
    for row, count in enumerate(wanted):
        if count is None:
            choices.append(TokenChoice(token_list[row]))
            continue
        top = tuple(zip(id_rows[row][:count], value_rows[row][:count], strict=True))
        choices.append(TokenChoice(token_list[row], chosen_list[row], top))
    return choices


def _scatter_counts(histories: Sequence[Sequence[int]], vocab: int, device: torch.device) -> torch.Tensor:
    """`(rows, vocab)` float counts of each token id in each row's history."""
    width = max((len(history) for history in histories), default=0)
    counts = torch.zeros((len(histories), vocab + 1), dtype=torch.float32, device=device)
    if width == 0:
        return counts[:, :vocab]
    padded = [[*history, *([vocab] * (width - len(history)))] for history in histories]
    ids = torch.tensor(padded, dtype=torch.long, device=device).clamp_(max=vocab)
    counts.scatter_add_(1, ids, torch.ones(ids.shape, dtype=torch.float32, device=device))
    return counts[:, :vocab]


def _column(values: Sequence[float], device: torch.device) -> torch.Tensor:
    return torch.tensor(list(values), dtype=torch.float32, device=device).unsqueeze(1)
