import pytest

from steel.eval.extraction import extract_letter, match_option_text

LETTERS = ["A", "B", "C", "D"]

CASES = [
    # (reply, expected letter or None, expected method)
    ("答案是C", "C", "pattern"),
    ("正确答案：C", "C", "pattern"),
    ("正确选项为B。", "B", "pattern"),
    ("所以答案为(B)", "B", "pattern"),
    ("应选D。", "D", "pattern"),
    ("选C", "C", "pattern"),
    ("(C)", "C", "leading"),
    ("C. 北京", "C", "leading"),
    ("B", "B", "leading"),
    ("答案是C。A选项错误，因为它混淆了概念。", "C", "pattern"),
    ("The answer is B.", "B", "pattern"),
    ("Answer: (A)", "A", "pattern"),
    ("Correct answer: D", "D", "pattern"),
    ("A good choice here is D", "D", "single-letter"),
    ("I think it is A.", "A", "single-letter"),
    ("答案：Ｂ", "B", "pattern"),
    ("（Ｃ）", "C", "leading"),
    ("Ｄ", "D", "leading"),
    ("答案：AC", None, "ambiguous"),
    ("答案是A或C", None, "ambiguous"),
    ("Both B and C look right.", None, "ambiguous"),
    ("选项C是错误的，选项B正确", None, "ambiguous"),
    ("我不知道", None, "none"),
    ("A cat is an animal.", None, "none"),
    ("", None, "none"),
]


@pytest.mark.parametrize("reply, letter, method", CASES)
def test_extract_letter_table(reply, letter, method):
    extraction = extract_letter(reply, LETTERS)
    assert extraction.letter == letter
    assert extraction.method == method


def test_extract_letter_respects_option_count():
    # With two options, "C" is not an answer.
    assert extract_letter("答案是C", ["A", "B"]).letter is None
    assert extract_letter("答案是B", ["A", "B"]).letter == "B"


def test_match_option_text_prefers_contained_option():
    options = {"A": "北京", "B": "上海", "C": "广州", "D": "深圳"}
    assert match_option_text("中国的首都是北京。", options) == "A"
    assert match_option_text("我认为是深圳市", options) == "D"


def test_match_option_text_uses_similarity():
    options = {"A": "photosynthesis", "B": "respiration"}
    assert match_option_text("respirasion", options) == "B"
    # A reply unlike every option still maps to a letter.
    assert match_option_text("???", options) in options
