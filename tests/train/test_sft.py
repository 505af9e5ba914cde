"""`steel sft` end to end on CPU: overfitting four samples, resume, init from a run, export, packing."""

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from steel.cli import main as steel_main
from steel.tokenizer import load_tokenizer
from steel.tokenizer.chat import encode_chat, render_chat
from steel.train.checkpoint import list_checkpoints
from steel.train.load import load_model
from steel.train.loss import IGNORE_INDEX
from steel.train.metrics import read_metrics
from steel.train.sft_data import collate_rows

REVIEWS = [
    ("这家店的菜很好吃，服务也热情。", "正面"),
    ("等了一个小时，菜还是凉的。", "负面"),
    ("质量不错，物流很快，下次还买。", "正面"),
    ("衣服有破洞，客服也不理人。", "负面"),
]
# A model small enough that a few dozen CPU steps memorise four conversations.
TINY_MODEL = {"preset": "steel-tiny", "overrides": {"hidden_size": 64, "intermediate_size": 128,
                                                    "num_hidden_layers": 1}}  # fmt: skip


def review_messages(review: str, label: str | None = None) -> list[dict]:
    messages = [{"role": "user", "content": f"评论：{review}\n这条评论的情感是正面还是负面？"}]
    if label is not None:
        messages.append({"role": "assistant", "content": label})
    return messages


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("sft")


@pytest.fixture(scope="module")
def tokenizer_dir(workdir):
    """A byte-level BPE tokenizer trained by Steel on the review texts (not the Qwen one)."""
    from steel.tokenizer.train import TrainConfig, train_tokenizer

    corpus = workdir / "corpus.jsonl"
    texts = [render_chat(review_messages(r, label)) for r, label in REVIEWS] * 20
    corpus.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    return train_tokenizer(TrainConfig(inputs=[corpus], output=workdir / "tokenizer", vocab_size=400))


@pytest.fixture(scope="module")
def data_path(workdir):
    path = workdir / "reviews.jsonl"
    records = [{"messages": review_messages(review, label)} for review, label in REVIEWS]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def write_recipe(path, run_dir, data_path, **sections):
    recipe = {
        "run_dir": str(run_dir),
        "seed": 0,
        "data": {"cutoff_len": 96, "sources": [{"path": str(data_path)}]},
        "optimizer": {"weight_decay": 0.0},
        "schedule": {"warmup_ratio": 0.0},
        "batch": {"global_batch_size": 4, "micro_batch_size": 2},
        "system": {"device": "cpu", "num_threads": 1},
        "logging": {"progress_bar": False},
    }
    for name, values in sections.items():
        recipe[name] = {**recipe.get(name, {}), **values} if isinstance(values, dict) else values
    path.write_text(yaml.safe_dump(recipe, allow_unicode=True), encoding="utf-8")
    return path


def train_losses(run_dir):
    return [record["loss"] for record in read_metrics(run_dir) if record["kind"] == "train"]


def greedy_answer(model, tokenizer, messages, max_new_tokens=6):
    ids, _ = encode_chat(tokenizer, messages, add_generation_prompt=True)
    input_ids = torch.tensor([ids])
    answer = []
    for _ in range(max_new_tokens):
        with torch.no_grad():
            next_id = int(model(input_ids=input_ids).logits[0, -1].argmax())
        if next_id == tokenizer.special_ids["<|im_end|>"]:
            break
        answer.append(next_id)
        input_ids = torch.cat([input_ids, torch.tensor([[next_id]])], dim=1)
    return tokenizer.decode(answer)


@pytest.fixture(scope="module")
def overfit_run(workdir, tokenizer_dir, data_path):
    """60 steps of SFT on the four reviews, with checkpoints at steps 30 and 60."""
    run_dir = workdir / "overfit"
    recipe = write_recipe(
        workdir / "overfit.yaml", run_dir, data_path,
        model=TINY_MODEL,
        data={"tokenizer": str(tokenizer_dir), "epochs": 60},
        optimizer={"lr": 1e-2},
        checkpoint={"interval": 30},
    )  # fmt: skip
    assert steel_main(["sft", str(recipe)]) == 0
    return run_dir, recipe


def test_sft_overfits_and_answers(overfit_run):
    run_dir, _ = overfit_run

    losses = train_losses(run_dir)
    loaded = load_model(run_dir)

    assert len(losses) == 60
    assert losses[0] > 2.0
    assert losses[-1] < 0.05
    assert loaded.provenance["stage"] == "sft"
    for review, label in REVIEWS:
        assert greedy_answer(loaded.model, loaded.tokenizer, review_messages(review)) == label


def test_sft_resume_matches_uninterrupted_run(overfit_run, workdir):
    run_dir, recipe = overfit_run
    resumed_dir = workdir / "resumed"
    shutil.copytree(run_dir, resumed_dir)
    final = list_checkpoints(resumed_dir)[-1]
    assert final.name.endswith("60")
    shutil.rmtree(final)
    (resumed_dir / "metrics.jsonl").write_text("", encoding="utf-8")

    assert steel_main(["sft", str(recipe), f"run_dir={resumed_dir}", "--resume"]) == 0

    expected = train_losses(run_dir)[30:]
    assert train_losses(resumed_dir) == pytest.approx(expected, rel=1e-5, abs=1e-7)
    original = load_model(run_dir).model.state_dict()
    for name, value in load_model(resumed_dir).model.state_dict().items():
        torch.testing.assert_close(value, original[name], rtol=1e-5, atol=1e-6, msg=name)


def test_sft_from_run_directory_and_export(overfit_run, workdir, data_path):
    run_dir, _ = overfit_run
    second_dir = workdir / "second"
    # No preset and no tokenizer: both come from the run directory's latest checkpoint.
    recipe = write_recipe(workdir / "second.yaml", second_dir, data_path,
                          model={"init_from": str(run_dir)}, data={"epochs": 1}, optimizer={"lr": 1e-6})  # fmt: skip

    assert steel_main(["sft", str(recipe)]) == 0
    assert train_losses(second_dir)[0] < 0.05  # the weights were taken over

    export_dir = workdir / "export"
    assert steel_main(["export", str(second_dir), str(export_dir)]) == 0
    from transformers import AutoTokenizer

    hf_tokenizer = AutoTokenizer.from_pretrained(export_dir)
    messages = review_messages(*REVIEWS[0])
    assert hf_tokenizer.apply_chat_template(messages, tokenize=False) == render_chat(messages)
    exported = load_model(export_dir)
    assert greedy_answer(exported.model, exported.tokenizer, review_messages(REVIEWS[1][0])) == REVIEWS[1][1]


def test_sft_rejects_empty_data(workdir, tokenizer_dir):
    empty = workdir / "empty.jsonl"
    empty.write_text(json.dumps({"messages": review_messages("好", "")}, ensure_ascii=False) + "\n", encoding="utf-8")
    recipe = write_recipe(workdir / "empty.yaml", workdir / "empty-run", empty,
                          model=TINY_MODEL, data={"tokenizer": str(tokenizer_dir)})  # fmt: skip

    with pytest.raises(SystemExit, match="no usable sample; skipped: empty assistant: 1"):
        steel_main(["sft", str(recipe)])


# ---------------------------------------------------------------------------------------------
# Packing: no sample sees another, in attention or in the Soft-MoE FFN


def token_losses(model, batch):
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "position_ids", "segment_ids")}
    with torch.no_grad():
        logits = model(**inputs).logits
    losses = F.cross_entropy(logits.transpose(1, 2), batch["labels"].clamp(min=0), reduction="none")
    return torch.where(batch["labels"] == IGNORE_INDEX, torch.zeros_like(losses), losses)


@pytest.mark.parametrize("ffn_type", ["soft_moe", "soft_moe_causal"])
def test_packing_leaks_nothing_across_samples(tokenizer_dir, ffn_type):
    from steel.model.presets import get_preset
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(str(tokenizer_dir))
    torch.manual_seed(0)
    config = get_preset("steel-tiny", vocab_size=tokenizer.vocab_size, ffn_type=ffn_type)
    model = AutoModelForCausalLM.from_config(config).eval()

    def sample(index, label):
        ids, mask = encode_chat(tokenizer, review_messages(REVIEWS[index][0], label))
        return np.array(ids), np.array(mask)

    first, middle, last = sample(0, "正面"), sample(1, "负面"), sample(2, "正面")
    changed_middle = sample(3, "负面")
    packed = collate_rows([[first, middle, last]], tokenizer.pad_id)
    repacked = collate_rows([[first, changed_middle, last]], tokenizer.pad_id)
    alone = collate_rows([[first], [last]], tokenizer.pad_id)  # the shorter row is padded

    losses, relosses, alone_losses = token_losses(model, packed), token_losses(model, repacked), token_losses(model, alone)

    n_first, n_middle, n_last = (len(s[0]) - 1 for s in (first, middle, last))
    n_changed = len(changed_middle[0]) - 1
    torch.testing.assert_close(relosses[0, :n_first], losses[0, :n_first])
    torch.testing.assert_close(relosses[0, n_first + n_changed :], losses[0, n_first + n_middle :])
    torch.testing.assert_close(alone_losses[0, :n_first], losses[0, :n_first], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(alone_losses[1, :n_last], losses[0, n_first + n_middle :], rtol=1e-4, atol=1e-5)
    assert losses[0, :n_first].sum() > 0
    assert not torch.equal(relosses[0, n_first : n_first + n_changed], losses[0, n_first : n_first + n_middle])


# ---------------------------------------------------------------------------------------------
# Two ranks (FSDP2 over gloo) train like one process


@pytest.mark.slow  # about 25 s of CPU time: two torchrun processes plus a single-process run
def test_sft_two_ranks_match_one_process(workdir, tokenizer_dir, data_path):
    import os
    import socket
    import subprocess
    import sys

    settings = dict(model=TINY_MODEL, data={"tokenizer": str(tokenizer_dir), "epochs": 3},
                    optimizer={"lr": 5e-3}, system={"device": "cpu", "num_threads": 1, "deterministic": True})  # fmt: skip
    single = write_recipe(workdir / "single.yaml", workdir / "single", data_path, **settings)
    double = write_recipe(workdir / "double.yaml", workdir / "double", data_path, **settings)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    assert steel_main(["sft", str(single)]) == 0
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
         f"--master_port={port}", "-m", "steel", "sft", str(double)],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )  # fmt: skip

    assert result.returncode == 0, result.stderr[-3000:]
    assert train_losses(workdir / "double") == pytest.approx(train_losses(workdir / "single"), rel=1e-4)
