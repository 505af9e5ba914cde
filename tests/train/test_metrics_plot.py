import pytest

from steel.train.metrics import MetricsLogger, flops_per_token, peak_flops, read_metrics
from steel.train.plot import plot_run, run_label


@pytest.mark.parametrize(
    "name, expected",
    [("NVIDIA H200", 989e12), ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12),
     ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA GeForce GTX 1080", None), ("Some Future GPU", None)],
)
def test_peak_table(name, expected):
    assert peak_flops(name) == expected


def test_resumed_steps_drawn_once(tmp_path):
    metrics = MetricsLogger(tmp_path, enabled=True)
    metrics.write("start", step=0)
    for step in range(1, 6):
        metrics.write("train", step=step, tokens=step * 10, loss=10.0 - step, lr=0.1)
    metrics.write("val", step=4, tokens=40, val_loss=7.0)
    metrics.write("start", step=3)  # killed after step 5, resumed from the step-3 checkpoint
    for step in range(4, 7):
        metrics.write("train", step=step, tokens=step * 10, loss=100.0 + step, lr=0.1)
    with open(tmp_path / "metrics.jsonl", "a") as handle:
        handle.write('{"kind": "train", "step": 7, "lo')  # a line cut short by a kill

    records = read_metrics(tmp_path)
    train = [(r["step"], r["loss"]) for r in records if r["kind"] == "train"]
    assert train == [(1, 9.0), (2, 8.0), (3, 7.0), (4, 104.0), (5, 105.0), (6, 106.0)]
    assert not [r for r in records if r["kind"] == "val"]

    paths = plot_run(tmp_path)
    assert [p.name for p in paths] == ["loss.png", "lr.png"]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_run_label_names_generic_run_by_parent(tmp_path):
    assert run_label(tmp_path / "demo" / "sft" / "run") == "sft/run"
    assert run_label(tmp_path / "pretrain-tiny") == "pretrain-tiny"


def test_plot_needs_metrics(tmp_path):
    with pytest.raises(ValueError, match="metrics.jsonl"):
        plot_run(tmp_path)


def test_flops_per_token_counts_steel_variant():
    from steel.model.presets import get_preset

    causal = flops_per_token(get_preset("steel-tiny"), 128)
    config = get_preset("steel-tiny")
    config.ffn_type = "soft_moe"
    faithful = flops_per_token(config, 128)
    assert causal > 0
    assert faithful > 0
    assert causal != faithful


def test_flops_per_token_transformers_config(qwen2_config):
    from steel.train.load import read_model_config

    config = read_model_config(qwen2_config)
    value = flops_per_token(config, 32)
    # 6 x matmul parameters (layers and output layer) plus attention scores.
    matmul = 2 * (32 * 8 * (2 * 4 + 2 * 2) + 3 * 32 * 64) + 32 * 256
    assert value == pytest.approx(6 * matmul + 12 * 2 * 4 * 8 * 32)
