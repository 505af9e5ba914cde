"""What a run logs at start: the expected initial loss for its stage, and an approximate CPU peak."""

import logging
import math

import pytest
import torch

from steel.train.metrics import device_peak_flops, measure_cpu_matmul_flops
from train_toys import VOCAB_SIZE, build_trainer, toy_config


@pytest.fixture
def trainer(tmp_path, qwen2_config, toy_tokens, single_process):
    return build_trainer(toy_config(tmp_path / "run", qwen2_config), single_process, toy_tokens)


def start_log(trainer, caplog) -> str:
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="steel.train.trainer"):
        trainer.log_start()
    return "\n".join(record.getMessage() for record in caplog.records)


def test_untrained_model_expects_ln_vocab(trainer, caplog):
    text = start_log(trainer, caplog)
    assert f"expected initial loss ln(V) = {math.log(VOCAB_SIZE):.3f} (untrained model)" in text


def test_initialised_model_expects_nothing(trainer, caplog):
    trainer.config.model.init_from = "runs/pretrain"
    text = start_log(trainer, caplog)
    assert "expected initial loss" not in text
    assert "steps 20 (warmup 5, cosine decay)" in text


def test_dpo_expects_ln_2(trainer, caplog):
    trainer.stage = "dpo"
    trainer.config.model.init_from = "runs/sft"
    text = start_log(trainer, caplog)
    assert "expected initial loss ln 2 = 0.693" in text
    assert "ln(V)" not in text


def test_resumed_run_expects_nothing(trainer, caplog):
    trainer.state.step = 3
    assert "expected initial loss" not in start_log(trainer, caplog)


def test_cpu_peak_is_labelled_approximate():
    threads = torch.get_num_threads()
    peak, text = device_peak_flops(torch.device("cpu"))
    assert torch.get_num_threads() == threads
    assert math.isfinite(peak)
    assert peak > 0
    assert "approximate" in text
    assert f"x {threads} threads" in text


def test_cpu_peak_scales_with_threads():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = measure_cpu_matmul_flops(size=128, budget_seconds=0.0, min_repeats=20)
        torch.set_num_threads(2)
        two = measure_cpu_matmul_flops(size=128, budget_seconds=0.0, min_repeats=20)
    finally:
        torch.set_num_threads(threads)
    # Both time one thread, so two threads' estimate is about twice one thread's.
    assert 1.0 < two / one < 4.0
