"""Scoring and perplexity on a CUDA device (run with `-m gpu`)."""

import json
from pathlib import Path

import pytest
import torch

from steel.cli import main
from steel.eval import evaluate_perplexity, score_multiple_choice
from steel.eval.loaders import load_split

FIXTURES = Path(__file__).parent / "fixtures"

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cuda_model(tiny_model_dir):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from steel.train.load import load_model

    return load_model(tiny_model_dir("soft_moe_causal"), device="cuda", dtype=torch.float32)


def test_cuda_batched_scores_equal_single(cuda_model):
    questions = [q for qs in load_split("ceval", FIXTURES / "ceval", "val", ["law", "marxism"]).questions.values() for q in qs]
    for mode in ("logits", "option-logprob"):
        single = score_multiple_choice(cuda_model, questions, mode, prompt_format="ceval", batch_size=1)
        batched = score_multiple_choice(cuda_model, questions, mode, prompt_format="ceval", batch_size=6)
        for one, many in zip(single.results, batched.results):
            assert one.prediction == many.prediction
            for letter in one.scores:
                assert one.scores[letter] == pytest.approx(many.scores[letter], abs=1e-3)


def test_cuda_generate_and_perplexity(cuda_model):
    questions = load_split("ceval", FIXTURES / "ceval", "val", ["law"]).questions["law"]
    results = score_multiple_choice(cuda_model, questions, "generate", prompt_format="ceval", batch_size=3, max_new_tokens=4)
    assert len(results.results) == 3
    metrics = evaluate_perplexity(cuda_model, ["钢铁是这样炼成的。" * 20], block_size=64, stride=32)
    assert metrics["ppl"] > 1


def test_cuda_cli_bfloat16(tiny_model_dir, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    output = tmp_path / "ceval.json"
    assert main(["eval", "run", str(tiny_model_dir("dense")), "--task", "ceval", "--data-dir", str(FIXTURES / "ceval"),
                 "--subjects", "law,marxism", "--shots", "5", "--device", "cuda", "--output", str(output)]) == 0
    result = json.loads(output.read_text(encoding="utf-8"))
    assert result["model"]["dtype"] == "bfloat16"
    assert result["summary"]["overall"]["total"] == 6
