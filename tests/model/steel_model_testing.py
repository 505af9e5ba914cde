"""Tiny Steel models and inputs shared by the model tests."""

import pytest
import torch

from steel.model import SteelConfig, SteelForCausalLM

VOCAB_SIZE = 256
VARIANTS = ("soft_moe", "soft_moe_causal", "dense")
CAUSAL_VARIANTS = ("soft_moe_causal", "dense")


def tiny_config(ffn_type: str, **overrides) -> SteelConfig:
    """A 2-layer model whose Soft MoE visibly moves the logits (init std 0.1, 3 experts x 2 slots)."""
    fields = dict(
        vocab_size=VOCAB_SIZE,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rope_theta=10_000.0,
        initializer_range=0.1,
        ffn_type=ffn_type,
        n_experts=3,
        slots_per_expert=2,
        mlp_div_ratio=2,
    )
    fields.update(overrides)
    return SteelConfig(**fields)


def tiny_model(ffn_type: str, seed: int = 0, **overrides) -> SteelForCausalLM:
    torch.manual_seed(seed)
    model = SteelForCausalLM(tiny_config(ffn_type, **overrides)).eval()
    # Larger expert weights and a sharper dispatch softmax than at init make token mixing visible:
    # the double-SwiGLU expert is a product of four projections, so at std 0.1 its output is tiny.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("mlp.scale"):
                param.fill_(3.0)
            elif ".experts." in name:
                param.normal_(0.0, 0.5)
    return model


@pytest.fixture
def random_ids() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1234)
    return torch.randint(0, VOCAB_SIZE, (2, 12), generator=generator)
