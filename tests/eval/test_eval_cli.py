import json
from pathlib import Path

import pytest
import torch

from steel.cli import main

FIXTURES = Path(__file__).parent / "fixtures"
CEVAL_SUBJECTS = "computer_network,marxism,law,physician"


def _run(*argv):
    return main(["eval", "run", *map(str, argv)])


def test_ceval_five_shot_writes_results(tiny_model_dir, tmp_path, capsys):
    output = tmp_path / "ceval.json"
    assert _run(tiny_model_dir("dense"), "--task", "ceval", "--data-dir", FIXTURES / "ceval",
                "--subjects", CEVAL_SUBJECTS, "--shots", "5", "--limit", "1", "--output", output) == 0
    result = json.loads(output.read_text(encoding="utf-8"))
    assert result["protocol"]["id"] == "strict/v1"
    assert result["protocol"]["shots"] == 5
    assert result["protocol"]["overrides"] == {}
    assert set(result["protocol"]["answer_token_ids"]) == {"A", "B", "C", "D"}
    assert result["protocol"]["scoring"]["prompt"]["answer_prefix"] == "答案："
    assert result["split"] == "val"
    assert result["summary"]["overall"]["total"] == 4
    assert list(result["summary"]["categories"]) == ["STEM", "Social Science", "Humanities", "Other"]
    assert len(result["results"]) == 4
    assert all(r["num_shots"] == 5 for r in result["results"])
    assert len(result["data"]["files_sha256"]) == 64

    correct = sum(r["correct"] for r in result["results"])
    assert result["summary"]["overall"]["correct"] == correct
    markdown = (tmp_path / "ceval.md").read_text(encoding="utf-8")
    assert "| marxism | 马克思主义基本原理 | Social Science |" in markdown
    assert "protocol strict/v1" in capsys.readouterr().out


def test_cmmlu_report_protocol_records_overrides(tiny_model_dir, tmp_path):
    output = tmp_path / "cmmlu.json"
    assert _run(tiny_model_dir("dense"), "--task", "cmmlu", "--data-dir", FIXTURES / "cmmlu",
                "--subjects", "agronomy,ancient_chinese", "--protocol", "steel-llm-report",
                "--max-new-tokens", "3", "--output", output) == 0
    result = json.loads(output.read_text(encoding="utf-8"))
    assert result["protocol"]["id"] == "steel-llm-report/v1"
    assert result["protocol"]["overrides"] == {"max_new_tokens": 3}
    assert result["protocol"]["mode"] == "generate"
    assert result["protocol"]["system_prompt"] == "You are a helpful assistant."
    # The fuzzy fallback maps every reply to an option.
    assert result["summary"]["overall"]["unparseable"] == 0
    assert all(r["output"] is not None for r in result["results"])
    assert "China specific" in result["summary"]["categories"]


def test_mmlu_zero_shot_with_limit(tiny_model_dir, tmp_path):
    output = tmp_path / "mmlu.json"
    assert _run(tiny_model_dir("dense"), "--task", "mmlu", "--data-dir", FIXTURES / "mmlu",
                "--subjects", "anatomy,sociology", "--shots", "0", "--limit", "1", "--output", output) == 0
    result = json.loads(output.read_text(encoding="utf-8"))
    assert result["summary"]["overall"]["num_questions"] == 2
    assert result["protocol"]["overrides"] == {"shots": 0}
    assert result["protocol"]["scoring"]["prompt"]["answer_separator"] == " "


def test_ceval_test_split_submission(tiny_model_dir, tmp_path):
    submission = tmp_path / "submission.json"
    assert _run(tiny_model_dir("dense"), "--task", "ceval", "--data-dir", FIXTURES / "ceval",
                "--subjects", CEVAL_SUBJECTS, "--split", "test", "--output", tmp_path / "test.json",
                "--submission", submission) == 0
    answers = json.loads(submission.read_text(encoding="utf-8"))
    assert sorted(answers) == sorted(CEVAL_SUBJECTS.split(","))
    assert sorted(answers["law"]) == ["0", "1"]
    assert all(letter in "ABCD" for subject in answers.values() for letter in subject.values())


def test_perplexity_task(tiny_model_dir, tmp_path):
    data = tmp_path / "heldout.jsonl"
    data.write_text(
        json.dumps({"text": "钢铁是这样炼成的。"}, ensure_ascii=False) + "\n"
        + "not json\n"
        + json.dumps({"text": "The answer is C."}) + "\n",
        encoding="utf-8",
    )
    output = tmp_path / "ppl.json"
    assert _run(tiny_model_dir("dense"), "--task", "perplexity", "--data", data, "--output", output) == 0
    result = json.loads(output.read_text(encoding="utf-8"))
    assert result["metrics"]["num_documents"] == 2
    assert result["metrics"]["ppl"] > 1
    assert len(result["data_problems"]) == 1
    assert result["data_problems"][0].startswith(f"{data}:2: ")
    assert "Expecting value" in result["data_problems"][0]
    assert "bits/char" in (tmp_path / "ppl.md").read_text(encoding="utf-8")


def test_perplexity_reads_gbk_and_rejects_unreadable(tiny_model_dir, tmp_path):
    gbk = tmp_path / "gbk.jsonl"
    gbk.write_bytes((json.dumps({"text": "钢铁是这样炼成的。"}, ensure_ascii=False) + "\n").encode("gbk"))
    output = tmp_path / "gbk.json"
    assert _run(tiny_model_dir("dense"), "--task", "perplexity", "--data", gbk, "--output", output) == 0
    assert json.loads(output.read_text(encoding="utf-8"))["metrics"]["num_documents"] == 1

    utf16 = tmp_path / "utf16.jsonl"
    utf16.write_text('{"text": "abc"}\n', encoding="utf-16")
    with pytest.raises(SystemExit, match="cannot read"):
        _run(tiny_model_dir("dense"), "--task", "perplexity", "--data", utf16)


def test_missing_model_is_one_line_error(tmp_path):
    data = tmp_path / "docs.jsonl"
    data.write_text('{"text": "abc"}\n', encoding="utf-8")
    with pytest.raises(SystemExit, match="model not found"):
        _run(tmp_path / "nope", "--task", "perplexity", "--data", data)


def test_all_checkpoints_plot(tiny_model_dir, tokenizer_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from steel.tokenizer import load_tokenizer
    from steel.train.checkpoint import save_checkpoint
    from steel.train.distributed import DistributedEnv

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir("dense"))
    optimizer = torch.optim.AdamW(model.parameters())
    env = DistributedEnv(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
    run_dir = tmp_path / "run"

    def write_tokenizer(directory):
        load_tokenizer(tokenizer_dir).save_pretrained(directory / "tokenizer")
        return {"tokenizer_spec": "tokenizer"}

    for step, tokens in ((1, 1000), (2, 2000)):
        save_checkpoint(run_dir, step, model, optimizer, {"tokens": tokens, "stage": "pretrain"}, env,
                        keep_last=5, write_extra=write_tokenizer)

    output = tmp_path / "curve.json"
    assert _run(run_dir, "--task", "ceval", "--data-dir", FIXTURES / "ceval", "--subjects", "law",
                "--shots", "0", "--all-checkpoints", "--output", output) == 0
    result = json.loads(output.read_text(encoding="utf-8"))
    assert [c["model"]["provenance"]["tokens"] for c in result["checkpoints"]] == [1000, 2000]
    assert (tmp_path / "curve.png").stat().st_size > 0


def test_missing_data_dir_fails_cleanly(tiny_model_dir, tmp_path):
    with pytest.raises(SystemExit, match="benchmark directory .* not found"):
        _run(tiny_model_dir("dense"), "--task", "ceval", "--data-dir", tmp_path / "nowhere")
    with pytest.raises(SystemExit, match="problem"):
        _run(tiny_model_dir("dense"), "--task", "ceval", "--data-dir", FIXTURES / "ceval_invalid",
             "--subjects", "computer_network", "--shots", "0")


def test_contamination_finds_copied_question(tmp_path, capsys):
    sft = tmp_path / "sft.jsonl"
    records = [
        # A C-Eval val question with spacing and full-width punctuation changed, inside a chat record.
        {"messages": [{"role": "user", "content": "请回答： 13 乘以 22 等于多少?"}, {"role": "assistant", "content": "286"}]},
        {"text": "完全无关的一段训练文本，讨论天气和交通。"},
    ]
    sft.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
    output = tmp_path / "contamination.json"
    assert main(["eval", "contamination", "--data", str(sft), "--task", "ceval", "--data-dir", str(FIXTURES / "ceval"),
                 "--ngram", "5", "--output", str(output)]) == 0
    report = json.loads(output.read_text(encoding="utf-8"))
    flagged = {(item["split"], item["subject"], item["id"]) for item in report["flagged"]}
    # marxism and physician share this question in the fixtures.
    assert flagged == {("val", "marxism", "0"), ("val", "physician", "0")}
    assert report["flagged"][0]["overlap"] == 1.0
    assert report["flagged"][0]["first_match"] == f"{sft}:1"
    assert report["num_documents"] == 2
    assert "2 of 40 ceval questions overlap" in capsys.readouterr().out
