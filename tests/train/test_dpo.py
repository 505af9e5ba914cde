"""DPO: preference records, the prompt boundary, the sigmoid loss and `steel dpo` end to end."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from steel.cli import main as steel_main
from steel.tokenizer import load_tokenizer
from steel.tokenizer.chat import encode_chat, render_chat
from steel.train.dpo import (
    REFERENCE_FILE,
    DPOLoss,
    DPOSourceConfig,
    PreferencePair,
    encode_pair,
    load_pairs,
    pair_from_record,
    sequence_logps,
)
from steel.train.load import load_model
from steel.train.metrics import read_metrics

REVIEWS = [
    ("这家店的菜很好吃，服务也热情。", "正面", "负面"),
    ("等了一个小时，菜还是凉的。", "负面", "正面"),
    ("质量不错，物流很快，下次还买。", "正面", "负面"),
    ("衣服有破洞，客服也不理人。", "负面", "正面"),
]
TINY_MODEL = {"preset": "steel-tiny", "overrides": {"hidden_size": 64, "intermediate_size": 128,
                                                    "num_hidden_layers": 1}}  # fmt: skip


def prompt_text(review: str) -> str:
    return f"评论：{review}\n这条评论的情感是正面还是负面？"


@pytest.fixture(scope="module")
def qwen():
    return load_tokenizer("qwen")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("dpo")


@pytest.fixture(scope="module")
def tokenizer_dir(workdir):
    from steel.tokenizer.train import TrainConfig, train_tokenizer

    corpus = workdir / "corpus.jsonl"
    texts = [render_chat([{"role": "user", "content": prompt_text(r)}, {"role": "assistant", "content": a + b}])
             for r, a, b in REVIEWS] * 20  # fmt: skip
    corpus.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    return train_tokenizer(TrainConfig(inputs=[corpus], output=workdir / "tokenizer", vocab_size=400))


@pytest.fixture(scope="module")
def pairs_path(workdir):
    path = workdir / "pairs.jsonl"
    records = [{"prompt": prompt_text(r), "chosen": good, "rejected": bad} for r, good, bad in REVIEWS]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# Records


def test_pair_with_string_prompt():
    pair = pair_from_record({"prompt": "hi", "chosen": "hello", "rejected": "go away"}, DPOSourceConfig())

    assert pair == PreferencePair([{"role": "user", "content": "hi"}], "hello", "go away")


def test_ultrafeedback_binarized_record():
    user = {"role": "user", "content": "Name a prime."}
    record = {
        "prompt": "Name a prime.",
        "chosen": [user, {"role": "assistant", "content": "7"}],
        "rejected": [user, {"role": "assistant", "content": "8"}],
        "score_chosen": 9.0,
        "score_rejected": 2.0,
    }

    pair = pair_from_record(record, DPOSourceConfig(system="Be exact."))

    assert pair.prompt == [{"role": "system", "content": "Be exact."}, user]
    assert (pair.chosen, pair.rejected) == ("7", "8")


def test_ultrafeedback_completions_record():
    record = {
        "instruction": "Say hi",
        "completions": [
            {"response": "meh", "overall_score": 3},
            {"response": "Hi!", "overall_score": 9.5},
            {"response": "no", "overall_score": 1},
        ],
    }

    pair = pair_from_record(record, DPOSourceConfig())

    assert (pair.chosen, pair.rejected) == ("Hi!", "no")


def test_load_pairs_counts_skips(tmp_path):
    path = tmp_path / "pairs.jsonl"
    records = [
        {"prompt": "你好吗", "chosen": "好", "rejected": "不好"},
        {"prompt": "你好吗", "chosen": "好", "rejected": "好"},
        {"prompt": "你好吗", "chosen": "好"},
        {"prompt": "How are you", "chosen": "Fine", "rejected": "Bad"},
        {"instruction": "x", "completions": [{"response": "a", "overall_score": 5},
                                              {"response": "b", "overall_score": 5}]},
        {"prompt": "q", "chosen": [{"role": "user", "content": "other"}, {"role": "assistant", "content": "a"}],
         "rejected": "b"},
    ]  # fmt: skip
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")

    pairs, stats = load_pairs(DPOSourceConfig(path=str(path), language="zh"))

    assert [(p.chosen, p.rejected) for p in pairs] == [("好", "不好")]
    assert stats["skipped"] == {
        "identical responses": 1,
        "missing field 'rejected'": 1,
        "tied scores": 1,
        "prompt mismatch": 1,
        "not Chinese": 1,
    }


def test_pair_prompt_boundary_is_shared(qwen):
    prompt = [{"role": "user", "content": "评论：好吃。情感？"}]
    pair = PreferencePair(prompt, "正面，很明显。", "\n负面")

    chosen_ids, chosen_mask, rejected_ids, rejected_mask = encode_pair(qwen, pair, cutoff_len=512)

    prompt_ids, _ = encode_chat(qwen, prompt, add_generation_prompt=True)
    boundary = len(prompt_ids)
    assert chosen_ids[:boundary] == prompt_ids
    assert rejected_ids[:boundary] == prompt_ids
    assert sum(chosen_mask[:boundary]) == sum(rejected_mask[:boundary]) == 0
    response = [t for t, m in zip(chosen_ids, chosen_mask) if m]
    assert qwen.decode(response) == "正面，很明显。<|im_end|>"
    assert qwen.decode([t for t, m in zip(rejected_ids, rejected_mask) if m]) == "\n负面<|im_end|>"


def test_multi_turn_prompt_masks_only_the_response(qwen):
    prompt = [{"role": "user", "content": "1+1"}, {"role": "assistant", "content": "2"},
              {"role": "user", "content": "2+2"}]  # fmt: skip

    chosen_ids, chosen_mask, _, _ = encode_pair(qwen, PreferencePair(prompt, "4", "5"), cutoff_len=512)

    assert qwen.decode([t for t, m in zip(chosen_ids, chosen_mask) if m]) == "4<|im_end|>"


def test_pair_with_long_prompt_is_rejected(qwen):
    pair = PreferencePair([{"role": "user", "content": "长" * 100}], "a", "b")

    assert encode_pair(qwen, pair, cutoff_len=40) is None


# ---------------------------------------------------------------------------------------------
# The loss


def test_dpo_loss_matches_formula(tokenizer_dir):
    from steel.model.presets import get_preset
    from steel.train.dpo import _pad_sequences
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(str(tokenizer_dir))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(get_preset("steel-tiny", vocab_size=tokenizer.vocab_size)).eval()
    batch = {}
    for side, index in (("chosen", 1), ("rejected", 2)):
        sequences = []
        for review, *answers in REVIEWS[:2]:
            pair = PreferencePair([{"role": "user", "content": prompt_text(review)}], answers[0], answers[1])
            encoded = encode_pair(tokenizer, pair, cutoff_len=128)
            sequences.append((np.array(encoded[2 * index - 2]), np.array(encoded[2 * index - 1])))
        for key, value in _pad_sequences(sequences, tokenizer.pad_id).items():
            batch[f"{side}_{key}"] = value
    batch["reference_chosen_logps"] = torch.tensor([-3.0, -4.0])
    batch["reference_rejected_logps"] = torch.tensor([-5.0, -1.0])

    outputs = DPOLoss(beta=0.1, pad_id=tokenizer.pad_id, reference=None)(model, batch)

    chosen = sequence_logps(model, batch["chosen_input_ids"], batch["chosen_labels"], batch["chosen_attention_mask"])
    rejected = sequence_logps(model, batch["rejected_input_ids"], batch["rejected_labels"],
                              batch["rejected_attention_mask"])  # fmt: skip
    margin = 0.1 * ((chosen - batch["reference_chosen_logps"]) - (rejected - batch["reference_rejected_logps"]))
    torch.testing.assert_close(outputs["loss_sum"], -F.logsigmoid(margin).sum(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outputs["reward_margin_sum"], margin.sum(), rtol=1e-5, atol=1e-5)
    assert outputs["reward_accuracy_sum"].item() == float((margin > 0).sum())
    # Summed over response tokens only: a hand count over the first chosen row agrees.
    logits = model(input_ids=batch["chosen_input_ids"][:1]).logits[0]
    labels = batch["chosen_labels"][0]
    by_hand = sum(logits[t].log_softmax(-1)[labels[t]] for t in range(len(labels)) if labels[t] >= 0)
    torch.testing.assert_close(chosen[0], by_hand, rtol=1e-4, atol=1e-4)


def test_dpo_loss_with_frozen_reference_starts_at_log_2(tokenizer_dir, pairs_path):
    from steel.model.presets import get_preset
    from steel.train.dpo import DPOBatches, DPODataConfig, frozen_copy, load_pair_sources
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(str(tokenizer_dir))
    config = DPODataConfig(sources=[DPOSourceConfig(path=str(pairs_path))], cutoff_len=128, epochs=1)
    batches = DPOBatches(load_pair_sources(config, tokenizer), config, tokenizer.pad_id, global_batch_size=4)
    model = AutoModelForCausalLM.from_config(get_preset("steel-tiny", vocab_size=tokenizer.vocab_size))
    batch, _ = next(iter(batches))

    outputs = DPOLoss(0.1, tokenizer.pad_id, frozen_copy(model))(model, batch)

    assert outputs["loss_sum"].item() == pytest.approx(4 * math.log(2), rel=1e-6)
    assert outputs["reward_margin_sum"].item() == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------------------------------------
# steel dpo end to end


def write_recipe(path, run_dir, pairs_path, tokenizer_dir, **data):
    recipe = {
        "run_dir": str(run_dir),
        "seed": 0,
        "model": TINY_MODEL,
        "data": {"tokenizer": str(tokenizer_dir), "cutoff_len": 96, "epochs": 8,
                 "sources": [{"path": str(pairs_path)}], **data},
        "optimizer": {"lr": 3e-3, "weight_decay": 0.0},
        "schedule": {"warmup_ratio": 0.0},
        "batch": {"global_batch_size": 4, "micro_batch_size": 2},
        "system": {"device": "cpu", "num_threads": 1},
        "logging": {"progress_bar": False},
        "checkpoint": {"interval": 4},
    }  # fmt: skip
    path.write_text(yaml.safe_dump(recipe, allow_unicode=True), encoding="utf-8")
    return path


def margins(model, tokenizer):
    """Chosen-minus-rejected log-probability of each toy pair under `model`."""
    values = []
    for review, good, bad in REVIEWS:
        pair = PreferencePair([{"role": "user", "content": prompt_text(review)}], good, bad)
        chosen_ids, chosen_mask, rejected_ids, rejected_mask = encode_pair(tokenizer, pair, cutoff_len=96)
        logps = []
        for ids, mask in ((chosen_ids, chosen_mask), (rejected_ids, rejected_mask)):
            ids_t = torch.tensor([ids])
            labels = torch.where(torch.tensor([mask[1:]]).bool(), ids_t[:, 1:], -100)
            with torch.no_grad():
                logps.append(sequence_logps(model, ids_t[:, :-1], labels, torch.ones_like(labels)).item())
        values.append(logps[0] - logps[1])
    return values


@pytest.fixture(scope="module")
def dpo_runs(workdir, tokenizer_dir, pairs_path):
    """Run directories of `steel dpo` on the toy pairs, one per reference mode, trained once each."""
    runs = {}

    def run(precompute: bool):
        if precompute not in runs:
            run_dir = workdir / f"run-{precompute}"
            recipe = write_recipe(workdir / f"dpo-{precompute}.yaml", run_dir, pairs_path, tokenizer_dir,
                                  precompute_reference=precompute)  # fmt: skip
            assert steel_main(["dpo", str(recipe)]) == 0
            runs[precompute] = run_dir
        return runs[precompute]

    return run


@pytest.mark.parametrize("precompute", [False, True])
def test_dpo_raises_margin(dpo_runs, tokenizer_dir, precompute):
    from steel.model.presets import get_preset
    from transformers import AutoModelForCausalLM

    run_dir = dpo_runs(precompute)

    train = [r for r in read_metrics(run_dir) if r["kind"] == "train"]
    assert len(train) == 8
    assert train[0]["loss"] == pytest.approx(math.log(2), rel=1e-4)
    assert train[0]["reward_margin"] == pytest.approx(0.0, abs=1e-4)
    assert train[-1]["reward_margin"] > 0.2
    assert train[-1]["reward_accuracy"] == 1.0
    assert train[-1]["loss"] < train[0]["loss"]
    assert (run_dir / REFERENCE_FILE).is_file() == precompute

    tokenizer = load_tokenizer(str(tokenizer_dir))
    torch.manual_seed(0)  # build_model seeds the same way, so this is the starting policy
    start = AutoModelForCausalLM.from_config(get_preset("steel-tiny", vocab_size=tokenizer.vocab_size,
                                                        **TINY_MODEL["overrides"])).eval()  # fmt: skip
    trained = load_model(run_dir).model
    before, after = margins(start, tokenizer), margins(trained, tokenizer)
    assert all(a > b for a, b in zip(after, before)), (before, after)


def test_dpo_resume_with_precomputed_reference(dpo_runs, workdir, tokenizer_dir, pairs_path):
    import shutil

    from steel.train.checkpoint import list_checkpoints

    run_dir = dpo_runs(True)
    resumed = workdir / "resumed"
    shutil.copytree(run_dir, resumed)
    shutil.rmtree(list_checkpoints(resumed)[-1])
    (resumed / "metrics.jsonl").write_text("", encoding="utf-8")
    recipe = write_recipe(workdir / "dpo-resume.yaml", resumed, pairs_path, tokenizer_dir, precompute_reference=True)

    assert steel_main(["dpo", str(recipe), "--resume"]) == 0

    expected = [r["loss"] for r in read_metrics(run_dir) if r["kind"] == "train"][4:]
    assert [r["loss"] for r in read_metrics(resumed) if r["kind"] == "train"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow  # about 25 s of CPU time: two torchrun processes plus a single-process run
@pytest.mark.parametrize("precompute", [False, True])
def test_dpo_two_ranks_match_one_process(workdir, tokenizer_dir, pairs_path, precompute):
    import os
    import socket
    import subprocess
    import sys

    single = write_recipe(workdir / f"single-{precompute}.yaml", workdir / f"single-{precompute}", pairs_path,
                          tokenizer_dir, precompute_reference=precompute, epochs=2)  # fmt: skip
    double = write_recipe(workdir / f"double-{precompute}.yaml", workdir / f"double-{precompute}", pairs_path,
                          tokenizer_dir, precompute_reference=precompute, epochs=2)  # fmt: skip
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    assert steel_main(["dpo", str(single), "system.deterministic=true"]) == 0
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
         f"--master_port={port}", "-m", "steel", "dpo", str(double), "system.deterministic=true"],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )  # fmt: skip

    assert result.returncode == 0, result.stderr[-3000:]
    for key in ("loss", "reward_margin", "reward_accuracy"):
        one = [r[key] for r in read_metrics(workdir / f"single-{precompute}") if r["kind"] == "train"]
        two = [r[key] for r in read_metrics(workdir / f"double-{precompute}") if r["kind"] == "train"]
        assert two == pytest.approx(one, rel=1e-4, abs=1e-6), key
