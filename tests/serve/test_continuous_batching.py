"""Continuous batching: requests that join a running batch get the tokens they would get alone."""

import threading

import pytest
import torch

from steel.serve.engine import (
    FINISH_CANCELLED,
    FINISH_ERROR,
    FINISH_LENGTH,
    Engine,
    GenerationRequest,
    GenerationWorker,
    _Row,
)
from steel.serve.sampling import SamplingParams
from steel.tokenizer.chat import encode_chat

from serve_testing import CONVERSATIONS

LONG = SamplingParams(temperature=0.0, max_new_tokens=40, ignore_eos=True)
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=20)
SAMPLED = SamplingParams(temperature=1.0, top_p=0.95, top_k=40, repetition_penalty=1.2, max_new_tokens=20, seed=5)


@pytest.fixture(scope="module")
def engine(loaded):
    return Engine(loaded.model, loaded.tokenizer, max_batch_size=4)


def chat_prompt(tokenizer, text: str) -> list[int]:
    return encode_chat(tokenizer, [{"role": "user", "content": text}], add_generation_prompt=True)[0]


class Arrivals:
    """A `take_waiting` that releases requests at given decoding steps and records each call."""

    def __init__(self, schedule: dict[int, list[GenerationRequest]]):
        self.schedule = {step: list(requests) for step, requests in schedule.items()}
        self.calls: list[int] = []

    def __call__(self, free_rows: int) -> list[GenerationRequest]:
        step = len(self.calls)
        self.calls.append(free_rows)
        waiting = self.schedule.get(step, [])
        taken, self.schedule[step] = waiting[:free_rows], waiting[free_rows:]
        if self.schedule[step]:
            self.schedule[step + 1] = self.schedule[step] + self.schedule.get(step + 1, [])
        return taken


def single(engine, prompt: list[int], params: SamplingParams) -> list[int]:
    return engine.generate([GenerationRequest(prompt, params)])[0].token_ids


@pytest.mark.parametrize("params", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_joined_rows_match_single(engine, params):
    tokenizer = engine.tokenizer
    running = GenerationRequest(tokenizer.encode("钢铁"), LONG)
    # A longer prompt than the running cache at step 2, and shorter ones later, so both sides get padded.
    joining = {
        2: [GenerationRequest(chat_prompt(tokenizer, CONVERSATIONS[0][0]), params)],
        5: [GenerationRequest(tokenizer.encode("S"), params), GenerationRequest(chat_prompt(tokenizer, "hello"), params)],
    }
    arrivals = Arrivals(joining)

    results = engine.generate_continuous([running], arrivals)

    expected = [single(engine, running.prompt_ids, LONG)]
    expected += [single(engine, request.prompt_ids, params) for step in sorted(joining) for request in joining[step]]
    assert [result.token_ids for result in results] == expected
    assert results[0].finish_reason == FINISH_LENGTH
    assert len(results[0].token_ids) == LONG.max_new_tokens


def test_joined_row_finishes_before_long_one(engine):
    order = []
    on_update = lambda update: order.append(update.request_id) if update.finish_reason else None  # noqa: E731
    running = GenerationRequest(engine.tokenizer.encode("钢铁"), LONG, request_id="long", on_update=on_update)
    short = GenerationRequest([1, 2, 3], SamplingParams(temperature=0.0, max_new_tokens=3, ignore_eos=True),
                              request_id="short", on_update=on_update)  # fmt: skip

    engine.generate_continuous([running], Arrivals({1: [short]}))

    assert order == ["short", "long"]


def test_admission_respects_max_batch_size(loaded):
    engine = Engine(loaded.model, loaded.tokenizer, max_batch_size=2)
    params = SamplingParams(temperature=0.0, max_new_tokens=6, ignore_eos=True)
    requests = [GenerationRequest(engine.tokenizer.encode(text), params) for text in ("a", "bb", "ccc", "dddd")]
    arrivals = Arrivals({0: requests[1:]})

    results = engine.generate_continuous(requests[:1], arrivals)

    # One row runs, so one may join. The two rows then finish at the same step, two more join
    # and finish together, and the last call finds nothing waiting.
    assert arrivals.calls == [1, 2, 2]
    assert [result.token_ids for result in results] == [single(engine, r.prompt_ids, params) for r in requests]


def test_extra_initial_requests_join_first(engine):
    params = SamplingParams(temperature=0.0, max_new_tokens=5, ignore_eos=True)
    requests = [GenerationRequest(engine.tokenizer.encode(f"{index}"), params) for index in range(6)]

    results = engine.generate_continuous(requests, lambda free_rows: [])

    assert [result.request_id for result in results] == [request.request_id for request in requests]
    assert all(result.completion_tokens == 5 for result in results)


def test_cancel_joined_row(engine):
    victim = GenerationRequest(engine.tokenizer.encode("Steel"), LONG)
    victim.on_update = lambda update: victim.cancel() if update.completion_tokens >= 3 else None
    running = GenerationRequest(engine.tokenizer.encode("钢铁"), LONG)

    running_result, victim_result = engine.generate_continuous([running], Arrivals({2: [victim]}))

    assert victim_result.finish_reason == FINISH_CANCELLED
    assert victim_result.completion_tokens < LONG.max_new_tokens
    assert running_result.token_ids == single(engine, running.prompt_ids, LONG)


def test_failure_reaches_joined_rows(loaded):
    engine = Engine(loaded.model, loaded.tokenizer, max_batch_size=4)
    finish_reasons = {}

    def on_update(update):
        if update.finish_reason is not None:
            finish_reasons[update.request_id] = update.finish_reason

    running, joining = [GenerationRequest([1, 2], LONG, request_id=f"r{index}", on_update=on_update) for index in range(2)]
    hooks = []

    def take_waiting(free_rows):
        if hooks:
            return []
        # Fail every forward pass from the prefill of the joining request on.
        hooks.append(loaded.model.register_forward_hook(lambda *_: 1 / 0))
        return [joining]

    try:
        with pytest.raises(ZeroDivisionError):
            engine.generate_continuous([running], take_waiting)
    finally:
        for hook in hooks:
            hook.remove()
    assert finish_reasons == {"r0": FINISH_ERROR, "r1": FINISH_ERROR}


def test_leaving_rows_shrink_cache(engine):
    tokenizer = engine.tokenizer
    params = SamplingParams(temperature=0.0, max_new_tokens=30, ignore_eos=True)
    long_prompt = chat_prompt(tokenizer, CONVERSATIONS[2][0])
    short_prompt = tokenizer.encode("S")
    rows = [_Row(GenerationRequest(long_prompt, params), engine), _Row(GenerationRequest(short_prompt, params), engine)]

    with torch.inference_mode():
        batch = engine._prefill(rows)
        assert batch.attention_mask.shape[1] == len(long_prompt)
        rows[0].finish(FINISH_CANCELLED)
        batch = batch.without_finished()

    assert batch.rows == [rows[1]]
    # Only the short row's prompt is left in the cache; its first sampled token goes in at the next step.
    assert batch.attention_mask.shape[1] == len(short_prompt)
    assert batch.cache.get_seq_length() == len(short_prompt)
    assert bool(batch.attention_mask.all())


def finish_order(engine, continuous_batching: bool) -> list[str]:
    """Return the order in which a long request and a short one, sent while the long one decodes, finish."""
    finished = []
    done = threading.Event()
    submitted = threading.Event()
    worker = GenerationWorker(engine, max_pending=8, continuous_batching=continuous_batching)
    short = GenerationRequest([1, 2, 3], SamplingParams(temperature=0.0, max_new_tokens=3, ignore_eos=True),
                              request_id="short")  # fmt: skip

    def on_update(update):
        # Submitted from the generating thread after the long request's first text, so the short
        # one arrives while the long one decodes.
        if update.request_id == "long" and not submitted.is_set():
            submitted.set()
            worker.submit(short)
        if update.finish_reason is not None:
            finished.append(update.request_id)
            if len(finished) == 2:
                done.set()

    short.on_update = on_update
    long = GenerationRequest(engine.tokenizer.encode("钢铁"), LONG, request_id="long", on_update=on_update)
    worker.submit(long)
    worker.start()
    try:
        assert done.wait(timeout=60)
    finally:
        worker.close()
    assert worker.continuous_batching == continuous_batching
    return finished


def test_worker_admits_request_mid_batch(engine):
    assert finish_order(engine, continuous_batching=True) == ["short", "long"]


def test_static_worker_runs_batch_to_end(engine):
    assert finish_order(engine, continuous_batching=False) == ["long", "short"]
