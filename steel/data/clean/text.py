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
jieba segmentation costs far more per character than any other operator, and several filters need
the same words. It also segments jieba's blocks one at a time, so that a filter can stop once a
lower bound of the word count decides it.
"""

import logging
import re
import string
import unicodedata
from collections import Counter
from functools import cache

import numpy as np

logger = logging.getLogger(__name__)

# Special characters: ASCII punctuation, digits and whitespace, plus every Unicode character whose
# category is punctuation (P*), symbol (S*, which includes emoji), separator (Z*) or control/format
# (Cc, Cf). Close to Data-Juicer's list (built for the same purpose), defined by category so that
# it covers full-width and CJK punctuation consistently.
_ASCII_SPECIAL = frozenset(string.punctuation + string.digits + string.whitespace)
_SPECIAL_CATEGORIES = ("P", "S", "Z")
_SPECIAL_EXACT_CATEGORIES = ("Cc", "Cf")


def is_special_char_uncached(char: str) -> bool:
    """Return whether `char` is punctuation, a symbol (emoji included), whitespace, a digit or a control."""
    if char in _ASCII_SPECIAL:
        return True
    category = unicodedata.category(char)
    return category[0] in _SPECIAL_CATEGORIES or category in _SPECIAL_EXACT_CATEGORIES


# Cached for the characters documents contain. Scanning every BMP character uses the uncached one,
# which keeps the cache small.
is_special_char = cache(is_special_char_uncached)


def count_special_chars(text: str) -> int:
    return sum(n for char, n in Counter(text).items() if is_special_char(char))


_ALNUM_RUNS = re.compile(r"[^\W_]+")
_ASTRAL_RUNS = re.compile("[\U00010000-\U0010ffff]+")


def _range_class(codes: list[int]) -> str:
    """Write code points as the ranges of a regular-expression character class."""
    ranges: list[list[int]] = []
    for code in codes:
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    return "".join(f"\\U{first:08x}-\\U{last:08x}" for first, last in ranges)


@cache
def _special_runs_pattern(keep_ascii_controls: bool) -> re.Pattern:
    """Match runs of special characters of the Basic Multilingual Plane.

    Python's `re` compiles a class of such characters into a bitmap, which makes deleting them
    faster than `str.translate`. A class with characters beyond it would be searched range by range.
    """
    codes = _special_codes_in_bmp()
    if keep_ascii_controls:
        codes = [code for code in codes if code >= 0x80 or chr(code) in _ASCII_SPECIAL]
    return re.compile(f"[{_range_class(codes)}]+")


@cache
def _special_codes_in_bmp() -> list[int]:
    return [code for code in range(0x10000) if is_special_char_uncached(chr(code))]


def _without_special(match: re.Match) -> str:
    return "".join(char for char in match.group() if not is_special_char(char))


def delete_special_chars(text: str, keep_ascii_controls: bool) -> str:
    """Delete every special character (`is_special_char`), keeping the ASCII controls if asked."""
    text = _special_runs_pattern(keep_ascii_controls).sub("", text)
    if _ASTRAL_RUNS.search(text):
        text = _ASTRAL_RUNS.sub(_without_special, text)
    return text


def remove_special_chars(text: str) -> str:
    """Delete every special character except the ASCII control characters."""
    return delete_special_chars(text, keep_ascii_controls=True)


def strip_special(token: str) -> str:
    start, end = 0, len(token)
    while start < end and is_special_char(token[start]):
        start += 1
    while end > start and is_special_char(token[end - 1]):
        end -= 1
    return token[start:end]


# Measured on the sample corpora, a Counter beats numpy hashing below about this many n-grams.
_NUMPY_NGRAM_MIN = 200
_HASH_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)


def ngram_counts(text: str, n: int) -> np.ndarray:
    """Count how often each distinct character `n`-gram of `text` occurs (int64 counts, in no set order)."""
    num_ngrams = len(text) - n + 1
    if num_ngrams <= 0:
        return np.zeros(0, dtype=np.int64)
    if n >= 1 and num_ngrams >= _NUMPY_NGRAM_MIN:
        counts = _hashed_ngram_counts(text, n)
        if counts is not None:
            return counts
    counter = Counter(text[i : i + n] for i in range(num_ngrams))
    return np.fromiter(counter.values(), dtype=np.int64, count=len(counter))


def _hashed_ngram_counts(text: str, n: int) -> np.ndarray | None:
    """Count n-grams by a polynomial hash of their code points; None if two different n-grams collide.

    Sorting the hashes puts equal ones next to each other, and every such pair is compared code
    point by code point, so the counts are exact whenever this returns them.
    """
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.uint64)
    num_ngrams = len(codes) - n + 1
    hashes = codes[:num_ngrams].copy()
    for offset in range(1, n):
        hashes *= _HASH_MULTIPLIER  # wraps around modulo 2**64
        hashes += codes[offset : offset + num_ngrams]

    order = np.argsort(hashes)
    sorted_hashes = hashes[order]
    same = np.flatnonzero(sorted_hashes[1:] == sorted_hashes[:-1])
    if len(same):
        windows = np.lib.stride_tricks.sliding_window_view(codes, n)
        if not (windows[order[same]] == windows[order[same + 1]]).all():
            return None
    boundaries = np.flatnonzero(np.concatenate(([True], sorted_hashes[1:] != sorted_hashes[:-1], [True])))
    return np.diff(boundaries)


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


@cache
def _jieba_block_pattern() -> re.Pattern:
    import jieba  # the module only: its dictionary loads on the first segmentation

    return jieba.re_han_default


def split_jieba_blocks(text: str) -> list[str]:
    """Split `text` as jieba 0.42 does before segmenting: blocks at the odd indices, the rest between.

    jieba segments each block (a run of CJK ideographs, ASCII letters, digits and `+#&._%-`) on its
    own and makes every other character a token of its own. A text's words are therefore its blocks'
    words and the word characters between them, in order.
    """
    return _jieba_block_pattern().split(text)


# A private-use character: not special, so deleting special characters keeps it as a separator.
_SEPARATOR = "\ue000"


def _count_with_word_char(blocks: list[str]) -> int:
    """Count the blocks with a non-special character, deleting special characters in one call."""
    joined = _SEPARATOR.join(blocks)
    if joined.count(_SEPARATOR) != len(blocks) - 1:
        return sum(1 for block in blocks if strip_special(block))  # a block contains the separator
    remaining = delete_special_chars(joined, keep_ascii_controls=False).split(_SEPARATOR)
    return sum(1 for block in remaining if block)


def _words_between_blocks(piece: str) -> list[str]:
    return [char.lower() for char in piece if _is_word(char)]


WORD_UNITS = ("space", "jieba")
LINE_UNITS = ("line", "sentence")

# A sentence ends at a run of Chinese or ASCII terminal punctuation (closing quotes and brackets
# stay with it) or at a line end. Text after the last terminator is a sentence of its own.
_SENTENCE = re.compile(r"[^。！？!?\n]*[。！？!?]+[”’」』）)\]】\"']*|[^。！？!?\n]+")


def split_sentences(text: str) -> list[str]:
    return [s for s in (m.group().strip() for m in _SENTENCE.finditer(text)) if s]


class TextView:
    """One document's text with its units computed on first use and then shared between operators."""

    __slots__ = ("text", "_words", "_lines", "_sentences", "_num_special", "_jieba_pieces", "_jieba_block_words", "_jieba_lower")

    def __init__(self, text: str):
        self.text = text
        self._words: dict[str, list[str]] = {}
        self._lines: list[str] | None = None
        self._sentences: list[str] | None = None
        self._num_special: int | None = None
        self._jieba_pieces: list[str] | None = None
        self._jieba_block_words: dict[int, list[str]] = {}  # piece index -> words of that block
        self._jieba_lower: int | None = None  # lower bound of the jieba word count so far

    def num_special_chars(self) -> int:
        """Count the special characters (`is_special_char`) of the text (computed once)."""
        if self._num_special is None:
            self._num_special = len(self.text) - len(delete_special_chars(self.text, keep_ascii_controls=False))
        return self._num_special

    def num_alnum_chars(self) -> int:
        """Count the letters and digits (`str.isalnum`) of the text."""
        # In a str pattern `\w` is `str.isalnum()` or `_`, so this deletes exactly the isalnum characters.
        return len(self.text) - len(_ALNUM_RUNS.sub("", self.text))

    def words(self, unit: str) -> list[str]:
        if unit not in self._words:
            if unit == "space":
                self._words[unit] = space_words(self.text)
            elif unit == "jieba":
                self._words[unit] = self._all_jieba_words()
            else:
                raise ValueError(f"unknown word unit {unit!r}; expected one of {WORD_UNITS}")
        return self._words[unit]

    def has_words(self, unit: str) -> bool:
        """Return whether the words of `unit` have been computed (an operator needed them)."""
        return unit in self._words

    def _jieba_block_pieces(self) -> list[str]:
        if self._jieba_pieces is None:
            self._jieba_pieces = split_jieba_blocks(self.text)
        return self._jieba_pieces

    def _words_of_block(self, index: int) -> list[str]:
        if index not in self._jieba_block_words:
            self._jieba_block_words[index] = jieba_words(self._jieba_block_pieces()[index])
        return self._jieba_block_words[index]

    def _all_jieba_words(self) -> list[str]:
        """Equal to `jieba_words(self.text)`, reusing the blocks already segmented."""
        words = []
        for index, piece in enumerate(self._jieba_block_pieces()):
            words.extend(self._words_of_block(index) if index % 2 else _words_between_blocks(piece))
        return words

    def jieba_words_lower_bound(self, target: float) -> int:
        """Return a lower bound of `len(self.words("jieba"))` that reaches `target` if the count does.

        Before segmenting, each block with a word character counts as one word. Blocks are then
        segmented longest first, each replacing its one word by its real count, until the bound
        reaches `target`. Once every block is segmented, the bound is the count itself.
        """
        if "jieba" in self._words:
            return len(self._words["jieba"])
        pieces = self._jieba_block_pieces()
        if self._jieba_lower is None:
            # No block is segmented yet: only the loop below segments blocks before `words` is called.
            num_word_blocks = _count_with_word_char(pieces[1::2])
            between = "".join(pieces[0::2])
            num_words_between = len(delete_special_chars(between, keep_ascii_controls=False))
            self._jieba_lower = num_word_blocks + num_words_between
        if self._jieba_lower >= target:
            return self._jieba_lower

        unsegmented = [i for i in range(1, len(pieces), 2) if i not in self._jieba_block_words]
        for index in sorted(unsegmented, key=lambda i: -len(pieces[i])):
            counted_before = self._piece_lower_bound(index)
            self._jieba_lower += len(self._words_of_block(index)) - counted_before
            if self._jieba_lower >= target:
                break
        return self._jieba_lower

    def _piece_lower_bound(self, index: int) -> int:
        """Words in piece `index`: exact between blocks and for a segmented block, else 1 per block with a word character."""
        piece = self._jieba_block_pieces()[index]
        if index % 2 == 0:
            return len(_words_between_blocks(piece))
        if index in self._jieba_block_words:
            return len(self._jieba_block_words[index])
        return 1 if strip_special(piece) else 0

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
