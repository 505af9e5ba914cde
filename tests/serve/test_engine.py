import threading

import pytest
import torch

from steel.serve.engine import (
    FINISH_CANCELLED,
    FINISH_LENGTH,
    FINISH_STOP,
    Engine,
    GenerationRequest,
    GenerationWorker,
    ServerBusy,
    collect_stop_ids,
)
from steel.serve.decoding import REPLACEMENT_CHARACTER
from steel.serve.sampling import SamplingParams
from steel.tokenizer import ENDOFTEXT, IM_END, IM_START
from steel.tokenizer.chat import encode_chat

from serve_testing import CONVERSATIONS

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=40)


@pytest.fixture(scope="module")
def engine(loaded):
    return Engine(loaded.model, loaded.tokenizer, max_batch_size=4)


def chat_prompt(tokenizer, text: str) -> list[int]:
    return encode_chat(tokenizer, [{"role": "user", "content": text}], add_generation_prompt=True)[0]


def test_stop_ids_are_union_of_sources(loaded):
    stop_ids = collect_stop_ids(loaded.model, loaded.tokenizer)
    special = loaded.tokenizer.special_ids
    assert {special[IM_END], special[ENDOFTEXT], special[IM_START], loaded.model.config.eos_token_id} <= stop_ids


def test_greedy_reply_stops_at_im_end(engine):
    # The model learned to go on with an invented user turn after each reply; none of it may show.
    for user, reply in CONVERSATIONS:
        result = engine.generate([GenerationRequest(chat_prompt(engine.tokenizer, user), GREEDY)])[0]
        assert result.text == reply
        assert result.finish_reason == FINISH_STOP
        assert result.token_ids[-1] == engine.tokenizer.special_ids[IM_END]


def test_streamed_deltas_are_whole_characters(engine):
    updates = []
    request = GenerationRequest(chat_prompt(engine.tokenizer, "你好"), GREEDY, on_update=updates.append)
    result = engine.generate([request])[0]
    texts = [update.text for update in updates if update.text]
    assert len(texts) >= 4
    assert all(REPLACEMENT_CHARACTER not in text for text in texts)
    assert "".join(texts) == result.text == "你好，世界！"
    assert updates[-1].finish_reason == FINISH_STOP
    assert [update.finish_reason for update in updates].count(None) == len(updates) - 1


def test_cached_matches_transformers_generate(engine, loaded):
    for prompt in (engine.tokenizer.encode("钢铁"), chat_prompt(engine.tokenizer, "hello")):
        ours = engine.generate([GenerationRequest(prompt, GREEDY)])[0].token_ids
        output = loaded.model.generate(
            torch.tensor([prompt]),
            max_new_tokens=GREEDY.max_new_tokens,
            do_sample=False,
            eos_token_id=sorted(engine.stop_ids),
            pad_token_id=engine.pad_id,
        )
        theirs = output[0, len(prompt) :].tolist()
        assert ours == theirs[: len(ours)]
        assert ours[-1] in engine.stop_ids


@pytest.mark.parametrize("params", [
    SamplingParams(temperature=0.0, max_new_tokens=30, ignore_eos=True),
    SamplingParams(temperature=1.0, top_p=0.95, top_k=40, repetition_penalty=1.2, max_new_tokens=30, seed=3),
], ids=["greedy", "sampled"])  # fmt: skip
def test_batched_equals_single_prompt(engine, params):
    # Prompts of different lengths, so the batch is left-padded.
    prompts = [chat_prompt(engine.tokenizer, user) for user, _ in CONVERSATIONS]
    prompts.append(engine.tokenizer.encode("钢铁"))
    assert len({len(prompt) for prompt in prompts}) > 1

    batched = engine.generate([GenerationRequest(prompt, params) for prompt in prompts])
    single = [engine.generate([GenerationRequest(prompt, params)])[0] for prompt in prompts]
    assert [result.token_ids for result in batched] == [result.token_ids for result in single]
    assert [result.text for result in batched] == [result.text for result in single]


def test_full_recompute_matches_cache(loaded, engine):
    # The path the faithful soft_moe variant takes: no KV cache, one request at a time.
    uncached = Engine(loaded.model, loaded.tokenizer, max_batch_size=4, use_kv_cache=False)
    assert uncached.max_batch_size == 1
    params = SamplingParams(temperature=0.0, max_new_tokens=16, ignore_eos=True)
    prompts = [chat_prompt(engine.tokenizer, "你好"), engine.tokenizer.encode("Steel")]
    cached = [result.token_ids for result in engine.generate([GenerationRequest(p, params) for p in prompts])]
    recomputed = [result.token_ids for result in uncached.generate([GenerationRequest(p, params) for p in prompts])]
    assert recomputed == cached


def test_max_new_tokens_ends_with_length(engine):
    params = SamplingParams(temperature=0.0, max_new_tokens=3)
    result = engine.generate([GenerationRequest(chat_prompt(engine.tokenizer, "你好"), params)])[0]
    assert result.finish_reason == FINISH_LENGTH
    assert result.completion_tokens == 3


def test_stop_string_cuts_output(engine):
    params = SamplingParams(temperature=0.0, max_new_tokens=40, stop=("世界",))
    result = engine.generate([GenerationRequest(chat_prompt(engine.tokenizer, "你好"), params)])[0]
    assert result.text == "你好，"
    assert result.finish_reason == FINISH_STOP


def test_cancel_stops_one_row_of_batch(engine):
    params = SamplingParams(temperature=0.0, max_new_tokens=60, ignore_eos=True)
    victim = GenerationRequest(engine.tokenizer.encode("钢铁"), params)

    def cancel_after_five(update):
        if update.completion_tokens >= 5:
            victim.cancel()

    victim.on_update = cancel_after_five
    survivor = GenerationRequest(engine.tokenizer.encode("Steel"), params)
    victim_result, survivor_result = engine.generate([victim, survivor])
    assert victim_result.finish_reason == FINISH_CANCELLED
    assert victim_result.completion_tokens < 60
    assert survivor_result.finish_reason == FINISH_LENGTH
    assert survivor_result.completion_tokens == 60


def test_worker_batches_waiting_requests(engine):
    worker = GenerationWorker(engine, max_pending=8)
    prompts = [chat_prompt(engine.tokenizer, user) for user, _ in CONVERSATIONS]
    done = threading.Event()
    finished = []

    def on_update(update):
        if update.finish_reason is not None:
            finished.append(update.request_id)
            if len(finished) == len(prompts):
                done.set()

    # Submitted before the thread starts, so all three wait and form one batch.
    requests = [GenerationRequest(prompt, GREEDY, on_update=on_update) for prompt in prompts]
    for request in requests:
        worker.submit(request)
    worker.start()
    assert done.wait(timeout=60)
    worker.close()

    results = {result.request_id: result.text for result in worker.recent}
    assert [results[request.request_id] for request in requests] == [reply for _, reply in CONVERSATIONS]


def test_worker_rejects_when_queue_full(engine):
    worker = GenerationWorker(engine, max_pending=1)
    worker.submit(GenerationRequest([1], GREEDY))
    with pytest.raises(ServerBusy):
        worker.submit(GenerationRequest([1], GREEDY))


def test_failure_reaches_every_request(loaded):
    # A failing forward pass must end every request with an error, including those of later batches.
    engine = Engine(loaded.model, loaded.tokenizer, max_batch_size=1)
    finish_reasons = []

    def on_update(update):
        if update.finish_reason is not None:
            finish_reasons.append(update.finish_reason)

    requests = [GenerationRequest([1, 2], GREEDY, on_update=on_update) for _ in range(3)]
    hook = loaded.model.register_forward_hook(lambda *_: 1 / 0)
    try:
        with pytest.raises(ZeroDivisionError):
            engine.generate(requests)
    finally:
        hook.remove()
    assert finish_reasons == ["error"] * 3
