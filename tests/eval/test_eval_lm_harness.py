"""An exported Steel model answers lm-evaluation-harness loglikelihood requests through HFLM."""

import pytest

from steel.eval.adapter import as_eval_model
from steel.eval.scorer import forward_log_probs


def test_hflm_loglikelihood_matches_direct(tiny_model_dir, dense_model):
    pytest.importorskip("accelerate")
    huggingface = pytest.importorskip("lm_eval.models.huggingface")
    from lm_eval.api.instance import Instance

    directory = tiny_model_dir("dense")
    harness = huggingface.HFLM(pretrained=str(directory), trust_remote_code=True, device="cpu", batch_size=2, dtype="float32")
    context = "以下是关于法学的单项选择题。\n3加2等于多少？\nA. 5\nB. 6\n答案："
    requests = [
        Instance(request_type="loglikelihood", doc={}, arguments=(context, letter), idx=index)
        for index, letter in enumerate("AB")
    ]
    answers = harness.loglikelihood(requests)

    eval_model = as_eval_model(dense_model)
    context_ids = eval_model.encode(context)
    for (log_likelihood, _), letter in zip(answers, "AB"):
        ids = eval_model.encode(context + letter)
        assert ids[: len(context_ids)] == context_ids
        positions = list(range(len(context_ids) - 1, len(ids) - 1))
        log_probs = forward_log_probs(eval_model, [ids], [positions])[0]
        expected = sum(float(log_probs[i, token]) for i, token in enumerate(ids[len(context_ids):]))
        assert log_likelihood == pytest.approx(expected, abs=1e-4)
