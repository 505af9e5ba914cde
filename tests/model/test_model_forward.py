import logging

import pytest
import torch
import torch.nn.functional as F

from steel.model import SteelForCausalLM, get_preset
from steel.model.modeling_steel import DoubleSwiGLU

from steel_model_testing import CAUSAL_VARIANTS, VARIANTS, VOCAB_SIZE, random_ids, tiny_model  # noqa: F401

ATOL = 1e-5


def count_parameters(preset: str) -> int:
    with torch.device("meta"):
        model = SteelForCausalLM(get_preset(preset))
    return sum(p.numel() for p in model.parameters())


def test_steel_1b_parameter_count():
    assert count_parameters("steel-1b") == 1_122_922_770
    assert count_parameters("steel-1b-causal") == 1_122_922_770


def test_small_presets_fit_a_cpu():
    assert 0.5e6 < count_parameters("steel-tiny") < 2e6
    assert 4e6 < count_parameters("steel-small") < 8e6


def test_unknown_preset_names_choices():
    with pytest.raises(ValueError, match="steel-tiny"):
        get_preset("steel-huge")


def test_preset_rejects_misspelt_override():
    with pytest.raises(ValueError, match="num_layers"):
        get_preset("steel-tiny", num_layers=3)
    assert get_preset("steel-tiny", vocab_size=300).vocab_size == 300


@pytest.mark.parametrize("ffn_type", VARIANTS)
def test_padding_keeps_real_logits(ffn_type, random_ids):
    model = tiny_model(ffn_type)
    ids = random_ids[:1]
    pad = torch.zeros(1, 3, dtype=torch.long)
    ones, zeros = torch.ones_like(ids), torch.zeros_like(pad)

    with torch.no_grad():
        reference = model(ids).logits
        left = model(torch.cat([pad, ids], 1), attention_mask=torch.cat([zeros, ones], 1)).logits[:, 3:]
        right = model(torch.cat([ids, pad], 1), attention_mask=torch.cat([ones, zeros], 1)).logits[:, :12]

    torch.testing.assert_close(left, reference, atol=ATOL, rtol=0)
    torch.testing.assert_close(right, reference, atol=ATOL, rtol=0)


@pytest.mark.parametrize("ffn_type", ["soft_moe", "soft_moe_causal"])
def test_padding_gets_zero_ffn_output(ffn_type):
    model = tiny_model(ffn_type)
    hidden = torch.randn(1, 8, 64)
    token_valid = torch.tensor([[False, False, True, True, True, True, False, False]])

    output = model.model.layers[0].mlp(hidden, token_valid, None)

    assert output[~token_valid].abs().max() == 0
    assert output[token_valid].abs().min() > 0


@pytest.mark.parametrize("ffn_type", VARIANTS)
def test_packed_segments_do_not_mix(ffn_type, random_ids):
    model = tiny_model(ffn_type)
    first, second = random_ids[0, :7], random_ids[1, :5]
    segment_ids = torch.tensor([[3] * 7 + [8] * 5])
    other_second = (second + 1) % VOCAB_SIZE

    with torch.no_grad():
        packed = model(torch.cat([first, second])[None], segment_ids=segment_ids).logits
        packed_other = model(torch.cat([first, other_second])[None], segment_ids=segment_ids).logits
        alone_first = model(first[None]).logits
        alone_second = model(second[None]).logits

    torch.testing.assert_close(packed_other[:, :7], packed[:, :7], atol=ATOL, rtol=0)
    torch.testing.assert_close(packed[:, :7], alone_first, atol=ATOL, rtol=0)
    torch.testing.assert_close(packed[:, 7:], alone_second, atol=ATOL, rtol=0)


@pytest.mark.parametrize("ffn_type", VARIANTS)
def test_packing_with_padding(ffn_type, random_ids):
    model = tiny_model(ffn_type)
    first, second = random_ids[0, :6], random_ids[1, :4]
    ids = torch.cat([first, second, torch.zeros(2, dtype=torch.long)])[None]
    segment_ids = torch.tensor([[0] * 6 + [1] * 4 + [2] * 2])
    attention_mask = torch.tensor([[1] * 10 + [0] * 2])

    with torch.no_grad():
        packed = model(ids, attention_mask=attention_mask, segment_ids=segment_ids).logits
        alone_second = model(second[None]).logits

    torch.testing.assert_close(packed[:, 6:10], alone_second, atol=ATOL, rtol=0)


@pytest.mark.parametrize("ffn_type", CAUSAL_VARIANTS)
def test_causal_variants_ignore_future_tokens(ffn_type, random_ids):
    model = tiny_model(ffn_type)
    changed = random_ids.clone()
    changed[:, 6:] = (changed[:, 6:] + 17) % VOCAB_SIZE

    with torch.no_grad():
        original = model(random_ids).logits
        after_change = model(changed).logits

    torch.testing.assert_close(after_change[:, :6], original[:, :6], atol=1e-6, rtol=0)


def test_soft_moe_sees_future_tokens(random_ids):
    # The faithful Soft MoE dispatches over the whole sequence, so a later token moves earlier logits.
    model = tiny_model("soft_moe")
    changed = random_ids.clone()
    changed[:, -1] = (changed[:, -1] + 17) % VOCAB_SIZE

    with torch.no_grad():
        original = model(random_ids).logits
        after_change = model(changed).logits

    assert (after_change[:, 0] - original[:, 0]).abs().max() > 1e-3


@pytest.mark.parametrize("ffn_type", CAUSAL_VARIANTS)
def test_kv_cache_matches_full_forward(ffn_type, random_ids):
    model = tiny_model(ffn_type)

    with torch.no_grad():
        full = model(random_ids).logits
        prefill = model(random_ids[:, :5], use_cache=True)
        cache = prefill.past_key_values
        chunk = model(random_ids[:, 5:8], past_key_values=cache, use_cache=True)
        steps = [model(random_ids[:, t : t + 1], past_key_values=cache, use_cache=True).logits for t in range(8, 12)]

    cached = torch.cat([prefill.logits, chunk.logits, *steps], dim=1)
    torch.testing.assert_close(cached, full, atol=ATOL, rtol=0)


@pytest.mark.parametrize("ffn_type", CAUSAL_VARIANTS)
def test_kv_cache_with_left_padding(ffn_type, random_ids):
    model = tiny_model(ffn_type)
    ids = torch.cat([torch.zeros(2, 2, dtype=torch.long), random_ids], 1)
    attention_mask = torch.ones_like(ids)
    attention_mask[0, :2] = 0

    with torch.no_grad():
        full = model(ids, attention_mask=attention_mask).logits
        prefill = model(ids[:, :9], attention_mask=attention_mask[:, :9], use_cache=True)
        cache = prefill.past_key_values
        steps = [
            model(ids[:, t : t + 1], attention_mask=attention_mask[:, : t + 1], past_key_values=cache, use_cache=True).logits
            for t in range(9, 14)
        ]

    cached = torch.cat([prefill.logits, *steps], dim=1)
    torch.testing.assert_close(cached[0, 2:], full[0, 2:], atol=ATOL, rtol=0)
    torch.testing.assert_close(cached[1], full[1], atol=ATOL, rtol=0)


def record_ffn_positions(model: SteelForCausalLM) -> list[int]:
    """Record how many positions each call feeds through the first layer's FFN."""
    positions: list[int] = []
    mlp = model.model.layers[0].mlp
    mlp.register_forward_hook(lambda module, args, output: positions.append(args[0].shape[1]))
    return positions


def test_causal_decoding_step_feeds_one_position(random_ids):
    model = tiny_model("soft_moe_causal")
    positions = record_ffn_positions(model)
    expert_inputs: list[tuple[int, ...]] = []
    model.model.layers[0].mlp.experts[0].register_forward_hook(
        lambda module, args, output: expert_inputs.append(tuple(args[0].shape))
    )

    with torch.no_grad():
        cache = model(random_ids[:, :10], use_cache=True).past_key_values
        model(random_ids[:, 10:11], past_key_values=cache, use_cache=True)

    assert positions == [10, 1]
    # Expert inputs are [batch, positions, slots_per_expert, hidden]: one position's slots per step.
    assert expert_inputs == [(2, 10, 2, 64), (2, 1, 2, 64)]


@pytest.mark.parametrize("ffn_type", VARIANTS)
def test_generate_same_with_and_without_cache(ffn_type, random_ids):
    model = tiny_model(ffn_type)
    settings = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)

    with_cache = model.generate(random_ids, use_cache=True, **settings)
    without_cache = model.generate(random_ids, use_cache=False, **settings)

    assert with_cache.shape == (2, 18)
    assert torch.equal(with_cache, without_cache)


@pytest.mark.parametrize("ffn_type", VARIANTS)
def test_generate_equals_manual_greedy(ffn_type, random_ids):
    model = tiny_model(ffn_type)
    ids = random_ids[:1, :8]

    generated = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
    manual = ids
    with torch.no_grad():
        for _ in range(4):
            next_id = model(manual).logits[:, -1].argmax(-1, keepdim=True)
            manual = torch.cat([manual, next_id], 1)

    assert torch.equal(generated, manual)


@pytest.mark.parametrize("ffn_type", VARIANTS)
def test_generate_left_padded_batch(ffn_type, random_ids):
    model = tiny_model(ffn_type)
    alone = model.generate(random_ids[:1, :8], max_new_tokens=5, do_sample=False, pad_token_id=0)
    batch = torch.stack([torch.cat([torch.zeros(4, dtype=torch.long), random_ids[0, :8]]), random_ids[1]])
    attention_mask = torch.ones_like(batch)
    attention_mask[0, :4] = 0

    batched = model.generate(batch, attention_mask=attention_mask, max_new_tokens=5, do_sample=False, pad_token_id=0)

    assert torch.equal(batched[0, 12:], alone[0, 8:])


def test_soft_moe_generate_recomputes_prefix(random_ids):
    model = tiny_model("soft_moe")
    positions = record_ffn_positions(model)

    model.generate(random_ids[:1, :8], max_new_tokens=3, do_sample=False, pad_token_id=0)

    assert positions == [8, 9, 10]


def test_soft_moe_cache_needs_opt_in(random_ids):
    model = tiny_model("soft_moe")
    with torch.no_grad():
        output = model(random_ids, use_cache=True)
    assert output.past_key_values is None

    cache_model = tiny_model("soft_moe", soft_moe_cached_decoding=True)
    with torch.no_grad():
        cache = cache_model(random_ids[:, :8], use_cache=True).past_key_values
    with pytest.raises(ValueError, match="soft_moe_cached_decoding"):
        model(random_ids[:, 8:9], past_key_values=cache)


def test_soft_moe_cached_decoding_warns(random_ids, caplog):
    model = tiny_model("soft_moe", soft_moe_cached_decoding=True)
    with caplog.at_level(logging.WARNING):
        cached = model.generate(random_ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert "cached decoding" in caplog.text
    assert cached.shape == (2, 16)


def test_labels_give_shifted_loss(random_ids):
    model = tiny_model("soft_moe_causal")
    labels = random_ids.clone()
    labels[:, :4] = -100

    output = model(random_ids, labels=labels)

    expected = F.cross_entropy(output.logits[:, :-1].reshape(-1, VOCAB_SIZE), labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(output.loss, expected)


def test_hidden_states_without_logits(random_ids):
    model = tiny_model("soft_moe_causal")
    with torch.no_grad():
        hidden = model.model(random_ids).last_hidden_state
        logits = model(random_ids).logits
    assert hidden.shape == (2, 12, 64)
    torch.testing.assert_close(model.lm_head(hidden), logits)


@pytest.mark.parametrize("ffn_type", VARIANTS)
def test_backward_with_padding_is_finite(ffn_type, random_ids):
    model = tiny_model(ffn_type).train()
    attention_mask = torch.ones_like(random_ids)
    attention_mask[0, :5] = 0
    labels = random_ids.masked_fill(attention_mask == 0, -100)

    model(random_ids, attention_mask=attention_mask, labels=labels).loss.backward()

    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name


def test_bf16_forward_runs(random_ids):
    model = tiny_model("soft_moe_causal").to(torch.bfloat16)
    with torch.no_grad():
        logits = model(random_ids).logits
    assert logits.dtype == torch.bfloat16
    assert torch.isfinite(logits.float()).all()


def test_swiglu_expert_option():
    model = tiny_model("soft_moe_causal", expert_type="swiglu")
    expert = model.model.layers[0].mlp.experts[0]
    assert not isinstance(expert, DoubleSwiGLU)
    assert set(dict(expert.named_parameters())) == {"gate_proj.weight", "up_proj.weight", "down_proj.weight"}


def test_router_init():
    model = tiny_model("soft_moe_causal", hidden_size=256, num_attention_heads=4)
    mlp = model.model.layers[0].mlp
    assert mlp.phi.shape == (256, 3, 2)
    assert abs(mlp.phi.std().item() - 1 / 16) < 0.01
    reinitialised = SteelForCausalLM(model.config)
    assert reinitialised.model.layers[0].mlp.scale.item() == 1.0


def test_gradient_checkpointing_same_loss(random_ids):
    model = tiny_model("soft_moe_causal").train()
    loss = model(random_ids, labels=random_ids).loss
    model.gradient_checkpointing_enable()
    checkpointed = model(random_ids, labels=random_ids).loss
    torch.testing.assert_close(checkpointed, loss)


@pytest.mark.parametrize("ffn_type", CAUSAL_VARIANTS)
def test_beam_search_same_with_and_without_cache(ffn_type, random_ids):
    model = tiny_model(ffn_type)
    settings = dict(max_new_tokens=4, do_sample=False, num_beams=3, num_return_sequences=2, pad_token_id=0)

    with_cache = model.generate(random_ids, use_cache=True, **settings)
    without_cache = model.generate(random_ids, use_cache=False, **settings)

    assert with_cache.shape == (4, 16)
    assert torch.equal(with_cache, without_cache)


def test_causal_logits_recompute_prefixes(random_ids):
    from steel.model.scoring import causal_logits

    model = tiny_model("soft_moe")
    assert not model.config.is_causal

    with torch.no_grad():
        one_pass = model(random_ids).logits
        prefix_7 = model(random_ids[:, :7]).logits[:, -1]
    recomputed = causal_logits(model, random_ids)

    torch.testing.assert_close(recomputed[:, 6], prefix_7, atol=ATOL, rtol=0)
    torch.testing.assert_close(recomputed[:, -1], one_pass[:, -1], atol=ATOL, rtol=0)
    assert (recomputed[:, 0] - one_pass[:, 0]).abs().max() > 1e-3


def test_causal_logits_one_pass_for_causal_variant(random_ids):
    from steel.model.scoring import causal_logits

    model = tiny_model("soft_moe_causal")
    assert model.config.is_causal
    with torch.no_grad():
        torch.testing.assert_close(causal_logits(model, random_ids), model(random_ids).logits)


def test_output_hidden_states(random_ids):
    model = tiny_model("soft_moe_causal")
    with torch.no_grad():
        output = model(random_ids, output_hidden_states=True)
        hidden = model.model(random_ids).last_hidden_state

    assert len(output.hidden_states) == model.config.num_hidden_layers + 1
    torch.testing.assert_close(output.hidden_states[0], model.model.embed_tokens(random_ids))
    torch.testing.assert_close(output.hidden_states[-1], hidden)
    with pytest.raises(ValueError, match="output_attentions"):
        model(random_ids, output_attentions=True)


def test_long_packed_row_keeps_segments_apart():
    # Rounding in the earlier segments' running sums must not reach a later segment.
    model = tiny_model("soft_moe_causal", max_position_embeddings=1024)
    ids = torch.randint(0, VOCAB_SIZE, (1, 1024), generator=torch.Generator().manual_seed(5))
    segment_ids = torch.zeros_like(ids)
    segment_ids[:, 1000:] = 1

    with torch.no_grad():
        packed = model(ids, segment_ids=segment_ids).logits[:, 1000:]
        alone = model(ids[:, 1000:]).logits

    torch.testing.assert_close(packed, alone, atol=1e-6, rtol=0)
