"""Document filters: each computes one statistic of a document; a recipe keeps the documents whose
statistic lies in a closed range [min, max].

The statistic functions take a `TextView` (or a plain string) so that words, lines and sentences are
computed once per document and shared between filters. Units are defined in `steel.data.clean.text`;
the defaults are Data-Juicer's units, which are wrong for Chinese (see docs/data-cleaning.md).
"""

import logging
import math
from collections import Counter

import numpy as np

from steel.data.clean.text import TextView, as_view, delete_special_chars, ngram_counts

logger = logging.getLogger(__name__)


def alphanumeric_ratio(text: "str | TextView", tokenization: bool = False) -> float:
    """Letters and digits (`str.isalnum`, so CJK ideographs count) per character, or per Qwen token.

    Per character is Data-Juicer's `tokenization: false`; per token (`tokenization: true`) divides
    by the number of Qwen tokens and so can exceed 1.
    """
    view = as_view(text)
    if not view.text:
        return 0.0
    num_alnum = view.num_alnum_chars()
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
    counts = ngram_counts(text, rep_len)
    num_ngrams = len(text) - rep_len + 1
    if len(counts) == num_ngrams:
        return 0.0  # no n-gram repeats, and the formula below gives 0 too
    frequencies = np.sort(counts)[::-1]
    num_unique = int(np.count_nonzero(frequencies == 1))
    num_top = min(int(math.sqrt(len(frequencies))), len(frequencies) - num_unique)
    return int(frequencies[:num_top].sum()) / num_ngrams


def special_characters_ratio(text: "str | TextView") -> float:
    """Punctuation, symbols (emoji included), digits and whitespace per character."""
    view = as_view(text)
    if not view.text:
        return 0.0
    return view.num_special_chars() / len(view.text)


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
# Exact shortcuts that decide a word filter with little or no segmentation


def jieba_words_num_bounds(text: "str | TextView") -> tuple[int, int]:
    """Lower and upper bounds of `words_num(text, unit="jieba")`, without segmenting.

    jieba splits the text into blocks and segments each block; every other non-space character is
    a token of its own (see `split_jieba_blocks`). A block with a non-special character yields at
    least one counted word, and every counted word contains at least one non-special character.
    """
    view = as_view(text)
    return view.jieba_words_lower_bound(0), len(view.text) - view.num_special_chars()


def repeated_char_ngram_positions(text: str, rep_len: int) -> int:
    """Count the positions of `rep_len`-character strings that occur more than once in the lowercased
    text without special characters.

    Equal words give equal strings here: jieba's words are lowercased one by one, where the whole
    text's `lower()` may turn Σ into ς instead, and so ς counts as σ. Unlike `remove_special_chars`,
    this also deletes the ASCII control characters, which are special characters too.
    """
    letters = delete_special_chars(text.lower(), keep_ascii_controls=False).replace("ς", "σ")
    counts = ngram_counts(letters, rep_len)
    return int(counts[counts > 1].sum())


def word_repetition_upper_bound(text: str, rep_len: int, num_words_lower: int, repeated_positions: int | None = None) -> float:
    """Bound the word `rep_len`-gram repetition ratio from above, without segmenting.

    Every counted word keeps at least one non-special character, so in the lowercased text without
    special characters each word n-gram starts at its own position, and a repeated word n-gram
    starts where some `rep_len`-character string repeats. The repeated occurrences are therefore at
    most the positions of repeated character n-grams (`repeated_char_ngram_positions`, computed here
    unless given), and there are at least `num_words_lower - rep_len + 1` word n-grams.
    """
    if repeated_positions is None:
        repeated_positions = repeated_char_ngram_positions(text, rep_len)
    if repeated_positions == 0:
        return 0.0
    num_ngrams_lower = num_words_lower - rep_len + 1
    return repeated_positions / num_ngrams_lower if num_ngrams_lower > 0 else math.inf


def jieba_words_num_within(view: TextView, min_num: float, max_num: float) -> bool:
    """Return True when `min_num <= words_num(view, "jieba") <= max_num` holds for certain.

    Segments only the blocks needed to lift the lower bound to `min_num`. False means undecided.
    """
    lower, upper = jieba_words_num_bounds(view)
    if upper > max_num:
        return False
    return lower >= min_num or view.jieba_words_lower_bound(min_num) >= min_num


def jieba_word_repetition_at_most(view: TextView, rep_len: int, max_ratio: float) -> bool:
    """Return True when `word_repetition_ratio(view, rep_len, "jieba") <= max_ratio` holds for certain.

    The bound falls as the word count's lower bound rises, so blocks are segmented only until the
    bound reaches `max_ratio`. False means undecided.
    """
    repeated = repeated_char_ngram_positions(view.text, rep_len)
    lower, upper = jieba_words_num_bounds(view)
    if word_repetition_upper_bound(view.text, rep_len, lower, repeated) <= max_ratio:
        return True
    if max_ratio <= 0 or not math.isfinite(max_ratio):
        return False
    # The bound is at most max_ratio once there are `repeated / max_ratio` word n-grams.
    target = math.ceil(repeated / max_ratio) + rep_len
    if target > upper:
        return False
    lower = view.jieba_words_lower_bound(target)
    return word_repetition_upper_bound(view.text, rep_len, lower, repeated) <= max_ratio
