from pathlib import Path

from steel.eval.loaders import load_split
from steel.eval.prompts import build_prompt, fit_prompt, get_prompt_format

FIXTURES = Path(__file__).parent / "fixtures"


def _ceval(split):
    return load_split("ceval", FIXTURES / "ceval", split, ["marxism"]).questions["marxism"]


def test_ceval_two_shot_prompt_matches_hand_written():
    question = _ceval("val")[0]
    prompt = build_prompt(get_prompt_format("ceval"), question, "马克思主义基本原理", _ceval("dev")[:2])
    expected = (
        "以下是中国关于马克思主义基本原理考试的单项选择题，请选出其中的正确答案。\n\n"
        "3乘以2等于多少？\nA. 6\nB. 7\nC. 5\nD. 16\n答案：A\n\n"
        "4乘以4等于多少？\nA. 17\nB. 16\nC. 15\nD. 26\n答案：B\n\n"
        "13乘以22等于多少？\nA. 286\nB. 287\nC. 285\nD. 296\n答案："
    )
    assert prompt.text == expected
    assert prompt.num_shots == 2


def test_cmmlu_zero_shot_prompt_matches_hand_written():
    question = load_split("cmmlu", FIXTURES / "cmmlu", "test", ["arts"]).questions["arts"][0]
    prompt = build_prompt(get_prompt_format("cmmlu"), question, "艺术学")
    assert prompt.text == (
        "以下是关于艺术学的单项选择题，请直接给出正确答案的选项。\n\n"
        "题目：13乘以22等于多少？\nA. 286\nB. 287\nC. 285\nD. 296\n答案是："
    )


def test_mmlu_one_shot_prompt_matches_hand_written():
    split = {s: load_split("mmlu", FIXTURES / "mmlu", s, ["anatomy"]).questions["anatomy"] for s in ("dev", "test")}
    prompt = build_prompt(get_prompt_format("mmlu"), split["test"][0], "anatomy", split["dev"][:1])
    assert prompt.text == (
        "The following are multiple choice questions (with answers) about anatomy.\n\n"
        "What is 3 times 2?\nA. 6\nB. 7\nC. 5\nD. 16\nAnswer: A\n\n"
        "What is 23 times 42?\nA. 967\nB. 966\nC. 965\nD. 976\nAnswer:"
    )


def test_fit_prompt_drops_shots_not_question():
    fmt = get_prompt_format("ceval")
    question, shots = _ceval("val")[0], _ceval("dev")

    def count_chars(prompt):
        return len(prompt.text)

    full = build_prompt(fmt, question, "马克思主义基本原理", shots)
    two_shot = build_prompt(fmt, question, "马克思主义基本原理", shots[:2])
    fitted = fit_prompt(fmt, question, "马克思主义基本原理", shots, count_chars, len(two_shot.text))
    assert fitted.num_shots == 2
    assert fitted.text == two_shot.text
    assert fit_prompt(fmt, question, "x", shots, count_chars, len(full.text) + 10).num_shots == 5

    too_small = fit_prompt(fmt, question, "马克思主义基本原理", shots, count_chars, 10)
    assert too_small.num_shots == 0
    assert too_small.over_context
    assert "13乘以22等于多少？" in too_small.text
