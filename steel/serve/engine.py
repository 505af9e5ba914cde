"""Generation: a batched decoding loop with a KV cache, and the worker thread that feeds it requests.

Causal model variants decode a batch of left-padded prompts together. With continuous batching,
requests that arrive while a batch decodes join it between two decoding steps, as soon as a row
is free. Each row gets position ids
that count only its real tokens, and the attention mask hides the padding, so a row's tokens do
not depend on what else is in the batch. The engine pads on the left itself, whatever padding side
the tokenizer is configured with. The faithful `soft_moe` variant mixes every position of a
sequence in its FFN, so an earlier token's hidden state changes when a token is added and a KV
cache would be stale. That variant recomputes the whole sequence at each step, one request at a
time.
"""

import collections
import inspect
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from steel.serve.batching import CachedBatch, can_merge
from steel.serve.decoding import REPLACEMENT_CHARACTER, IncrementalDecoder, StopStringFilter
from steel.serve.sampling import SamplerState, SamplingParams, sample_next_token
from steel.tokenizer import ENDOFTEXT, IM_END, IM_START

logger = logging.getLogger(__name__)

FINISH_STOP = "stop"
FINISH_LENGTH = "length"
FINISH_CANCELLED = "cancelled"
FINISH_ERROR = "error"


@dataclass
class GenerationUpdate:
    """New text of one request; `finish_reason` is set on its last update only."""

    request_id: str
    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None


@dataclass
class GenerationRequest:
    """A prompt to continue, how to sample it, and where its text goes while it is generated."""

    prompt_ids: list[int]
    params: SamplingParams
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    on_update: Callable[[GenerationUpdate], None] | None = None
    """Called from the generating thread with every text delta and once with the finish reason."""
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        """Ask the engine to stop this request at its next step; its last update has finish reason `cancelled`."""
        self.cancelled.set()


@dataclass
class GenerationResult:
    request_id: str
    text: str
    token_ids: list[int]
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    error: str | None = None


def collect_stop_ids(model: torch.nn.Module, tokenizer) -> frozenset[int]:
    """Return the union of end ids from the model config, its generation config and the tokenizer.

    `<|im_start|>` is among them: a model that opens a new turn without closing its own has
    finished its reply, and the invented turn must not be shown.
    """
    stop_ids: set[int] = set()
    for config in (getattr(model, "config", None), getattr(model, "generation_config", None)):
        eos = getattr(config, "eos_token_id", None)
        if isinstance(eos, int):
            stop_ids.add(eos)
        elif isinstance(eos, (list, tuple)):
            stop_ids.update(int(token_id) for token_id in eos)
    for token in (IM_END, ENDOFTEXT, IM_START):
        if token in tokenizer.special_ids:
            stop_ids.add(tokenizer.special_ids[token])
    return frozenset(stop_ids)


def supports_kv_cache(model: torch.nn.Module) -> bool:
    """Return whether decoding may reuse past keys and values instead of recomputing the prefix."""
    config = model.config
    if getattr(config, "ffn_type", None) == "soft_moe":
        # Cached decoding of the faithful Soft MoE computes a different function than the trained
        # full forward pass; SteelConfig allows it only when `soft_moe_cached_decoding` opts in.
        return bool(getattr(config, "soft_moe_cached_decoding", False))
    return True


def supports_batching(model: torch.nn.Module) -> bool:
    """Return whether rows of a padded batch are independent (the faithful Soft MoE mixes a whole sequence)."""
    return getattr(model.config, "ffn_type", None) != "soft_moe"


def context_length(model: torch.nn.Module) -> int | None:
    return getattr(model.config, "max_position_embeddings", None)


class _Row:
    """One request inside a batch: its sampler, its decoders and the tokens it has produced."""

    def __init__(self, request: GenerationRequest, engine: "Engine"):
        self.request = request
        self.prompt_ids = list(request.prompt_ids)
        self.params = request.params
        self.stop_ids = frozenset() if request.params.ignore_eos else engine.stop_ids
        self.sampler = SamplerState.create(request.params, self.prompt_ids, engine.vocab_size)
        self.decoder = IncrementalDecoder(engine.tokenizer)
        self.stop_filter = StopStringFilter(request.params.stop)
        self.token_ids: list[int] = []
        self.text_parts: list[str] = []
        self.finish_reason: str | None = None
        self.error: str | None = None

        self.max_new_tokens = request.params.max_new_tokens
        if engine.context_length is not None:
            self.max_new_tokens = min(self.max_new_tokens, engine.context_length - len(self.prompt_ids))
        if not self.prompt_ids:
            self.finish(FINISH_ERROR, error="the prompt is empty; generation needs at least one token")
        elif self.max_new_tokens <= 0:
            self.finish(FINISH_LENGTH)
        elif request.cancelled.is_set():
            self.finish(FINISH_CANCELLED)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def step(self, logits: torch.Tensor) -> None:
        """Sample the next token from this row's logits [vocab_size] and emit any text it completes."""
        if self.request.cancelled.is_set():
            self.finish(FINISH_CANCELLED)
            return

        token_id = sample_next_token(logits, self.sampler)
        self.token_ids.append(token_id)
        if token_id in self.stop_ids:
            self.finish(FINISH_STOP)
            return

        self.sampler.observe(token_id)
        text, stopped = self.stop_filter.push(self.decoder.add(token_id))
        self._emit(text)
        if stopped:
            self.finish(FINISH_STOP, flush=False)
        elif len(self.token_ids) >= self.max_new_tokens:
            self.finish(FINISH_LENGTH)

    def finish(self, reason: str, flush: bool = True, error: str | None = None) -> None:
        if self.finished:
            return
        if flush and reason != FINISH_CANCELLED:
            remaining = self.decoder.flush()
            if reason == FINISH_LENGTH:
                # The token limit cut a character short, so end the text before it instead of with U+FFFD.
                remaining = remaining.rstrip(REPLACEMENT_CHARACTER)
            text, stopped = self.stop_filter.push(remaining)
            if not stopped:
                text += self.stop_filter.flush()
            self._emit(text)
        self.finish_reason = reason
        self.error = error
        if reason == FINISH_CANCELLED:
            logger.info("%s cancelled after %d tokens", self.request.request_id, len(self.token_ids))
        self._notify("", reason)

    def result(self) -> GenerationResult:
        return GenerationResult(
            request_id=self.request.request_id,
            text="".join(self.text_parts),
            token_ids=list(self.token_ids),
            finish_reason=self.finish_reason or FINISH_ERROR,
            prompt_tokens=len(self.prompt_ids),
            completion_tokens=len(self.token_ids),
            error=self.error,
        )

    def _emit(self, text: str) -> None:
        if text:
            self.text_parts.append(text)
            self._notify(text, None)

    def _notify(self, text: str, finish_reason: str | None) -> None:
        if self.request.on_update is None:
            return
        update = GenerationUpdate(
            request_id=self.request.request_id,
            text=text,
            finish_reason=finish_reason,
            prompt_tokens=len(self.prompt_ids),
            completion_tokens=len(self.token_ids),
            error=self.error,
        )
        self.request.on_update(update)


class Engine:
    """Generates text for batches of requests with one model; use it from one thread at a time."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        *,
        max_batch_size: int = 8,
        stop_ids: frozenset[int] | None = None,
        use_kv_cache: bool | None = None,
    ):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.stop_ids = collect_stop_ids(model, tokenizer) if stop_ids is None else frozenset(stop_ids)
        self.use_kv_cache = supports_kv_cache(model) if use_kv_cache is None else use_kv_cache
        self.max_batch_size = max_batch_size if supports_batching(model) and self.use_kv_cache else 1
        self.context_length = context_length(model)
        self.vocab_size = model.config.vocab_size
        self.device = next(model.parameters()).device
        self.pad_id = tokenizer.special_ids.get(ENDOFTEXT, 0)
        self._takes_logits_to_keep = "logits_to_keep" in inspect.signature(model.forward).parameters

        logger.info(
            "engine: %s, KV cache %s, max batch size %d, context length %s, stop ids %s",
            type(model).__name__,
            "on" if self.use_kv_cache else "off (full recompute per token)",
            self.max_batch_size,
            self.context_length,
            sorted(self.stop_ids),
        )

    @property
    def supports_continuous_batching(self) -> bool:
        """Whether requests can join a running batch (a KV cache and more than one row)."""
        return self.use_kv_cache and self.max_batch_size > 1

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """Generate every request to its end, in static batches of at most `max_batch_size`."""
        results = []
        for start in range(0, len(requests), self.max_batch_size):
            rows = [_Row(request, self) for request in requests[start : start + self.max_batch_size]]
            try:
                with torch.inference_mode():
                    if self.use_kv_cache:
                        self._generate_cached(rows)
                    else:
                        for row in rows:
                            self._generate_uncached(row)
            except Exception as error:
                self._fail(rows, error)
                # Requests of later batches never start; they too must hear that they failed.
                for request in requests[start + self.max_batch_size :]:
                    _notify_unstarted(request, FINISH_ERROR, f"{type(error).__name__}: {error}")
                raise
            results.extend(row.result() for row in rows)
        return results

    def generate_continuous(
        self,
        requests: list[GenerationRequest],
        take_waiting: Callable[[int], list[GenerationRequest]],
    ) -> list[GenerationResult]:
        """Generate `requests` and every request that joins them, until no row is left.

        Between decoding steps, `take_waiting(free_rows)` returns up to `free_rows` requests that
        are waiting, without blocking. They are prefilled and join the batch, so a request does
        not wait for the longest one in the batch to end. Results are in the order the requests
        started. An engine without continuous batching generates `requests` in static batches.
        """
        if not self.supports_continuous_batching:
            return self.generate(requests)

        # Requests beyond the first batch join before any that are still waiting outside.
        queued = collections.deque(requests[self.max_batch_size :])

        def take_queued_first(free_rows: int) -> list[GenerationRequest]:
            taken = [queued.popleft() for _ in range(min(free_rows, len(queued)))]
            return taken + (take_waiting(free_rows - len(taken)) if len(taken) < free_rows else [])

        rows = [_Row(request, self) for request in requests[: self.max_batch_size]]
        try:
            with torch.inference_mode():
                self._generate_cached(rows, take_queued_first)
        except Exception as error:
            self._fail(rows, error)
            for request in queued:
                _notify_unstarted(request, FINISH_ERROR, f"{type(error).__name__}: {error}")
            raise
        return [row.result() for row in rows]

    @staticmethod
    def _fail(rows: list["_Row"], error: Exception) -> None:
        message = f"{type(error).__name__}: {error}"
        for row in rows:
            row.finish(FINISH_ERROR, flush=False, error=message)

    def _forward(self, input_ids, attention_mask, position_ids, past_key_values, use_cache):
        kwargs = {"logits_to_keep": 1} if self._takes_logits_to_keep else {}
        outputs = self.model(
            input_ids=input_ids.to(self.device),
            attention_mask=None if attention_mask is None else attention_mask.to(self.device),
            position_ids=None if position_ids is None else position_ids.to(self.device),
            past_key_values=past_key_values,
            use_cache=use_cache,
            **kwargs,
        )
        return outputs.logits[:, -1, :].float().cpu(), outputs.past_key_values

    def _left_pad(self, sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        block_size = max(len(ids) for ids in sequences)
        input_ids = torch.full((len(sequences), block_size), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), block_size), dtype=torch.long)
        for row, ids in enumerate(sequences):
            input_ids[row, block_size - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, block_size - len(ids) :] = 1
        return input_ids, attention_mask

    def _generate_cached(
        self, rows: list[_Row], take_waiting: Callable[[int], list[GenerationRequest]] | None = None
    ) -> None:
        """Decode `rows` with a KV cache. With `take_waiting`, admitted requests are appended to `rows`."""
        batch = self._prefill([row for row in rows if not row.finished])
        while True:
            batch = batch.without_finished() if batch is not None else None
            if take_waiting is not None:
                batch = self._admit(batch, rows, take_waiting)
            if batch is None:
                return

            last_ids = [row.token_ids[-1] if row.token_ids else self.pad_id for row in batch.rows]
            input_ids = torch.tensor(last_ids, dtype=torch.long).unsqueeze(1)
            new_column = batch.attention_mask.new_ones((len(batch.rows), 1))
            batch.attention_mask = torch.cat([batch.attention_mask, new_column], dim=1)
            batch.position_ids = batch.position_ids + 1
            logits, batch.cache = self._forward(
                input_ids, batch.attention_mask, batch.position_ids, batch.cache, use_cache=True
            )
            batch.step(logits)

    def _prefill(self, rows: list[_Row]) -> CachedBatch | None:
        """Run the prompts of `rows` and sample each row's first token."""
        if not rows:
            return None
        # Left-padded prompts, positions counted from each row's first real token.
        input_ids, attention_mask = self._left_pad([row.prompt_ids for row in rows])
        position_ids = (attention_mask.cumsum(dim=-1) - 1).clamp(min=0)
        logits, cache = self._forward(input_ids, attention_mask, position_ids, None, use_cache=True)
        batch = CachedBatch(rows, cache, attention_mask, position_ids[:, -1:], self.device)
        batch.step(logits)
        return batch

    def _admit(
        self,
        batch: CachedBatch | None,
        rows: list[_Row],
        take_waiting: Callable[[int], list[GenerationRequest]],
    ) -> CachedBatch | None:
        """Prefill waiting requests and join them to `batch`; `rows` records every admitted row."""
        free_rows = self.max_batch_size - (len(batch.rows) if batch is not None else 0)
        if free_rows <= 0 or (batch is not None and not can_merge(batch.cache)):
            return batch
        requests = take_waiting(free_rows)
        if not requests:
            return batch

        new_rows = [_Row(request, self) for request in requests]
        rows.extend(new_rows)
        joining = self._prefill([row for row in new_rows if not row.finished])
        joining = joining.without_finished() if joining is not None else None
        logger.debug("admitted %d requests into a batch of %d", len(new_rows), len(batch.rows) if batch else 0)
        if joining is None:
            return batch
        if batch is None:
            return joining
        return batch.merge(joining)

    def _generate_uncached(self, row: _Row) -> None:
        while not row.finished:
            input_ids = torch.tensor([row.prompt_ids + row.token_ids], dtype=torch.long)
            logits, _ = self._forward(input_ids, None, None, None, use_cache=False)
            row.step(logits[0])


def _notify_unstarted(request: GenerationRequest, reason: str, error: str | None = None) -> None:
    if request.on_update is not None:
        request.on_update(GenerationUpdate(request.request_id, "", reason, len(request.prompt_ids), 0, error))


class ServerBusy(RuntimeError):
    """The request queue is full."""


class GenerationWorker:
    """A thread that takes requests from a bounded queue and generates them in batches.

    With `continuous_batching` (the default where the engine supports it), a request that
    arrives while a batch decodes joins that batch at the next decoding step once a row is free.
    Without it, waiting requests form the next batch, up to the engine's `max_batch_size`. When
    a request arrives at an idle worker, the worker waits up to `batch_window_s` for others to
    join it, so clients that send at the same moment share one prefill. A request whose client
    went away is cancelled at its next decoding step.
    """

    def __init__(
        self, engine: Engine, max_pending: int = 64, batch_window_s: float = 0.02, continuous_batching: bool = True
    ):
        self.engine = engine
        self.max_pending = max_pending
        self.batch_window_s = batch_window_s
        self.continuous_batching = continuous_batching and engine.supports_continuous_batching
        self._stopping = False
        self._closing = threading.Event()
        self.queue: queue.Queue[GenerationRequest | None] = queue.Queue(maxsize=max_pending)
        self.recent: collections.deque[GenerationResult] = collections.deque(maxlen=256)
        self._running: list[GenerationRequest] = []
        self._thread = threading.Thread(target=self._run, name="steel-generation", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = 30.0) -> None:
        """Cancel queued and running requests and stop the thread."""
        self._closing.set()
        while True:
            try:
                request = self.queue.get_nowait()
            except queue.Empty:
                break
            if request is not None:
                request.cancel()
                self._finish_unstarted(request, FINISH_CANCELLED)
        for request in list(self._running):
            request.cancel()
        self.queue.put(None)
        self._thread.join(timeout=timeout)

    def submit(self, request: GenerationRequest) -> None:
        try:
            self.queue.put_nowait(request)
        except queue.Full:
            raise ServerBusy(f"{self.max_pending} requests are already waiting; retry later") from None

    @property
    def num_pending(self) -> int:
        return self.queue.qsize()

    def _run(self) -> None:
        while not self._stopping:
            request = self.queue.get()
            if request is None:
                return
            batch = [request]
            deadline = time.monotonic() + self.batch_window_s
            while len(batch) < self.engine.max_batch_size:
                try:
                    request = self.queue.get(timeout=max(deadline - time.monotonic(), 1e-6))
                except queue.Empty:
                    break
                if request is None:
                    self._stopping = True
                    break
                batch.append(request)
            self._generate(batch)

    def _take_waiting(self, max_count: int) -> list[GenerationRequest]:
        """Take up to `max_count` queued requests without waiting; called between decoding steps."""
        taken: list[GenerationRequest] = []
        while len(taken) < max_count and not self._stopping and not self._closing.is_set():
            try:
                request = self.queue.get_nowait()
            except queue.Empty:
                break
            if request is None:
                # close() was called: finish the running rows, admit nothing more, then stop.
                self._stopping = True
                break
            taken.append(request)
            self._running.append(request)
        return taken

    def _generate(self, batch: list[GenerationRequest]) -> None:
        self._running = list(batch)
        started = time.perf_counter()
        try:
            if self.continuous_batching:
                results = self.engine.generate_continuous(batch, self._take_waiting)
            else:
                results = self.engine.generate(batch)
        except Exception:
            logger.exception("generation failed for requests %s", ", ".join(r.request_id for r in self._running))
            results = []
        finally:
            self._running = []
        self.recent.extend(results)
        logger.debug("%d requests finished in %.2fs", len(results), time.perf_counter() - started)

    def _finish_unstarted(self, request: GenerationRequest, reason: str) -> None:
        _notify_unstarted(request, reason)
