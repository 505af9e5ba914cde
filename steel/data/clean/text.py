"""Units of Chinese and English text that the operators count: characters, words, sentences, lines.

Data-Juicer's operators split words on whitespace. A Chinese paragraph has no spaces, so it is one
"word" and one line. Steel's operators take a `unit` instead, and this module defines each one:

- `char`: a Unicode code point (a CJK ideograph, a Latin letter and an emoji count one each);
- `space`: a whitespace-separated token with special characters stripped from both ends, lowercased
  (Data-Juicer's words with `tokenization: false`);
- `jieba`: a word from jieba's segmenter (Chinese words, English words, numbers), without
  whitespace and special-character tokens;
- `sentence`: text up to and including a run of 。！？!? (and any closing quotes) or a line end;
- `line`: a line of `str.splitlines()`.

A `TextView` segments a document once and shares the result: measured on the sample corpora,
jieba segmentation is the largest per-document cost, and several filters need the same words.
"""

import logging
import re
import string
import unicodedata
from collections import Counter
from functools import cache

logger = logging.getLogger(__name__)

# Special characters: ASCII punctuation, digits and whitespace, plus every Unicode character whose
# category is punctuation (P*), symbol (S*, which includes emoji), separator (Z*) or control/format
# (Cc, Cf). Close to Data-Juicer's list (built for the same purpose), defined by category so that
# it covers full-width and CJK punctuation consistently.
_ASCII_SPECIAL = frozenset(string.punctuation + string.digits + string.whitespace)
_SPECIAL_CATEGORIES = ("P", "S", "Z")
_SPECIAL_EXACT_CATEGORIES = ("Cc", "Cf")


@cache
def is_special_char(char: str) -> bool:
    """Return whether `char` is punctuation, a symbol (emoji included), whitespace, a digit or a control."""
    if char in _ASCII_SPECIAL:
        return True
    category = unicodedata.category(char)
    return category[0] in _SPECIAL_CATEGORIES or category in _SPECIAL_EXACT_CATEGORIES


def count_special_chars(text: str) -> int:
    return sum(n for char, n in Counter(text).items() if is_special_char(char))


@cache
def special_chars_table() -> dict[int, None]:
    """Build a `str.translate` table that deletes every special character."""
    table = dict.fromkeys(map(ord, _ASCII_SPECIAL))
    for code in range(0x80, 0x110000):
        category = unicodedata.category(chr(code))
        if category[0] in _SPECIAL_CATEGORIES or category in _SPECIAL_EXACT_CATEGORIES:
            table[code] = None
    return table


def remove_special_chars(text: str) -> str:
    return text.translate(special_chars_table())


def strip_special(token: str) -> str:
    start, end = 0, len(token)
    while start < end and is_special_char(token[start]):
        start += 1
    while end > start and is_special_char(token[end - 1]):
        end -= 1
    return token[start:end]


def space_words(text: str) -> list[str]:
    """Whitespace words with special characters stripped from both ends, lowercased (Data-Juicer's unit)."""
    words = []
    for token in text.split():
        token = strip_special(token).lower()
        if token:
            words.append(token)
    return words


@cache
def _jieba():
    import jieba

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return jieba


@cache
def _is_word(token: str) -> bool:
    # Tokens repeat a lot within and across documents, so the check is cached per token.
    return not token.isspace() and bool(strip_special(token))


def jieba_words(text: str) -> list[str]:
    """Words from jieba's segmenter, lowercased, without whitespace and punctuation-only tokens."""
    return [token.lower() for token in _jieba().lcut(text) if _is_word(token)]


WORD_UNITS = ("space", "jieba")
LINE_UNITS = ("line", "sentence")

# A sentence ends at a run of Chinese or ASCII terminal punctuation (closing quotes and brackets
# stay with it) or at a line end. Text after the last terminator is a sentence of its own.
_SENTENCE = re.compile(r"[^。！？!?\n]*[。！？!?]+[”’」』）)\]】\"']*|[^。！？!?\n]+")


def split_sentences(text: str) -> list[str]:
    return [s for s in (m.group().strip() for m in _SENTENCE.finditer(text)) if s]


class TextView:
    """One document's text with its units computed on first use and then shared between operators."""

    __slots__ = ("text", "_words", "_lines", "_sentences", "_char_counts")

    def __init__(self, text: str):
        self.text = text
        self._words: dict[str, list[str]] = {}
        self._lines: list[str] | None = None
        self._sentences: list[str] | None = None
        self._char_counts: Counter | None = None

    def char_counts(self) -> Counter:
        """Count each distinct character of the text (computed once)."""
        if self._char_counts is None:
            self._char_counts = Counter(self.text)
        return self._char_counts

    def words(self, unit: str) -> list[str]:
        if unit not in self._words:
            if unit == "space":
                self._words[unit] = space_words(self.text)
            elif unit == "jieba":
                self._words[unit] = jieba_words(self.text)
            else:
                raise ValueError(f"unknown word unit {unit!r}; expected one of {WORD_UNITS}")
        return self._words[unit]

    def has_words(self, unit: str) -> bool:
        """Return whether the words of `unit` have been computed (an operator needed them)."""
        return unit in self._words

    def lines(self, unit: str = "line") -> list[str]:
        if unit == "line":
            if self._lines is None:
                self._lines = self.text.splitlines()
            return self._lines
        if unit == "sentence":
            if self._sentences is None:
                self._sentences = split_sentences(self.text)
            return self._sentences
        raise ValueError(f"unknown line unit {unit!r}; expected one of {LINE_UNITS}")


def as_view(text: "str | TextView") -> TextView:
    return text if isinstance(text, TextView) else TextView(text)
