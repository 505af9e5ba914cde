"""The engine on the three Steel FFN variants, with random weights and the tiny test tokenizer."""

import pytest
import torch

from steel.serve.engine import Engine, GenerationRequest
from steel.serve.sampling import SamplingParams

model_module = pytest.importorskip("steel.model")

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=12, ignore_eos=True)
SAMPLED = SamplingParams(temperature=1.0, top_p=0.9, top_k=20, max_new_tokens=12, seed=11, ignore_eos=True)


def steel_model(ffn_type: str, vocab_size: int):
    config = model_module.get_preset("steel-tiny")
    config.vocab_size = vocab_size
    config.ffn_type = ffn_type
    config.max_position_embeddings = 128
    torch.manual_seed(0)
    return model_module.SteelForCausalLM(config).eval()


def prompts(tokenizer) -> list[list[int]]:
    texts = ["你好", "Steel is made like this.", "钢铁是这样炼成的"]
    return [tokenizer.encode(text) for text in texts]


@pytest.mark.parametrize("ffn_type", ["soft_moe_causal", "dense"])
def test_causal_variant_batches_like_single(ffn_type, loaded):
    engine = Engine(steel_model(ffn_type, loaded.tokenizer.vocab_size), loaded.tokenizer, max_batch_size=4)
    assert engine.use_kv_cache
    assert engine.max_batch_size == 4
    for params in (GREEDY, SAMPLED):
        batched = engine.generate([GenerationRequest(ids, params) for ids in prompts(loaded.tokenizer)])
        single = [engine.generate([GenerationRequest(ids, params)])[0] for ids in prompts(loaded.tokenizer)]
        assert [result.token_ids for result in batched] == [result.token_ids for result in single]


@pytest.mark.parametrize("ffn_type", ["soft_moe_causal", "dense"])
def test_rows_leaving_batch_keep_tokens(ffn_type, loaded):
    # Rows with different token limits finish at different steps and leave the cache, which for
    # the causal Soft MoE also contains per-row running slot sums.
    engine = Engine(steel_model(ffn_type, loaded.tokenizer.vocab_size), loaded.tokenizer, max_batch_size=4)
    limits = [3, 12, 7]
    params = [SamplingParams(temperature=0.0, max_new_tokens=limit, ignore_eos=True) for limit in limits]
    pairs = list(zip(prompts(loaded.tokenizer), params))
    batched = engine.generate([GenerationRequest(ids, p) for ids, p in pairs])
    single = [engine.generate([GenerationRequest(ids, p)])[0] for ids, p in pairs]
    assert [len(result.token_ids) for result in batched] == limits
    assert [result.token_ids for result in batched] == [result.token_ids for result in single]


@pytest.mark.parametrize("ffn_type", ["soft_moe_causal", "dense"])
def test_joined_rows_match_single(ffn_type, loaded):
    # Rows join a running batch, so the KV tensors (and for the causal Soft MoE the per-row
    # running slot sums) of two caches are merged.
    engine = Engine(steel_model(ffn_type, loaded.tokenizer.vocab_size), loaded.tokenizer, max_batch_size=4)
    first, *later = prompts(loaded.tokenizer)
    waiting = [[GenerationRequest(later[0], SAMPLED)], [], [GenerationRequest(later[1], GREEDY)]]

    results = engine.generate_continuous([GenerationRequest(first, GREEDY)], lambda free_rows: waiting.pop(0) if waiting else [])

    single = [engine.generate([GenerationRequest(ids, params)])[0] for ids, params in zip(prompts(loaded.tokenizer), (GREEDY, SAMPLED, GREEDY))]
    assert [result.token_ids for result in results] == [result.token_ids for result in single]


@pytest.mark.parametrize("ffn_type", ["soft_moe_causal", "dense"])
def test_causal_variant_cache_matches_recompute(ffn_type, loaded):
    model = steel_model(ffn_type, loaded.tokenizer.vocab_size)
    cached = Engine(model, loaded.tokenizer, max_batch_size=4)
    recomputed = Engine(model, loaded.tokenizer, use_kv_cache=False)
    requests = lambda: [GenerationRequest(ids, GREEDY) for ids in prompts(loaded.tokenizer)]  # noqa: E731
    assert [r.token_ids for r in cached.generate(requests())] == [r.token_ids for r in recomputed.generate(requests())]


def test_soft_moe_serves_one_at_a_time(loaded):
    model = steel_model("soft_moe", loaded.tokenizer.vocab_size)
    engine = Engine(model, loaded.tokenizer, max_batch_size=8)
    assert not engine.use_kv_cache
    assert engine.max_batch_size == 1

    prompt = prompts(loaded.tokenizer)[0]
    result = engine.generate([GenerationRequest(prompt, GREEDY)])[0]

    # Reference: greedy decoding by full forward passes over the whole sequence.
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(GREEDY.max_new_tokens):
            ids.append(int(model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1].argmax()))
    assert result.token_ids == ids[len(prompt) :]
