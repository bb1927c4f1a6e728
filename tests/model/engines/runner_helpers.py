"""Shared pieces of the lean-runner tests: the tiny Llama on CPU float32, a decode loop fed token ids."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM

from ziggurat.model.engine import GenerationEnd, GenerationEvent, TextDelta
from ziggurat.model.engines.transformers_decode import DecodeLoop, SequenceState
from ziggurat.model.engines.transformers_runner_batch import BatchPlan, make_batcher
from ziggurat.model.engines.transformers_sampling import SamplingSettings
from ziggurat.model.engines.transformers_text import OutputText


def load_tiny(path: Path) -> Any:
    model: Any = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return model.eval()


def plan(
    model: Any, *, slots: int = 4, context: int = 128, chunk: int = 512, gib: float | None = None
) -> BatchPlan:
    return make_batcher(
        model,
        device=torch.device("cpu"),
        mode="auto",
        max_batch_size=slots,
        context_length=context,
        kv_cache_gib=gib,
        chunk_tokens=chunk,
        cuda_graphs=False,
    )


def hf_greedy(model: Any, prompt: Sequence[int], new_tokens: int) -> list[int]:
    with torch.inference_mode():
        output = model.generate(
            torch.tensor([list(prompt)]),
            attention_mask=torch.ones((1, len(prompt)), dtype=torch.long),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            eos_token_id=None,
        )
    return [int(token) for token in output[0, len(prompt) :]]


@dataclass
class Recorder:
    """Every event of every sequence, in the order the decode thread emitted them."""

    log: list[tuple[str, str]] = field(default_factory=list)
    ended: dict[str, GenerationEnd] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sequence(self, name: str, prompt: Sequence[int], new_tokens: int) -> SequenceState:
        def emit(event: GenerationEvent) -> None:
            with self.lock:
                if isinstance(event, TextDelta):
                    self.log.append((name, "token"))
                elif isinstance(event, GenerationEnd):
                    self.log.append((name, "end"))
                    self.ended[name] = event

        return SequenceState(
            request_id=name,
            prompt_ids=list(prompt),
            max_new_tokens=new_tokens,
            sampling=SamplingSettings(temperature=0.0),
            text=OutputText(lambda ids: "".join(f"<{token}>" for token in ids), ()),
            emit=emit,
        )

    def wait(self, *names: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not all(name in self.ended for name in names):
            if time.monotonic() > deadline:
                raise TimeoutError(f"not ended: {[name for name in names if name not in self.ended]}")
            time.sleep(0.005)

    def tokens_before(self, name: str, marker: tuple[str, str]) -> int:
        with self.lock:
            index = self.log.index(marker)
            return sum(1 for entry in self.log[:index] if entry == (name, "token"))


class LoopThread:
    def __init__(self, batch_plan: BatchPlan) -> None:
        self.loop = DecodeLoop(batcher=batch_plan.batcher, eos_token_ids=frozenset())
        self._thread = threading.Thread(target=self.loop.run, daemon=True)

    def __enter__(self) -> DecodeLoop:
        self._thread.start()
        return self.loop

    def __exit__(self, *exc: object) -> None:
        self.loop.stop()
        self._thread.join()


def output_ids(sequence: SequenceState) -> list[int]:
    return list(sequence.output_ids)
