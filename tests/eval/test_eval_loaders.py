from pathlib import Path

import pytest

from steel.eval.benchmarks import BENCHMARKS, get_benchmark
from steel.eval.loaders import BenchmarkDataError, load_split

FIXTURES = Path(__file__).parent / "fixtures"

CEVAL_SUBJECTS = ["computer_network", "marxism", "law", "physician"]
CMMLU_SUBJECTS = ["agronomy", "ancient_chinese", "astronomy", "arts"]
MMLU_SUBJECTS = ["abstract_algebra", "anatomy", "philosophy", "sociology"]


def test_subject_tables_have_official_sizes():
    assert len(BENCHMARKS["ceval"].subjects) == 52
    assert len(BENCHMARKS["cmmlu"].subjects) == 67
    assert len(BENCHMARKS["mmlu"].subjects) == 57
    for benchmark in BENCHMARKS.values():
        assert {s.category for s in benchmark.subjects.values()} <= set(benchmark.categories)


def test_ceval_table_has_chinese_names_and_categories():
    subjects = get_benchmark("ceval").subjects
    assert subjects["computer_network"].name == "计算机网络"
    assert subjects["mao_zedong_thought"].category == "Social Science"
    assert subjects["physician"].category == "Other"
    counts = {c: sum(s.category == c for s in subjects.values()) for c in get_benchmark("ceval").categories}
    assert counts == {"STEM": 20, "Social Science": 10, "Humanities": 11, "Other": 11}


def test_ceval_val_layout():
    loaded = load_split("ceval", FIXTURES / "ceval", "val", CEVAL_SUBJECTS)
    assert loaded.problems == []
    assert loaded.num_questions == 12
    first = loaded.questions["marxism"][0]
    assert first.question == "13乘以22等于多少？"
    assert first.options == {"A": "286", "B": "287", "C": "285", "D": "296"}
    assert first.answer == "A"
    assert first.category == "Social Science"
    assert first.id == "0"


def test_ceval_dev_keeps_explanation():
    loaded = load_split("ceval", FIXTURES / "ceval", "dev", ["law"])
    assert loaded.questions["law"][0].explanation == "计算可得5。"


def test_ceval_test_split_has_no_answers():
    loaded = load_split("ceval", FIXTURES / "ceval", "test", CEVAL_SUBJECTS)
    assert loaded.num_questions == 8
    assert all(q.answer is None for qs in loaded.questions.values() for q in qs)


def test_cmmlu_layout_and_china_specific_group():
    loaded = load_split("cmmlu", FIXTURES / "cmmlu", "test", CMMLU_SUBJECTS)
    assert loaded.num_questions == 8
    question = loaded.questions["ancient_chinese"][1]
    assert question.answer == "A"
    assert question.id == "1"
    assert question.category == "Social Science"
    assert question.groups == ("China specific",)
    assert loaded.questions["arts"][0].groups == ()


def test_mmlu_layout_without_header():
    loaded = load_split("mmlu", FIXTURES / "mmlu", "test", MMLU_SUBJECTS)
    assert loaded.num_questions == 8
    question = loaded.questions["sociology"][0]
    assert question.question == "What is 23 times 42?"
    assert question.answer == "D"
    assert question.category == "social sciences"


def test_invalid_rows_are_reported_with_file_and_line():
    directory = FIXTURES / "ceval_invalid"
    with pytest.raises(BenchmarkDataError) as error:
        load_split("ceval", directory, "val", ["computer_network", "marxism"])
    message = str(error.value)
    path = directory / "val" / "computer_network_val.csv"
    # The first record spans lines 2-3, so the short row starts on line 4.
    assert f"{path}:4: row has 6 fields; the header has 7" in message
    assert f"{path}:5: answer 'E' is not one of A, B, C, D" in message
    assert f"{directory / 'val' / 'marxism_val.csv'}: file for subject 'marxism' not found" in message
    assert "3 problem(s)" in message


def test_skip_invalid_keeps_valid_rows_and_reports():
    loaded = load_split("ceval", FIXTURES / "ceval_invalid", "val", ["computer_network", "marxism"], skip_invalid=True)
    questions = loaded.questions["computer_network"]
    assert [q.id for q in questions] == ["0", "3"]
    assert questions[0].question == "下列说法，哪一项正确？\n（多行题干）"
    assert len(loaded.problems) == 3


def test_unknown_subject_and_split_are_rejected():
    with pytest.raises(ValueError, match="unknown ceval subject"):
        load_split("ceval", FIXTURES / "ceval", "val", ["astrology"])
    with pytest.raises(ValueError, match="cmmlu has no split 'val'"):
        load_split("cmmlu", FIXTURES / "cmmlu", "val", CMMLU_SUBJECTS)
