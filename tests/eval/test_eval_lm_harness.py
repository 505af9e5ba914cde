"""Exported Steel models work with EleutherAI's lm-evaluation-harness (HFLM and local task files)."""

from pathlib import Path

import pytest

from steel.eval.adapter import as_eval_model
from steel.eval.harness import write_lm_eval_tasks
from steel.eval.scorer import forward_log_probs

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def harness_model(tiny_model_dir):
    pytest.importorskip("accelerate")
    huggingface = pytest.importorskip("lm_eval.models.huggingface")
    return huggingface.HFLM(
        pretrained=str(tiny_model_dir("dense")), trust_remote_code=True, device="cpu", batch_size=4, dtype="float32"
    )


def test_hflm_loglikelihood_matches_direct(harness_model, dense_model):
    from lm_eval.api.instance import Instance

    context = "以下是关于法学的单项选择题。\n3加2等于多少？\nA. 5\nB. 6\n答案："
    requests = [
        Instance(request_type="loglikelihood", doc={}, arguments=(context, letter), idx=index)
        for index, letter in enumerate("AB")
    ]
    answers = harness_model.loglikelihood(requests)

    eval_model = as_eval_model(dense_model)
    context_ids = eval_model.encode(context)
    for (log_likelihood, _), letter in zip(answers, "AB"):
        ids = eval_model.encode(context + letter)
        assert ids[: len(context_ids)] == context_ids
        positions = list(range(len(context_ids) - 1, len(ids) - 1))
        log_probs = forward_log_probs(eval_model, [ids], [positions])[0]
        expected = sum(float(log_probs[i, token]) for i, token in enumerate(ids[len(context_ids):]))
        assert log_likelihood == pytest.approx(expected, abs=1e-4)


def test_local_task_files_run_offline(harness_model, tmp_path, monkeypatch):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    group = write_lm_eval_tasks("cmmlu", FIXTURES / "cmmlu", tmp_path / "tasks", ["agronomy", "arts"])
    assert group == "steel-cmmlu"
    assert "以下是关于艺术学的单项选择题" in (tmp_path / "tasks" / "steel-cmmlu_arts.yaml").read_text(encoding="utf-8")

    output = simple_evaluate(
        model=harness_model,
        tasks=[group],
        num_fewshot=1,
        task_manager=TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False),
    )
    assert set(output["results"]) == {"steel-cmmlu", "steel-cmmlu_agronomy", "steel-cmmlu_arts"}
    assert output["n-samples"]["steel-cmmlu_arts"]["effective"] == 2
    assert 0.0 <= output["results"]["steel-cmmlu"]["acc,none"] <= 1.0


def test_task_files_need_every_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing .*law_val.csv"):
        write_lm_eval_tasks("ceval", tmp_path, tmp_path / "tasks", ["law"])
