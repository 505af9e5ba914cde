import torch

from steel.serve.sampling import (
    SamplerState,
    SamplingParams,
    apply_repetition_penalty,
    filter_top_k,
    filter_top_p,
    sample_next_token,
)


def test_top_k_keeps_k_largest():
    logits = torch.tensor([1.0, 4.0, 3.0, 2.0])
    kept = torch.isfinite(filter_top_k(logits, 2))
    assert kept.tolist() == [False, True, True, False]


def test_top_p_keeps_smallest_nucleus():
    probabilities = torch.tensor([0.5, 0.3, 0.15, 0.05])
    kept = torch.isfinite(filter_top_p(probabilities.log(), 0.8))
    assert kept.tolist() == [True, True, False, False]


def test_top_p_always_keeps_most_likely():
    logits = torch.tensor([0.0, 10.0, 0.0])
    kept = torch.isfinite(filter_top_p(logits, 0.01))
    assert kept.tolist() == [False, True, False]


def test_repetition_penalty_pushes_seen_tokens_down():
    logits = torch.tensor([2.0, -2.0, 2.0])
    seen = torch.tensor([True, True, False])
    penalized = apply_repetition_penalty(logits, seen, 2.0)
    assert penalized.tolist() == [1.0, -4.0, 2.0]


def test_greedy_picks_argmax():
    state = SamplerState.create(SamplingParams(temperature=0.0), [], vocab_size=5)
    assert sample_next_token(torch.tensor([0.1, 0.2, 3.0, 0.4, 0.5]), state) == 2


def test_seed_makes_sampling_reproducible():
    logits = torch.zeros(1000)
    params = SamplingParams(temperature=1.0, top_p=1.0, seed=7)
    first = [sample_next_token(logits, state) for state in [SamplerState.create(params, [], 1000)] for _ in range(20)]
    second = [sample_next_token(logits, state) for state in [SamplerState.create(params, [], 1000)] for _ in range(20)]
    assert first == second
    assert len(set(first)) > 1


def test_repetition_penalty_includes_prompt():
    params = SamplingParams(temperature=0.0, repetition_penalty=10.0)
    state = SamplerState.create(params, prompt_ids=[0], vocab_size=2)
    assert sample_next_token(torch.tensor([2.0, 1.0]), state) == 1


def test_invalid_params_are_all_reported():
    params = SamplingParams(max_new_tokens=0, temperature=-1, top_p=0.0, top_k=-1, repetition_penalty=0.0, stop=("",))
    problems = params.problems()
    assert len(problems) == 6
    assert any("top_p" in problem for problem in problems)


def test_seed_outside_64_bits_is_invalid():
    assert SamplingParams(seed=2**64 - 1).problems() == []
    problems = SamplingParams(seed=10**23).problems()
    assert len(problems) == 1
    assert "seed must be a 64-bit integer" in problems[0]
