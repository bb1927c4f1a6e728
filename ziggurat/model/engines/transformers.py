"""The embedded transformers engine: a Hugging Face causal LM served in-process with continuous batching.

`TransformersEngine` loads a model directory, a `.gguf` file or a hub id through
`AutoModelForCausalLM.from_pretrained` (off the event loop), renders prompts
with the tokenizer's chat template, and serves every concurrent `generate` from
one decode thread that batches them (`transformers_decode`). Llama-family models
run on the lean runner (`transformers_runner`: slot KV cache sized from
`kv_cache_gib`, chunked prefill, CUDA graphs); others on the model's own
forward (`transformers_batching`). Each request gets
its events back through its own small buffer on the event loop; closing the
stream marks the request cancelled and frees its slot within one decode step.

This is the only module the composition root imports for `kind == "transformers"`:
torch and transformers are imported here and in its `transformers_*` siblings
only, so the rest of ziggurat runs without them. It does not do LoRA adapters,
quantisation or multi-GPU sharding.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator, Mapping, Sequence
from pathlib import Path

import torch
from jinja2 import TemplateError

from ziggurat.errors import ConfigurationError, InvalidRequest, UpstreamFailed
from ziggurat.model.engine import (
    ChatMessage,
    EngineStats,
    GenerationEnd,
    GenerationEvent,
    GenerationRequest,
    ModelInfo,
    SamplingParams,
    TextDelta,
    TokenLogprob,
)
from ziggurat.model.engines.transformers_adapters import AdapterServing
from ziggurat.model.engines.transformers_decode import DecodeLoop, SequenceState
from ziggurat.model.engines.transformers_loading import LoadedModel, load_model
from ziggurat.model.engines.transformers_runner_batch import make_batcher
from ziggurat.model.engines.transformers_sampling import check_sampling_params, resolve_settings
from ziggurat.model.engines.transformers_text import (
    FALLBACK_STOP,
    OutputText,
    encode_chat,
    has_chat_template,
    make_decoder,
)
from ziggurat.model.model_source import describe_reference, resolve_model
from ziggurat.telemetry import get_logger

log = get_logger(__name__)


class _EventBuffer:
    """One request's events on the event loop, filled by the decode thread via `call_soon_threadsafe`.

    Consecutive text deltas are merged while the consumer is behind, so the
    buffer holds at most one delta and one end event: memory stays bounded by
    the answer's length however slow the client is, and the decode thread
    never waits for a consumer.
    """

    __slots__ = ("_events", "_ready")

    def __init__(self) -> None:
        self._events: deque[GenerationEvent] = deque()
        self._ready = asyncio.Event()

    def put(self, event: GenerationEvent) -> None:
        last = self._events[-1] if self._events else None
        if isinstance(event, TextDelta) and isinstance(last, TextDelta):
            self._events[-1] = TextDelta(
                last.text + event.text, _joined(last.logprobs, event.logprobs), last.tokens + event.tokens
            )
        else:
            self._events.append(event)
        self._ready.set()

    async def get(self) -> GenerationEvent:
        while not self._events:
            self._ready.clear()
            await self._ready.wait()
        return self._events.popleft()


class TransformersEngine(AdapterServing):
    """Serves one Hugging Face causal LM; up to `capacity` sequences decode together.

    `start` must complete before `generate`. Every `generate` stream ends with
    exactly one `GenerationEnd`, unless the consumer stops reading first, which
    cancels it. Counters (`active_count`, `waiting_count`, `max_batch_observed`,
    `cancelled_count`) are for tests and metrics.
    """

    def __init__(
        self,
        *,
        model_path: str | None,
        served_name: str,
        max_batch_size: int,
        default_max_tokens: int,
        context_length: int | None = None,
        device: str = "auto",
        dtype: str = "auto",
        cpu_threads: int | None = None,
        cache_dir: Path | None = None,
        runner: str = "auto",
        kv_cache_gib: float | None = None,
        prefill_chunk_tokens: int = 512,
        cuda_graphs: bool = True,
        adapters: Mapping[str, str] | None = None,
    ) -> None:
        self._model_path = model_path
        self._cache_dir = cache_dir
        self._served_name = served_name
        self._max_batch_size = max_batch_size
        self._default_max_tokens = default_max_tokens
        self._context_length = context_length
        self._device = device
        self._dtype = dtype
        self._cpu_threads = cpu_threads
        self._runner = runner
        self._kv_cache_gib = kv_cache_gib
        self._prefill_chunk_tokens = prefill_chunk_tokens
        self._cuda_graphs = cuda_graphs
        self._capacity = max_batch_size
        self.batch_path: str | None = None
        """`runner` or `hf` once started: which forward serves the model."""
        self._loaded: LoadedModel | None = None
        self._decode_loop: DecodeLoop | None = None
        self._thread: threading.Thread | None = None
        # Encoding (worker threads) and decoding (decode thread) share one Rust tokenizer,
        # which refuses concurrent use while its padding or truncation settings change.
        self._tokenizer_lock = threading.Lock()
        self.cancelled_count = 0
        self._startup_adapters = dict(adapters or {})
        """LoRA adapters to load at start: name -> directory (`transformers_adapters`)."""

    @property
    def info(self) -> ModelInfo:
        context_length = self._loaded.context_length if self._loaded else self._context_length
        return ModelInfo(name=self._served_name, engine="transformers", context_length=context_length)

    @property
    def capacity(self) -> int:
        """`max_batch_size`, or fewer once started if the KV-cache budget holds fewer slots."""
        return self._capacity

    @property
    def is_ready(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def active_count(self) -> int:
        """Sequences holding a slot in the running batch."""
        return self._decode_loop.active_count if self._decode_loop else 0

    @property
    def waiting_count(self) -> int:
        """Requests submitted to the decode loop but not yet in the batch."""
        return self._decode_loop.waiting_count if self._decode_loop else 0

    @property
    def max_batch_observed(self) -> int:
        return self._decode_loop.max_batch_observed if self._decode_loop else 0

    @property
    def generated_tokens(self) -> int:
        """Tokens generated since start (a counter: metrics derive tokens per second from it)."""
        return self._decode_loop.generated_tokens if self._decode_loop else 0

    def stats(self) -> EngineStats:
        """The decode loop's batch. KV-cache use: the runner's filled slot positions over its
        slot cache; on the HF path the padded cache's positions over what `max_batch_size`
        sequences of the full context length would hold."""
        loop = self._decode_loop
        if loop is None:
            return EngineStats(running=0, waiting=0, batch_size=0, kv_cache_usage=0.0)
        running = loop.active_count
        return EngineStats(
            running=running,
            waiting=loop.waiting_count,
            batch_size=loop.last_batch_size if running else 0,
            kv_cache_usage=min(1.0, loop.kv_cache_usage),
        )

    async def start(self) -> None:
        """Load the model off the event loop, then start the decode thread."""
        if self._thread is not None:
            return
        started = time.monotonic()
        log.info("model_loading", model=describe_reference(self._model_path))
        location = await asyncio.to_thread(self._local_location)
        loaded = await asyncio.to_thread(
            load_model,
            location,
            device=self._device,
            dtype=self._dtype,
            context_length=self._context_length,
            cpu_threads=self._cpu_threads,
        )
        plan = await asyncio.to_thread(
            make_batcher,
            loaded.model,
            device=loaded.device,
            mode=self._runner,
            max_batch_size=self._max_batch_size,
            context_length=loaded.context_length,
            kv_cache_gib=self._kv_cache_gib,
            chunk_tokens=self._prefill_chunk_tokens,
            cuda_graphs=self._cuda_graphs,
        )
        self._loaded = loaded
        self._capacity = plan.capacity
        self.batch_path = plan.path
        log.info(
            "engine_started",
            model=self._served_name,
            path=plan.path,
            capacity=plan.capacity,
            seconds=round(time.monotonic() - started, 2),
        )
        await self._start_adapters(loaded.model, plan.batcher, self._startup_adapters)
        self._decode_loop = DecodeLoop(batcher=plan.batcher, eos_token_ids=loaded.eos_token_ids)
        self._thread = threading.Thread(
            target=self._decode_loop.run, name=f"ziggurat-decode-{self._served_name}", daemon=True
        )
        self._thread.start()

    def _local_location(self) -> str:
        """A directory or hub id to load; a GGUF is converted once into `cache_dir` (blocking)."""
        if self._cache_dir is None:
            if self._model_path is None:
                raise ConfigurationError("No model configured: pass a model directory, .gguf file or hub id.")
            return self._model_path
        return resolve_model(self._model_path, cache_dir=self._cache_dir, progress=_log_progress)

    async def aclose(self) -> None:
        """Stop the decode thread (open streams end as `cancelled`) and release the model."""
        if self._decode_loop is not None:
            self._decode_loop.stop()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        is_cuda = self._loaded is not None and self._loaded.device.type == "cuda"
        self._loaded = None
        self._decode_loop = None
        self._thread = None
        if is_cuda:
            torch.cuda.empty_cache()

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationEvent, None]:
        loaded, decode_loop = self._running()
        _check_params(request.params)
        prompt_ids = await asyncio.to_thread(self._encode, loaded, request.messages, request.continuation)
        buffer = _EventBuffer()
        sequence = self._sequence(loaded, request, prompt_ids, buffer)
        decode_loop.submit(sequence)
        is_finished = False
        try:
            while True:
                event = await buffer.get()
                is_finished = isinstance(event, GenerationEnd)
                yield event
                if is_finished:
                    return
        finally:
            if not is_finished:
                decode_loop.cancel(sequence)
                self.cancelled_count += 1
            self._release_adapter(request.model)

    async def count_tokens(self, messages: Sequence[ChatMessage]) -> int | None:
        """The prompt's length in this model's tokens, chat template included; None before loading."""
        loaded = self._loaded
        if loaded is None:
            return None
        return len(await asyncio.to_thread(self._render, loaded, messages))

    def _running(self) -> tuple[LoadedModel, DecodeLoop]:
        if self._loaded is None or self._decode_loop is None or not self.is_ready:
            raise UpstreamFailed("The transformers engine is not running.")
        return self._loaded, self._decode_loop

    def _render(
        self, loaded: LoadedModel, messages: Sequence[ChatMessage], continuation: str = ""
    ) -> list[int]:
        try:
            with self._tokenizer_lock:
                return encode_chat(loaded.tokenizer, messages, continuation)
        except TemplateError as exc:
            raise InvalidRequest(f"The model's chat template rejected the messages: {exc}") from exc

    def _encode(self, loaded: LoadedModel, messages: Sequence[ChatMessage], continuation: str) -> list[int]:
        prompt_ids = self._render(loaded, messages, continuation)
        if len(prompt_ids) >= loaded.context_length:
            raise InvalidRequest(
                f"The prompt is {len(prompt_ids)} tokens long, but the model's context holds "
                f"{loaded.context_length} tokens including the answer.",
                param="messages",
            )
        return prompt_ids

    def _sequence(
        self, loaded: LoadedModel, request: GenerationRequest, prompt_ids: list[int], buffer: _EventBuffer
    ) -> SequenceState:
        params = request.params
        stops = tuple(params.stop)
        if not has_chat_template(loaded.tokenizer):
            stops += FALLBACK_STOP
        room = loaded.context_length - len(prompt_ids)
        decode = make_decoder(loaded.tokenizer)

        event_loop = asyncio.get_running_loop()

        def locked_decode(token_ids: list[int]) -> str:
            with self._tokenizer_lock:
                return decode(token_ids)

        def emit(event: GenerationEvent) -> None:
            event_loop.call_soon_threadsafe(buffer.put, event)

        def token_text(token_id: int) -> str:
            with self._tokenizer_lock:
                return str(loaded.tokenizer.decode([token_id]))

        return SequenceState(
            request_id=request.request_id,
            prompt_ids=prompt_ids,
            max_new_tokens=min(params.max_tokens or self._default_max_tokens, room),
            sampling=resolve_settings(
                params, default_temperature=loaded.sampling.temperature, default_top_p=loaded.sampling.top_p
            ),
            text=OutputText(locked_decode, stops),
            emit=emit,
            stop_token_ids=frozenset(params.stop_token_ids),
            token_text=token_text if params.logprobs else None,
            adapter_slot=self._adapter_slot(request.model),
        )


def _check_params(params: SamplingParams) -> None:
    check_sampling_params(params)


def _joined(
    first: tuple[TokenLogprob, ...] | None, second: tuple[TokenLogprob, ...] | None
) -> tuple[TokenLogprob, ...] | None:
    if first is None and second is None:
        return None
    return (*(first or ()), *(second or ()))


def _log_progress(message: str) -> None:
    log.info("model_preparing", detail=message)
