import math
import os

import pytest
import torch
from safetensors.torch import load_file

from steel.train import checkpoint as ckpt
from steel.train.trainer import NonFiniteLossError, build_optimizer, split_micro_batches
from train_toys import build_trainer, read_losses, toy_config


def test_tiny_run_loss_drops(tmp_path, qwen2_config, toy_tokens, single_process):
    config = toy_config(tmp_path / "run", qwen2_config, **{
        "schedule.max_steps": 30, "optimizer.lr": 1e-2, "logging.eval_interval": 15,
    })
    trainer = build_trainer(config, single_process, toy_tokens)
    state = trainer.fit()

    losses = read_losses(tmp_path / "run")
    assert state.step == 30
    assert state.tokens == 30 * 8 * 32
    assert abs(losses[1] - math.log(256)) < 0.2
    assert sum(losses[k] for k in range(26, 31)) / 5 < losses[1] - 1.0
    assert (tmp_path / "run" / "config.yaml").is_file()
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "run")] == ["step-00000030"]

    records = [r for r in ckpt_records(tmp_path / "run") if r["kind"] == "val"]
    assert [r["step"] for r in records] == [15, 30]
    assert records[1]["val_loss"] < records[0]["val_loss"]


def ckpt_records(run_dir):
    from steel.train.metrics import read_metrics

    return read_metrics(run_dir)


def test_split_micro_batches_dict():
    batch = {"input_ids": torch.arange(12).reshape(6, 2), "labels": torch.arange(12).reshape(6, 2)}
    pieces = split_micro_batches(batch, 2)
    assert len(pieces) == 3
    assert torch.equal(pieces[2]["labels"], torch.tensor([[8, 9], [10, 11]]))


def test_token_weighted_loss_across_micro_batches(tmp_path, qwen2_config, toy_tokens, single_process):
    # Micro-batches with 1 and 7 targets: the step loss is the mean over all 8 targets.
    from steel.train.loss import IGNORE_INDEX, CausalLMLoss

    config = toy_config(tmp_path / "run", qwen2_config, **{"batch.global_batch_size": 2, "batch.micro_batch_size": 1})
    trainer = build_trainer(config, single_process, toy_tokens)
    input_ids = torch.tensor(toy_tokens[:16]).reshape(2, 8)
    labels = torch.tensor(toy_tokens[1:17]).reshape(2, 8).clone()
    labels[0, :7] = IGNORE_INDEX
    labels[1, 7] = IGNORE_INDEX
    batch = {"input_ids": input_ids, "labels": labels}

    loss, _, _ = trainer.accumulate_gradients(batch)
    with torch.no_grad():
        total = CausalLMLoss()(trainer.model, batch)["loss_sum"]
    assert loss == pytest.approx(float(total) / 8, rel=1e-5)


def test_weight_decay_groups(tmp_path, qwen2_config, toy_tokens, single_process):
    config = toy_config(tmp_path / "run", qwen2_config, **{"optimizer.weight_decay_scope": "matrices"})
    trainer = build_trainer(config, single_process, toy_tokens)
    decayed, not_decayed = trainer.optimizer.param_groups
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    assert decayed["weight_decay"] == 0.05
    assert not_decayed["weight_decay"] == 0.0
    assert "lm_head.weight" in {names[id(p)] for p in decayed["params"]}
    skipped = {names[id(p)] for p in not_decayed["params"]}
    assert "model.embed_tokens.weight" in skipped
    assert "model.norm.weight" in skipped
    assert "model.layers.0.self_attn.q_proj.bias" in skipped

    everything = build_optimizer(trainer.model, toy_config(tmp_path / "r2", qwen2_config), torch.device("cpu"))
    assert len(everything.param_groups) == 1


class NaNAtSteps:
    """Wraps a loss to return NaN for the given (0-based) optimizer steps."""

    def __init__(self, inner, steps, grad_accum_steps):
        self.inner, self.steps, self.grad_accum_steps, self.calls = inner, set(steps), grad_accum_steps, 0

    def count(self, micro_batch):
        return self.inner.count(micro_batch)

    def __call__(self, model, micro_batch):
        out = self.inner(model, micro_batch)
        step = self.calls // self.grad_accum_steps
        self.calls += 1
        if step in self.steps:
            out["loss_sum"] = out["loss_sum"] * float("nan")
        return out


def test_nonfinite_steps_skipped(tmp_path, qwen2_config, toy_tokens, single_process):
    from steel.train.loss import CausalLMLoss

    config = toy_config(tmp_path / "run", qwen2_config, **{"schedule.max_steps": 6})
    loss = NaNAtSteps(CausalLMLoss(48), steps=[2, 3], grad_accum_steps=4)
    trainer = build_trainer(config, single_process, toy_tokens, loss=loss)
    state = trainer.fit()

    assert state.step == 6
    assert state.skipped_steps == 2
    from steel.train.metrics import read_metrics

    skips = [r["step"] for r in read_metrics(tmp_path / "run") if r["kind"] == "skip"]
    assert skips == [3, 4]
    for param in trainer.model.parameters():
        assert torch.isfinite(param).all()


def test_nonfinite_aborts_after_limit(tmp_path, qwen2_config, toy_tokens, single_process):
    from steel.train.loss import CausalLMLoss

    config = toy_config(tmp_path / "run", qwen2_config, **{"schedule.max_steps": 10, "max_consecutive_nonfinite": 3})
    loss = NaNAtSteps(CausalLMLoss(48), steps=range(1, 10), grad_accum_steps=4)
    trainer = build_trainer(config, single_process, toy_tokens, loss=loss)
    with pytest.raises(NonFiniteLossError, match="3 optimizer steps in a row"):
        trainer.fit()
    assert trainer.state.step == 4


def test_skipped_step_leaves_weights(tmp_path, qwen2_config, toy_tokens, single_process):
    from steel.train.loss import CausalLMLoss

    config = toy_config(tmp_path / "run", qwen2_config)
    trainer = build_trainer(config, single_process, toy_tokens, loss=NaNAtSteps(CausalLMLoss(48), [0], 4))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    result = trainer.train_step(next(iter(trainer.batches))[0])
    assert result.skipped
    for name, param in trainer.model.named_parameters():
        assert torch.equal(param, before[name]), name


def test_checkpoint_crash_keeps_previous(tmp_path, qwen2_config, toy_tokens, single_process, monkeypatch):
    run_dir = tmp_path / "run"
    config = toy_config(run_dir, qwen2_config, **{"schedule.max_steps": 4, "checkpoint.interval": 2})
    trainer = build_trainer(config, single_process, toy_tokens)

    def crash(*args, **kwargs):
        raise OSError("disk full (simulated)")

    # Step 2's checkpoint is written; step 4's dies after the weights, before the metadata.
    original_save_rng = ckpt._save_rng
    calls = {"n": 0}

    def save_rng_then_crash(path):
        calls["n"] += 1
        if calls["n"] == 2:
            crash()
        original_save_rng(path)

    monkeypatch.setattr(ckpt, "_save_rng", save_rng_then_crash)
    with pytest.raises(OSError, match="simulated"):
        trainer.fit()

    root = run_dir / ckpt.CHECKPOINT_DIR
    assert (root / "step-00000004.tmp" / "model.safetensors").is_file()
    assert ckpt.latest_checkpoint(run_dir).name == "step-00000002"

    monkeypatch.setattr(ckpt, "_save_rng", original_save_rng)
    resumed = build_trainer(toy_config(run_dir, qwen2_config, **{
        "schedule.max_steps": 4, "checkpoint.interval": 2, "checkpoint.resume": "latest"}), single_process, toy_tokens)
    state = resumed.fit()
    assert state.step == 4
    assert not (root / "step-00000004.tmp").exists()
    assert ckpt.latest_checkpoint(run_dir).name == "step-00000004"


def test_keep_last_and_milestones(tmp_path, qwen2_config, toy_tokens, single_process):
    run_dir = tmp_path / "run"
    config = toy_config(run_dir, qwen2_config, **{
        "schedule.max_steps": 9, "checkpoint.interval": 1, "checkpoint.keep_last": 2,
        "checkpoint.milestone_interval": 4,
    })
    build_trainer(config, single_process, toy_tokens).fit()
    names = [p.name for p in ckpt.list_checkpoints(run_dir)]
    assert names == ["step-00000004", "step-00000007", "step-00000008", "step-00000009"]
    assert ckpt.read_meta(run_dir / "checkpoints" / "step-00000004")["milestone"] is True


def test_checkpoint_contents(tmp_path, qwen2_config, toy_tokens, single_process):
    run_dir = tmp_path / "run"
    config = toy_config(run_dir, qwen2_config, **{"schedule.max_steps": 2})
    trainer = build_trainer(config, single_process, toy_tokens)
    trainer.fit()
    path = ckpt.latest_checkpoint(run_dir)
    meta = ckpt.read_meta(path)
    assert meta["step"] == 2
    assert meta["tokens"] == 2 * 8 * 32
    assert meta["stream_state"] == {"position": 2}
    assert meta["format"] == "full"
    assert meta["schedule"]["warmup_steps"] == 5
    assert meta["config"]["optimizer"]["lr"] == pytest.approx(3e-3)
    weights = load_file(path / "model.safetensors")
    assert torch.equal(weights["model.norm.weight"], trainer.model.model.norm.weight.detach())
    optimizer = torch.load(path / "optimizer.pt", weights_only=True)
    assert "exp_avg" in optimizer["state"]["lm_head.weight"]
    assert sorted(os.listdir(path)) == [
        "checkpoint.json", "model.safetensors", "model_config.json", "optimizer.pt", "rng-rank00000.json"]


def test_resume_refuses_existing_run(tmp_path, qwen2_config, toy_tokens, single_process):
    run_dir = tmp_path / "run"
    build_trainer(toy_config(run_dir, qwen2_config, **{"schedule.max_steps": 1}), single_process, toy_tokens).fit()
    again = build_trainer(toy_config(run_dir, qwen2_config, **{"schedule.max_steps": 2}), single_process, toy_tokens)
    with pytest.raises(ValueError, match="--resume"):
        again.fit()


def test_in_process_resume_matches(tmp_path, qwen2_config, toy_tokens, single_process):
    full_dir, split_dir = tmp_path / "full", tmp_path / "split"
    build_trainer(toy_config(full_dir, qwen2_config, **{"schedule.max_steps": 6}), single_process, toy_tokens).fit()
    build_trainer(toy_config(split_dir, qwen2_config, **{"schedule.max_steps": 3}), single_process, toy_tokens).fit()
    resumed = build_trainer(toy_config(split_dir, qwen2_config, **{
        "schedule.max_steps": 6, "checkpoint.resume": "auto"}), single_process, toy_tokens)
    resumed.fit()
    assert read_losses(split_dir) == read_losses(full_dir)
    a = load_file(ckpt.latest_checkpoint(full_dir) / "model.safetensors")
    b = load_file(ckpt.latest_checkpoint(split_dir) / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_activation_checkpointing_same_gradients(tmp_path, qwen2_config, toy_tokens, single_process):
    gradients = []
    for enabled in ("false", "true"):
        config = toy_config(tmp_path / enabled, qwen2_config, **{"system.activation_checkpointing": enabled})
        trainer = build_trainer(config, single_process, toy_tokens)
        trainer.accumulate_gradients(next(iter(trainer.batches))[0])
        gradients.append({n: p.grad.clone() for n, p in trainer.model.named_parameters()})
    for name, grad in gradients[0].items():
        assert torch.allclose(gradients[1][name], grad, rtol=1e-5, atol=1e-7), name


def test_bfloat16_autocast_on_cpu(tmp_path, qwen2_config, toy_tokens, single_process):
    config = toy_config(tmp_path / "run", qwen2_config, **{"precision.dtype": "bfloat16", "schedule.max_steps": 2})
    trainer = build_trainer(config, single_process, toy_tokens)
    state = trainer.fit()
    assert state.step == 2
    # Master weights stay float32 under bfloat16 compute.
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert math.isfinite(read_losses(tmp_path / "run")[2])
