import pytest

from steel.cli import main as steel_main
from steel.model.flops import count_flops, flops_per_token
from steel_model_testing import tiny_config


def test_info_prints_steel_1b_parameters(capsys):
    assert steel_main(["model", "info", "steel-1b"]) == 0
    output = capsys.readouterr().out
    assert "parameters: 1,122,922,770" in output
    assert "  hidden_size: 1792" in output
    assert "  ffn_type: soft_moe" in output


def test_info_reads_yaml_recipe(tmp_path, capsys):
    recipe = tmp_path / "model.yaml"
    recipe.write_text("model:\n  preset: steel-tiny\n  vocab_size: 512\n  ffn_type: dense\n")
    assert steel_main(["model", "info", str(recipe)]) == 0
    output = capsys.readouterr().out
    assert "  vocab_size: 512" in output
    assert "  ffn_type: dense" in output


def test_info_unknown_model_names_choices():
    with pytest.raises(SystemExit, match="steel-tiny"):
        steel_main(["model", "info", "steel-huge"])


def forward_flops_by_hand(ffn_type: str, seq_len: int) -> int:
    """Matmul FLOPs of one forward pass over one sequence of the tiny config, written out."""
    config = tiny_config(ffn_type)
    d, layers, vocab = config.hidden_size, config.num_hidden_layers, config.vocab_size
    kv = config.num_key_value_heads * config.head_dim
    slots = config.n_experts * config.slots_per_expert
    expert = 4 * d * config.expert_size  # double SwiGLU: four d x expert_size projections

    attention = 2 * seq_len * (2 * d * d + 2 * d * kv) + 2 * 2 * seq_len * seq_len * d
    if ffn_type == "dense":
        ffn = 2 * seq_len * 3 * d * config.intermediate_size
    elif ffn_type == "soft_moe":
        # Router logits, slot sums and combine are three [seq, d] x [d, slots] matmuls.
        ffn = 3 * 2 * seq_len * d * slots + 2 * slots * expert
    else:
        # The causal slot sums are cumulative sums (not matmuls); experts run per position.
        ffn = 2 * 2 * seq_len * d * slots + 2 * seq_len * slots * expert
    return layers * (attention + ffn) + 2 * seq_len * d * vocab


@pytest.mark.parametrize("ffn_type", ["soft_moe", "soft_moe_causal", "dense"])
def test_flops_match_hand_count(ffn_type):
    config = tiny_config(ffn_type)
    forward = forward_flops_by_hand(ffn_type, 32)
    assert count_flops(config, 32, training=False) == forward
    # Backward costs two forward passes for every matmul in this model.
    assert count_flops(config, 32, training=True) == 3 * forward


def test_flops_per_token_depends_on_variant():
    faithful = flops_per_token(tiny_config("soft_moe"), 64)
    causal = flops_per_token(tiny_config("soft_moe_causal"), 64)
    assert causal > faithful


def test_info_rejects_misspelt_field(tmp_path):
    recipe = tmp_path / "model.yaml"
    recipe.write_text("model:\n  preset: steel-tiny\n  hiden_size: 64\n")
    with pytest.raises(SystemExit, match="hiden_size"):
        steel_main(["model", "info", str(recipe)])
