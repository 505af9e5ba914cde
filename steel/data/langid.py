"""Offline language identification for Chinese, English and everything else, by script.

A text is Chinese when its Han characters carry at least as much content as its Latin letters,
English when Latin letters dominate and read like English, and "other" otherwise (Japanese,
Korean, other Latin-script languages, or no letters at all). Content is compared by weighting a
Latin letter as 1/3 of a Han character: an English sentence needs roughly three letters for what
Chinese writes with one character (for example "The quick brown fox jumps over the lazy dog" is
35 letters, "敏捷的棕色狐狸跳过了懒狗" 12 characters). A Chinese instruction that quotes English
("把下面这句话翻译成英文：...") therefore stays Chinese.

This is a filter for corpora whose languages are known to be mostly Chinese and English, as in
the instruction sets that are filtered to their Chinese part. It is not a general identifier of
the world's languages; a Chinese text written in Pinyin, for example, is not recognised.
"""

import re
from dataclasses import dataclass

HAN_PATTERN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]+")
KANA_PATTERN = re.compile(r"[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f]+")
HANGUL_PATTERN = re.compile(r"[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]+")
ASCII_LATIN_PATTERN = re.compile(r"[A-Za-z\uff21-\uff3a\uff41-\uff5a]+")  # including full-width forms
OTHER_LATIN_PATTERN = re.compile(r"[\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f]+")
WORD_PATTERN = re.compile(r"[A-Za-z]+")

LATIN_WEIGHT = 1 / 3  # content of one Latin letter relative to one Han character (see above)
MIN_KANA_SHARE = 0.2  # kana among Han + kana above which a text is Japanese
MIN_ENGLISH_STOPWORD_SHARE = 0.08  # English function words among the words of an English text
MIN_WORDS_FOR_STOPWORD_CHECK = 8

ENGLISH_STOPWORDS = frozenset(
    "a an the and or but if of to in on at by for with from as is are was were be been being it its "
    "this that these those i you he she we they me him her us them my your his our their not no do "
    "does did have has had will would can could should may might what which who when where why how "
    "all any some there here so than then too very just about into over after before".split()
)


@dataclass(frozen=True)
class ScriptCounts:
    """Number of letters of each script in a text."""

    han: int
    kana: int
    hangul: int
    latin: int  # ASCII and full-width Latin letters
    other_latin: int  # accented Latin letters
    other_letters: int  # letters of any other script (Cyrillic, Arabic, ...)


def _matched_chars(pattern: re.Pattern, text: str) -> int:
    return sum(len(match) for match in pattern.findall(text))


def script_counts(text: str) -> ScriptCounts:
    han = _matched_chars(HAN_PATTERN, text)
    kana = _matched_chars(KANA_PATTERN, text)
    hangul = _matched_chars(HANGUL_PATTERN, text)
    latin = _matched_chars(ASCII_LATIN_PATTERN, text)
    other_latin = _matched_chars(OTHER_LATIN_PATTERN, text)
    letters = sum(1 for char in text if char.isalpha())
    other_letters = max(0, letters - han - kana - hangul - latin - other_latin)
    return ScriptCounts(han, kana, hangul, latin, other_latin, other_letters)


def detect_language(text: str) -> str:
    """Return "zh", "en" or "other" for a text (see the module docstring for the rules)."""
    counts = script_counts(text)
    han_content = counts.han + counts.kana
    latin_content = LATIN_WEIGHT * (counts.latin + counts.other_latin)
    scores = {
        "han": han_content,
        "latin": latin_content,
        "hangul": counts.hangul,
        "other": counts.other_letters,
    }
    script = max(scores, key=scores.get)
    if scores[script] == 0:
        return "other"

    if script == "han":
        is_japanese = counts.kana > MIN_KANA_SHARE * han_content
        return "other" if is_japanese else "zh"
    if script == "latin":
        return "en" if _reads_like_english(text, counts) else "other"
    return "other"


def _reads_like_english(text: str, counts: ScriptCounts) -> bool:
    if counts.other_latin > 0.05 * counts.latin:
        return False
    words = [word.lower() for word in WORD_PATTERN.findall(text)]
    if len(words) < MIN_WORDS_FOR_STOPWORD_CHECK:
        return True  # too short to tell English from other plain-ASCII languages
    stopwords = sum(1 for word in words if word in ENGLISH_STOPWORDS)
    return stopwords >= MIN_ENGLISH_STOPWORD_SHARE * len(words)


def is_chinese(text: str) -> bool:
    return detect_language(text) == "zh"
