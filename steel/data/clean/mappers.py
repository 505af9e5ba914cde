"""Text mappers: each takes a document's text and returns the cleaned text.

The function names follow Data-Juicer's operator names without the `_mapper` suffix, and their
defaults are the parameters the Steel-LLM authors ran. Each mapper checks cheaply whether its
pattern can occur before doing the expensive work, so clean text passes through at string-scan cost.
"""

import html.parser
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from steel.data.clean.text import remove_special_chars

# ---------------------------------------------------------------------------------------------
# Traditional to simplified Chinese


@cache
def _opencc(mode: str):
    import opencc

    return opencc.OpenCC(mode)


@dataclass(frozen=True)
class _ConversionTriggers:
    """The characters and phrases that OpenCC's tables for one mode change, arranged for a fast check."""

    chars: frozenset[str]  # characters that convert to something else
    phrases: re.Pattern | None  # phrases that convert as a whole and contain none of `chars`
    any_trigger: frozenset[str]  # `chars` plus one character of each phrase in `phrases`
    # The characters of `any_trigger` in the Basic Multilingual Plane, as a class that `re` compiles
    # into a bitmap: searching with it is faster than `frozenset.isdisjoint`.
    any_trigger_in_bmp: re.Pattern

    def absent_from(self, text: str) -> bool:
        """Return whether `text` contains no character of `any_trigger`."""
        if self.any_trigger_in_bmp.search(text):
            return False
        return not _OUTSIDE_BMP.search(text) or self.any_trigger.isdisjoint(text)


_OUTSIDE_BMP = re.compile("[\U00010000-\U0010ffff]")


@cache
def _conversion_triggers(mode: str) -> _ConversionTriggers | None:
    """Collect what OpenCC's `mode` tables can change: single characters, and phrases that change as a whole.

    A text that contains none of these characters and none of these phrases converts to itself,
    because OpenCC then only looks up single characters that map to themselves. Returns None for
    modes not handled here, so that the converter always runs.
    """
    import opencc

    tables = {"t2s": ("TSCharacters.txt", "TSPhrases.txt"), "s2t": ("STCharacters.txt", "STPhrases.txt")}
    if mode not in tables:
        return None
    dictionary_dir = Path(opencc.__file__).parent / "dictionary"
    characters_file, phrases_file = tables[mode]
    chars: set[str] = set()
    for line in (dictionary_dir / characters_file).read_text(encoding="utf-8").splitlines():
        key, _, values = line.partition("\t")
        if values.split(" ")[0] != key:
            chars.add(key)
    phrases, converted = [], Counter()
    for line in (dictionary_dir / phrases_file).read_text(encoding="utf-8").splitlines():
        key, _, values = line.partition("\t")
        converted.update(values.split(" ")[0])
        # A phrase with a character of `chars` is found through that character.
        if values.split(" ")[0] != key and chars.isdisjoint(key):
            phrases.append(key)

    pattern = re.compile("|".join(map(re.escape, sorted(phrases, key=len, reverse=True)))) if phrases else None
    any_trigger = frozenset(chars) | _covering_chars(phrases, converted)
    in_bmp = re.compile("[" + "".join(re.escape(char) for char in sorted(any_trigger) if ord(char) < 0x10000) + "]")
    return _ConversionTriggers(frozenset(chars), pattern, any_trigger, in_bmp)


def _covering_chars(phrases: list[str], converted: Counter) -> frozenset[str]:
    """Pick characters so that every phrase contains one, greedily taking the one in the most phrases.

    Ties go to the character seen less often in the converted phrases, which are the target
    script's text, so that a common character such as 得 in 衹得 is not picked. A few characters
    (瞭, 藉, 覆, ...) then cover all the phrases, and a text with none of them needs no phrase search.
    """
    uncovered = set(phrases)
    chosen = set()
    while uncovered:
        counts = Counter(char for phrase in uncovered for char in set(phrase))
        char = min(counts, key=lambda c: (-counts[c], converted[c], c))
        chosen.add(char)
        uncovered = {phrase for phrase in uncovered if char not in phrase}
    return frozenset(chosen)


def chinese_convert(text: str, mode: str = "t2s") -> str:
    """Convert between traditional and simplified Chinese with OpenCC's tables (`t2s`, `s2t`, ...)."""
    triggers = _conversion_triggers(mode)
    if triggers is not None and triggers.absent_from(text):
        return text
    if triggers is not None and triggers.chars.isdisjoint(text) and (triggers.phrases is None or not triggers.phrases.search(text)):
        return text
    return _opencc(mode).convert(text)


# ---------------------------------------------------------------------------------------------
# E-mail addresses, links, IP addresses

_EMAIL = re.compile(r"[A-Za-z0-9.+_-]+@[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.[A-Za-z]{2,}")


def clean_email(text: str, repl: str = "", pattern: str | None = None) -> str:
    if pattern is not None:
        return re.sub(pattern, repl, text)
    if "@" not in text:
        return text
    return _EMAIL.sub(repl, text)


# A URL runs over ASCII URL characters only, so Chinese text right after a link is kept.
_LINK = re.compile(r"(?<![A-Za-z0-9])(?:(?:https?|ftp)://|www\.)[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+", re.IGNORECASE)


def clean_links(text: str, repl: str = "", pattern: str | None = None) -> str:
    if pattern is not None:
        return re.sub(pattern, repl, text)
    lowered = text.lower()
    if "http" not in lowered and "www." not in lowered and "ftp://" not in lowered:
        return text
    return _LINK.sub(repl, text)


_IPV4_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = rf"(?<![\d.]){_IPV4_OCTET}(?:\.{_IPV4_OCTET}){{3}}(?![\d]|\.\d)"
_H16 = r"[0-9A-Fa-f]{1,4}"
_IPV6 = (
    rf"(?<![0-9A-Fa-f:])(?:(?:{_H16}:){{7}}{_H16}"  # full form
    rf"|(?:{_H16}:){{1,7}}:(?:{_H16}(?::{_H16}){{0,6}})?"  # compressed, with something before ::
    rf"|::(?:{_H16}(?::{_H16}){{0,6}}))(?![0-9A-Fa-f:])"  # compressed, starting with ::
)
_IP = re.compile(f"{_IPV4}|{_IPV6}")


# Every IPv4 address contains this, and every IPv6 address `::` or seven colons.
_IPV4_HINT = re.compile(r"\d\.\d{1,3}\.\d{1,3}\.\d")


def clean_ip(text: str, repl: str = "", pattern: str | None = None) -> str:
    if pattern is not None:
        return re.sub(pattern, repl, text)
    if "::" not in text and text.count(":") < 7 and not _IPV4_HINT.search(text):
        return text
    return _IP.sub(repl, text)


# ---------------------------------------------------------------------------------------------
# HTML

_HTML_HINT = re.compile(r"<[A-Za-z!/][^>]*>|&(?:#\d+|#x[0-9A-Fa-f]+|[A-Za-z]+);")
_BLOCK_TAGS = frozenset(
    "address article aside blockquote br dd div dl dt figcaption figure footer form h1 h2 h3 h4 h5 h6 "
    "header hr li main nav ol p pre section table tbody td th thead tr ul".split()
)
_SKIPPED_TAGS = frozenset(("script", "style", "noscript", "template", "head"))


class _TextExtractor(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip_depth = 0

    def handle_starttag(self, tag, attrs):
        if tag in _SKIPPED_TAGS:
            self.skip_depth += 1
        elif tag == "li":
            self.parts.append("\n* ")
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in _SKIPPED_TAGS:
            self.skip_depth = max(0, self.skip_depth - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.skip_depth:
            self.parts.append(data)


_BLANK_LINES = re.compile(r"\n[ \t]*(?:\n[ \t]*)+")


def clean_html(text: str) -> str:
    """Replace HTML with the text of its nodes; block elements become line breaks, list items `* `."""
    if not _HTML_HINT.search(text):
        return text
    parser = _TextExtractor()
    parser.feed(text)
    parser.close()
    return _BLANK_LINES.sub("\n", "".join(parser.parts)).strip()


# ---------------------------------------------------------------------------------------------
# LaTeX macros

_BRACED = r"((?:[^{}]|\{(?:[^{}]|\{[^{}]*\})*\})*)"
_NEWCOMMAND = re.compile(r"\\(?:re)?newcommand\*?\s*\{?\s*\\([A-Za-z]+)\s*\}?\s*(?:\[(\d)\])?\s*\{" + _BRACED + r"\}")
_DEF = re.compile(r"\\def\s*\\([A-Za-z]+)\s*\{" + _BRACED + r"\}")


def expand_macro(text: str) -> str:
    """Expand LaTeX macros without arguments (`\\newcommand{\\R}{\\mathbb{R}}`, `\\def\\eps{\\varepsilon}`)."""
    if "\\newcommand" not in text and "\\renewcommand" not in text and "\\def" not in text:
        return text
    macros: dict[str, str] = {}
    definitions: list[tuple[int, int]] = []
    for match in _NEWCOMMAND.finditer(text):
        definitions.append(match.span())
        if match.group(2) in (None, "0"):
            macros[match.group(1)] = match.group(3)
    for match in _DEF.finditer(text):
        definitions.append(match.span())
        macros[match.group(1)] = match.group(2)
    if not macros:
        return text

    # Longest names first, so that \RR is not read as \R followed by R.
    names = sorted(macros, key=len, reverse=True)
    usage = re.compile(r"\\(" + "|".join(map(re.escape, names)) + r")(?![A-Za-z])")
    expand = lambda match: macros[match.group(1)]  # noqa: E731

    pieces, position = [], 0
    for start, end in sorted(definitions):
        if start < position:
            continue
        pieces.append(usage.sub(expand, text[position:start]))
        pieces.append(text[start:end])  # definitions themselves stay as written
        position = end
    pieces.append(usage.sub(expand, text[position:]))
    return "".join(pieces)


# ---------------------------------------------------------------------------------------------
# Broken Unicode

# Characters no ftfy fixer changes (with NFC): printable ASCII except `&` (HTML entities), CJK
# ideographs (the compatibility blocks excluded, because NFC rewrites them), kana without the
# combining marks, CJK punctuation, ℃ and circled numbers (in none of the legacy encodings ftfy
# reverses), and … — – · and the no-break space (never a UTF-8 lead byte in windows-125x or
# Latin-1, and never a continuation byte in Mac Roman). Any mojibake of UTF-8 therefore contains a character outside
# this set: a lead byte read as a Latin, Greek, Cyrillic or box-drawing character, or a Mac Roman
# continuation byte.
_SAFE_BASE = (
    "\t\n\x20-\x25\x27-\x7e\u00a0\u2013\u2014\u2026\u00b7\u2103\u2460-\u2473"
    "\u3001-\u303f\u3041-\u3098\u309b-\u30ff\u3400-\u4dbf\u4e00-\u9fff"
    "\U00020000-\U0002ebef\U00030000-\U000323af"
)
_SAFE_FULLWIDTH = "\u3000\uff01-\uff60\uffe0-\uffe6"
_SAFE_QUOTES = "\u2018-\u201f"


@cache
def _unicode_safe_pattern(fix_character_width: bool, uncurl_quotes: bool) -> re.Pattern:
    safe = _SAFE_BASE
    if not fix_character_width:
        safe += _SAFE_FULLWIDTH
    if not uncurl_quotes:
        safe += _SAFE_QUOTES
    return re.compile(f"[{safe}]*")


def needs_unicode_fix(text: str, fix_character_width: bool = True, uncurl_quotes: bool = True) -> bool:
    """Return whether ftfy could change `text`; False means ftfy would return it unchanged."""
    return _unicode_safe_pattern(fix_character_width, uncurl_quotes).fullmatch(text) is None


# Full-width forms whose width fix gives ASCII (the ideographic space gives a space), leaving
# nothing else to repair. Two kinds go to ftfy's full repair instead, because its second pass can
# rewrite what the width fix produced. ＆ (U+FF06) becomes `&`, which can start an HTML entity
# (`＆ａｍｐ；` becomes `&`). ￠￡￢￣￤￥￦ become Latin-1 signs that can read as Mac Roman mojibake
# (`￢￠` becomes `¢`).
_SAFE_FULLWIDTH_FIXED_TO_ASCII = "\u3000\uff01-\uff05\uff07-\uff5e"


@cache
def _needs_ftfy_pattern(fix_character_width: bool, uncurl_quotes: bool) -> re.Pattern:
    """Match a character that only ftfy's full repair handles (the width and quote fixes aside)."""
    safe = _SAFE_BASE + _SAFE_QUOTES + (_SAFE_FULLWIDTH_FIXED_TO_ASCII if fix_character_width else _SAFE_FULLWIDTH)
    return re.compile(f"[^{safe}]")


@cache
def _width_runs_pattern() -> re.Pattern:
    from ftfy.chardata import WIDTH_MAP

    return re.compile("[" + "".join(re.escape(chr(code)) for code in sorted(WIDTH_MAP)) + "]+")


def _fix_width_and_quotes(text: str, fix_character_width: bool, uncurl_quotes: bool) -> str:
    """Apply ftfy's width and quote fixes and NFC: all that ftfy changes in text without other suspects."""
    from ftfy import fixes

    if fix_character_width:
        # ftfy's `fix_character_width` translates the whole text; translating only the runs of
        # full-width and half-width forms gives the same result faster on Chinese text.
        text = _width_runs_pattern().sub(lambda match: fixes.fix_character_width(match.group()), text)
    if uncurl_quotes:
        text = fixes.uncurl_quotes(text)
    return unicodedata.normalize("NFC", text)


def fix_unicode(
    text: str, normalization: str = "NFC", fix_character_width: bool = True, uncurl_quotes: bool = True
) -> str:
    """Repair mojibake, control characters and unnormalised forms with ftfy, only on text that needs it.

    The defaults are Data-Juicer's (ftfy's own): they turn full-width Chinese punctuation into
    ASCII and curly quotes into straight ones. Chinese text wants both turned off. The result is
    `ftfy.fix_text`'s with the same settings.
    """
    import ftfy

    if normalization != "NFC":
        return ftfy.fix_text(
            text, normalization=normalization, fix_character_width=fix_character_width, uncurl_quotes=uncurl_quotes
        )
    if not needs_unicode_fix(text, fix_character_width, uncurl_quotes):
        return text
    config = ftfy.TextFixerConfig(explain=False, fix_character_width=fix_character_width, uncurl_quotes=uncurl_quotes)
    if len(text) > config.max_decode_length:
        return ftfy.fix_text(text, config)  # ftfy then also splits inside lines, which the line repair below does not
    return _fix_suspect_lines(text, config)


def _fix_suspect_lines(text: str, config) -> str:
    """Run ftfy's full repair only on the lines with a suspect character, and the cheap fixes elsewhere.

    `ftfy.fix_text` repairs each line on its own (a segment ending with `\n`), so this gives its
    result. Its one state across lines is `unescape_html="auto"`, which turns off for good at the
    first line with `<`, and so is off for a line exactly when `<` occurs up to that line's end.
    NFC never joins characters across a line break, so the cheap fixes may run on many lines at once.
    """
    from ftfy import fix_and_explain

    suspect = _needs_ftfy_pattern(config.fix_character_width, config.uncurl_quotes)
    first_angle_bracket = text.find("<")
    pieces = []
    done = 0  # text before this index is in `pieces`
    while match := suspect.search(text, done):
        line_start = text.rfind("\n", done, match.start()) + 1 or done
        line_end = text.find("\n", match.end()) + 1 or len(text)
        if line_start > done:
            pieces.append(_fix_width_and_quotes(text[done:line_start], config.fix_character_width, config.uncurl_quotes))
        line_config = config
        if 0 <= first_angle_bracket < line_end:
            line_config = config._replace(unescape_html=False)
        pieces.append(fix_and_explain(text[line_start:line_end], line_config).text)
        done = line_end
    if done < len(text):
        pieces.append(_fix_width_and_quotes(text[done:], config.fix_character_width, config.uncurl_quotes))
    return "".join(pieces)


# ---------------------------------------------------------------------------------------------
# Punctuation

_ASCII_PUNCTUATION = {
    "，": ",", "。": ".", "、": ",", "„": '"', "”": '"', "“": '"', "«": '"', "»": '"', "「": '"', "」": '"',
    "《": '"', "》": '"', "´": "'", "∶": ":", "：": ":", "？": "?", "！": "!", "（": "(", "）": ")",
    "；": ";", "–": "-", "—": " - ", "．": ". ", "～": "~", "’": "'", "‘": "'", "…": "...", "━": "-",
    "〈": "<", "〉": ">", "【": "[", "】": "]", "％": "%", "►": "-",
}  # fmt: skip


_ASCII_PUNCTUATION_TABLE = str.maketrans(_ASCII_PUNCTUATION)
_ASCII_PUNCTUATION_RUNS = re.compile("[" + "".join(map(re.escape, _ASCII_PUNCTUATION)) + "]+")


def _to_ascii_punctuation(match: re.Match) -> str:
    return match.group().translate(_ASCII_PUNCTUATION_TABLE)


# Full-width letters and digits (Ａ-Ｚ, ａ-ｚ, ０-９) become ASCII; full-width punctuation stays.
_FULLWIDTH_ALNUM_TABLE = {
    code: code - 0xFEE0
    for code in [*range(0xFF10, 0xFF1A), *range(0xFF21, 0xFF3B), *range(0xFF41, 0xFF5B)]
}
_FULLWIDTH_ALNUM_RUNS = re.compile("[\uff10-\uff19\uff21-\uff3a\uff41-\uff5a]+")


def _to_ascii_alnum(match: re.Match) -> str:
    return match.group().translate(_FULLWIDTH_ALNUM_TABLE)

_ZH_PUNCTUATION = {",": "，", ";": "；", ":": "：", "?": "？", "!": "！"}
_CJK = r"\u3400-\u4dbf\u4e00-\u9fff"
# ASCII punctuation written between Chinese characters (or at a line end after one) is a typing slip.
_ASCII_IN_CHINESE = re.compile(rf"(?<=[{_CJK}])([,;:?!])(?=[{_CJK}“‘「《（]|$)", re.MULTILINE)


def punctuation_normalization(text: str, style: str = "ascii") -> str:
    """Normalise punctuation.

    `ascii` (Data-Juicer's): Unicode punctuation becomes ASCII, Chinese punctuation included.
    `zh`: full-width letters and digits become ASCII, and ASCII ,;:?! between Chinese characters
    become their full-width forms; Chinese punctuation is kept.
    """
    if style == "ascii":
        # Translating only the runs of punctuation is faster than translating the whole text, which is
        # mostly Chinese characters.
        return _ASCII_PUNCTUATION_RUNS.sub(_to_ascii_punctuation, text)
    if style == "zh":
        if text.isascii():
            return text
        text = _FULLWIDTH_ALNUM_RUNS.sub(_to_ascii_alnum, text)
        return _ASCII_IN_CHINESE.sub(lambda m: _ZH_PUNCTUATION[m.group(1)], text)
    raise ValueError(f"unknown punctuation style {style!r}; expected 'ascii' or 'zh'")


# ---------------------------------------------------------------------------------------------
# Repeated sentences

# A piece is a sentence with its terminal punctuation, closing quotes and trailing spaces, so that
# joining the pieces of a line gives the line back.
_SENTENCE_PIECE = re.compile(r"[^.!?。！？]*(?:[.!?。！？]+[”’」』）)\]\"']*\s*|$)")


def _sentence_key(sentence: str, lowercase: bool, ignore_special_character: bool) -> str:
    sentence = remove_special_chars(sentence) if ignore_special_character else sentence.strip()
    return sentence.lower() if lowercase else sentence


def _sentence_keys(pieces: list[str], lowercase: bool, ignore_special_character: bool) -> list[str]:
    """Return `_sentence_key` of every piece, removing special characters with one call when possible."""
    joined = "\0".join(pieces)
    if not ignore_special_character or joined.count("\0") != len(pieces) - 1:
        return [_sentence_key(piece, lowercase, ignore_special_character) for piece in pieces]
    # NUL is an ASCII control character, which `remove_special_chars` keeps, so it still separates the keys.
    keys = remove_special_chars(joined).split("\0")
    return [key.lower() for key in keys] if lowercase else keys


def remove_repeat_sentences(
    text: str, lowercase: bool = False, ignore_special_character: bool = True, min_repeat_sentence_length: int = 2
) -> str:
    """Remove every repeat of a sentence after its first occurrence, in document order.

    Sentences end at . ! ? 。！？ or a line end. Keys ignore special characters; a sentence whose key
    is shorter than `min_repeat_sentence_length` characters is always kept.
    """
    line_pieces = [list(filter(None, _SENTENCE_PIECE.findall(line))) for line in text.split("\n")]
    all_keys = _sentence_keys([piece for pieces in line_pieces for piece in pieces], lowercase, ignore_special_character)
    long_keys = [key for key in all_keys if len(key) >= min_repeat_sentence_length]
    if len(set(long_keys)) == len(long_keys):
        return text  # no sentence repeats

    keys = iter(all_keys)
    seen: set[str] = set()
    new_lines = []
    changed = False
    for line, pieces in zip(text.split("\n"), line_pieces):
        kept = []
        for piece in pieces:
            key = next(keys)
            if len(key) < min_repeat_sentence_length:
                kept.append(piece)
            elif key in seen:
                changed = True
            else:
                seen.add(key)
                kept.append(piece)
        if kept or not pieces:
            new_lines.append("".join(kept).rstrip() if len(kept) < len(pieces) else line)
    return "\n".join(new_lines) if changed else text


# ---------------------------------------------------------------------------------------------
# Given characters, whitespace

DEFAULT_CHARS_TO_REMOVE = "◆●■►▼▲▴∆▻▷❖♡□"


@cache
def _removal_table(chars: str) -> dict[int, None]:
    return dict.fromkeys(map(ord, chars))


def remove_specific_chars(text: str, chars_to_remove: str = DEFAULT_CHARS_TO_REMOVE) -> str:
    if not any(char in text for char in chars_to_remove):
        return text
    return text.translate(_removal_table(chars_to_remove))


@cache
def _whitespace_table() -> dict[int, str | None]:
    """Map every Unicode space separator except the ASCII space to a space and drop zero-width spaces.

    The zero-width joiners stay: emoji sequences and some scripts need them. Only the Basic
    Multilingual Plane is scanned, because every space separator lies in it (a test checks this
    for the running Python's Unicode database), and scanning all planes costs each worker 0.1 s.
    """
    return {
        **{code: " " for code in range(0x10000) if unicodedata.category(chr(code)) == "Zs" and code != 0x20},
        0x200B: None, 0x2060: None, 0xFEFF: None,
        0x0B: " ", 0x0C: " ", 0x85: "\n", 0x2028: "\n", 0x2029: "\n",
    }  # fmt: skip


@cache
def _whitespace_hint() -> re.Pattern:
    return re.compile("[" + "".join(map(chr, _whitespace_table())) + "]")


def whitespace_normalization(text: str) -> str:
    """Turn Unicode spaces (no-break, ideographic, ...) into ASCII spaces, drop zero-width characters, strip."""
    if _whitespace_hint().search(text):
        text = text.translate(_whitespace_table())
    return text.replace("\r\n", "\n").strip()
