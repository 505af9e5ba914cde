"""Document filters: each computes one statistic of a document; a recipe keeps the documents whose
statistic lies in a closed range [min, max].

The statistic functions take a `TextView` (or a plain string) so that words, lines and sentences are
computed once per document and shared between filters. Units are defined in `steel.data.clean.text`;
the defaults are Data-Juicer's units, which are wrong for Chinese (see docs/data-cleaning.md).
"""

import logging
import math
import re
from collections import Counter

from steel.data.clean.text import TextView, as_view, is_special_char, remove_special_chars, strip_special

logger = logging.getLogger(__name__)


def _count_alnum(view: TextView) -> int:
    return sum(n for char, n in view.char_counts().items() if char.isalnum())


def alphanumeric_ratio(text: "str | TextView", tokenization: bool = False) -> float:
    """Letters and digits (`str.isalnum`, so CJK ideographs count) per character, or per Qwen token.

    Per character is Data-Juicer's `tokenization: false`; per token (`tokenization: true`) divides
    by the number of Qwen tokens and so can exceed 1.
    """
    view = as_view(text)
    if not view.text:
        return 0.0
    num_alnum = _count_alnum(view)
    if tokenization:
        from steel.data.clean.code import count_tokens

        return num_alnum / max(count_tokens(view.text), 1)
    return num_alnum / len(view.text)


def average_line_length(text: "str | TextView", unit: str = "line") -> float:
    """Mean length in characters of the lines (`unit: line`) or the sentences (`unit: sentence`)."""
    view = as_view(text)
    lines = view.lines(unit)
    if not lines:
        return 0.0
    if unit == "line":
        return len(view.text) / len(lines)  # Data-Juicer's definition: line breaks count
    return sum(map(len, lines)) / len(lines)


def maximum_line_length(text: "str | TextView", unit: str = "line") -> int:
    lines = as_view(text).lines(unit)
    return max(map(len, lines), default=0)


def character_repetition_ratio(text: "str | TextView", rep_len: int = 10) -> float:
    """Share of character `rep_len`-grams that belong to the sqrt(N) most frequent repeated ones.

    N is the number of distinct n-grams. This is the repetition measure of the BigScience ROOTS
    filters that Data-Juicer uses; 0 for a text without repeats, near 1 for one phrase over and over.
    """
    text = as_view(text).text
    if len(text) < rep_len:
        return 0.0
    counts = Counter(text[i : i + rep_len] for i in range(len(text) - rep_len + 1))
    frequencies = sorted(counts.values(), reverse=True)
    num_unique = sum(1 for f in frequencies if f == 1)
    num_top = min(int(math.sqrt(len(frequencies))), len(frequencies) - num_unique)
    return sum(frequencies[:num_top]) / sum(frequencies)


def special_characters_ratio(text: "str | TextView") -> float:
    """Punctuation, symbols (emoji included), digits and whitespace per character."""
    view = as_view(text)
    if not view.text:
        return 0.0
    num_special = sum(n for char, n in view.char_counts().items() if is_special_char(char))
    return num_special / len(view.text)


def text_length(text: "str | TextView") -> int:
    return len(as_view(text).text)


def words_num(text: "str | TextView", unit: str = "space") -> int:
    """Number of words: whitespace words (`space`, Data-Juicer's) or jieba-segmented words (`jieba`)."""
    return len(as_view(text).words(unit))


def word_repetition_ratio(text: "str | TextView", rep_len: int = 10, unit: str = "space") -> float:
    """Share of word `rep_len`-grams that occur more than once (counting every occurrence)."""
    words = as_view(text).words(unit)
    if len(words) < rep_len:
        return 0.0
    counts = Counter(tuple(words[i : i + rep_len]) for i in range(len(words) - rep_len + 1))
    total = sum(counts.values())
    repeated = sum(c for c in counts.values() if c > 1)
    return repeated / total


# ---------------------------------------------------------------------------------------------
# Exact shortcuts that decide a word filter without segmenting the document

# The pattern jieba 0.42 uses to split text into blocks before segmenting each one.
_JIEBA_BLOCK = re.compile("[\u4e00-\u9fd5a-zA-Z0-9+#&._%\\-]+")


def jieba_words_num_bounds(text: "str | TextView") -> tuple[int, int]:
    """Lower and upper bounds of `words_num(text, unit="jieba")`, without segmenting.

    jieba splits the text into blocks of `_JIEBA_BLOCK` characters and segments each block; every
    other non-space character is a token of its own. A block with a non-special character yields
    at least one counted word, and every counted word holds at least one non-special character.
    """
    view = as_view(text)
    lower = sum(1 for block in _JIEBA_BLOCK.findall(view.text) if strip_special(block))
    outside = _JIEBA_BLOCK.sub("", view.text)
    lower += len(remove_special_chars(outside))
    num_special = sum(n for char, n in view.char_counts().items() if is_special_char(char))
    return lower, len(view.text) - num_special


def word_repetition_upper_bound(text: str, rep_len: int, num_words_lower: int) -> float:
    """Bound the word `rep_len`-gram repetition ratio from above, without segmenting.

    Every counted word keeps at least one non-special character, so in the lowercased text without
    special characters each word n-gram starts at its own position, and a repeated word n-gram
    starts where some `rep_len`-character string repeats. The repeated occurrences are therefore at
    most the positions of repeated character n-grams, and there are at least
    `num_words_lower - rep_len + 1` word n-grams.
    """
    letters = remove_special_chars(text.lower())
    counts = Counter(letters[i : i + rep_len] for i in range(len(letters) - rep_len + 1))
    repeated_positions = sum(c for c in counts.values() if c > 1)
    if repeated_positions == 0:
        return 0.0
    num_ngrams_lower = num_words_lower - rep_len + 1
    return repeated_positions / num_ngrams_lower if num_ngrams_lower > 0 else math.inf
