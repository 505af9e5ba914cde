from steel.eval.report import ceval_submission, plot_over_tokens
from steel.eval.results import QuestionResult, summarize


def _result(subject, category, answer, prediction, question_id="0", groups=()):
    return QuestionResult(id=question_id, subject=subject, category=category, answer=answer, prediction=prediction, groups=groups)


def test_summarize_micro_and_macro_accuracy():
    results = [
        _result("a", "STEM", "A", "A"),
        _result("a", "STEM", "B", "A"),
        _result("a", "STEM", "C", "C"),
        _result("a", "STEM", "D", "D"),
        _result("b", "STEM", "A", "B"),
        _result("c", "Other", "A", None, groups=("China specific",)),
    ]
    summary = summarize(results, ["STEM", "Other"])
    assert summary["overall"]["correct"] == 3
    assert summary["overall"]["total"] == 6
    assert summary["overall"]["unparseable"] == 1
    # STEM: 3 of 5 questions; subjects a (3/4) and b (0/1) average to 3/8.
    assert summary["categories"]["STEM"]["accuracy"] == 3 / 5
    assert summary["categories"]["STEM"]["macro_accuracy"] == 3 / 8
    assert summary["overall"]["macro_accuracy"] == (3 / 4 + 0 + 0) / 3
    assert list(summary["categories"]) == ["STEM", "Other", "China specific"]
    assert summary["subjects"]["c"]["unparseable"] == 1


def test_ceval_submission_layout():
    results = [_result("law", "Humanities", None, "B", "0"), _result("law", "Humanities", None, None, "1"),
               _result("logic", "Humanities", None, "D", "0")]
    assert ceval_submission(results) == {"law": {"0": "B", "1": "A"}, "logic": {"0": "D"}}


def test_plot_over_tokens_writes_png(tmp_path):
    path = plot_over_tokens([{"tokens": 2000, "value": 30.0}, {"tokens": 1000, "value": 25.0}], tmp_path / "p.png", "t", "accuracy (%)")
    assert path.read_bytes()[:4] == b"\x89PNG"
