"""Operators for source code, and the Qwen token count that "per token" ratios divide by.

The Steel-LLM report cleaned StarCoder's C++, Java and Python files with 13 operators (listed in
`REPORT_CODE_OPERATORS`); its published Data-Juicer configuration adds whitespace normalisation and a
second, per-character alphanumeric filter (recipes/data/steel-code.yaml has all 15). Code is
measured in characters, lines and whitespace words: jieba has nothing to add to identifiers.
"""

import logging
import re
from functools import cache

logger = logging.getLogger(__name__)

# (operator, parameters) as the report lists them for code.
REPORT_CODE_OPERATORS: list[tuple[str, dict]] = [
    ("clean_copyright_mapper", {}),
    ("clean_email_mapper", {}),
    ("clean_links_mapper", {}),
    ("fix_unicode_mapper", {}),
    ("punctuation_normalization_mapper", {}),
    ("alphanumeric_filter", {"tokenization": True, "min_ratio": 0.546, "max_ratio": 3.65}),
    ("average_line_length_filter", {"min_len": 10, "max_len": 150}),
    ("character_repetition_filter", {"max_ratio": 0.36}),
    ("maximum_line_length_filter", {"max_len": 1000}),
    ("text_length_filter", {"max_len": 96714}),
    ("words_num_filter", {"min_num": 20, "max_num": 6640}),
    ("word_repetition_filter", {"rep_len": 10, "max_ratio": 0.357}),
    ("document_simhash_deduplicator", {"window_size": 6, "num_blocks": 6, "hamming_distance": 4}),
]


@cache
def _qwen_encode():
    """The Qwen1.5 tokenizer's `encode`, from steel.tokenizer; tiktoken over the same ranks if absent."""
    try:
        from steel.tokenizer import load_tokenizer

        return load_tokenizer("qwen").encode
    except ImportError as error:
        logger.warning("steel.tokenizer is unavailable (%s); counting tokens with tiktoken over the Qwen ranks", error)
    import base64

    import tiktoken

    from steel.resources import package_file

    ranks = {}
    for line in package_file("qwen.tiktoken").read_text(encoding="utf-8").splitlines():
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    pattern = (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
        r"|\s*[\r\n]+|\s+(?!\S)|\s+"
    )
    encoding = tiktoken.Encoding("qwen-ranks", pat_str=pattern, mergeable_ranks=ranks, special_tokens={})
    return encoding.encode_ordinary


def count_tokens(text: str) -> int:
    """Number of Qwen1.5 tokens in `text` (special-token text counts as ordinary text)."""
    return len(_qwen_encode()(text))


_BLOCK_COMMENT = re.compile(r"\s*/\*.*?\*/[ \t]*\n?", re.DOTALL)
_LINE_COMMENT_PREFIXES = ("#", "//", "--", ";;")
# StarCoder files start with metadata lines such as `<reponame>owner/repo`; the header follows them.
_METADATA_LINE = re.compile(r"<(?:reponame|filename|gh_stars)>[^\n]*\n")


def clean_copyright(text: str) -> str:
    """Remove a leading comment block that mentions "copyright" (a /* */ block or consecutive # // -- lines)."""
    if "copyright" not in text.lower():
        return text
    start = 0
    while match := _METADATA_LINE.match(text, start):
        start = match.end()
    prefix, body = text[:start], text[start:]

    block = _BLOCK_COMMENT.match(body)
    if block:
        if "copyright" in block.group().lower():
            return prefix + body[block.end():]
        return text

    lines = body.splitlines(keepends=True)
    if lines and lines[0].startswith("#!"):
        prefix, lines = prefix + lines[0], lines[1:]  # a shebang line is code, not a licence header
    num_header_lines = 0
    for line in lines:
        if not line.strip().startswith(_LINE_COMMENT_PREFIXES):
            break
        num_header_lines += 1
    header = "".join(lines[:num_header_lines])
    if num_header_lines and "copyright" in header.lower():
        return prefix + "".join(lines[num_header_lines:])
    return text
