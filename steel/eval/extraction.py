"""Answer extraction from generated text: the option letter, in Chinese or English phrasing.

`extract_letter` tries, in order, (1) explicit answer statements such as 答案是C, 正确答案：C, 选C,
"the answer is C"; (2) a letter that opens the reply (`C.`, `(C)`, `C`); (3) a letter in brackets
anywhere; (4) the only option letter standing alone in the text. A step that finds two different
letters makes the answer ambiguous, which counts as unparseable. The text is NFKC-normalised
first, so full-width letters and punctuation (Ｃ, （Ｃ）, ：) read as their ASCII forms.

`match_option_text` is the fallback of the `steel-llm-report` protocol: the option whose text is
closest to the reply, so every reply maps to some letter.
"""

import difflib
import re
import unicodedata
from dataclasses import dataclass

# Words that may join several letters in one answer ("A和C", "A or C", "A、C").
_JOINERS = r"(?:\s*(?:,|、|和|与|及|或|或者|/|&|and|or)\s*)"


@dataclass(frozen=True)
class Extraction:
    letter: str | None
    method: str
    """`pattern`, `leading`, `bracket`, `single-letter`, `fuzzy`, or `none` (unparseable) / `ambiguous`."""


def _letter_class(letters: list[str]) -> str:
    return "[" + "".join(letters) + "]"


def _explicit_patterns(letter: str) -> list[re.Pattern]:
    # One answer group: a letter, possibly followed by more letters (several answers -> ambiguous).
    group = rf"({letter}(?:{_JOINERS}?{letter})*)(?![A-Za-z])"
    opening = r"[\s:]*(?:选项|option)?\s*[\(\[]?\s*"
    return [
        re.compile(rf"答案\s*(?:应该|应当|应)?\s*(?:是|为|选|选择)?{opening}{group}"),
        re.compile(rf"(?:正确|对)的?(?:选项|答案)\s*(?:是|为)?{opening}{group}"),
        re.compile(rf"(?:应|应该|故|所以|因此|我)?选(?:择)?\s*(?:选项)?\s*[\(\[]?\s*{group}"),
        re.compile(rf"(?i:answer)\s*(?:(?i:is|would be|should be))?{opening}{group}"),
        re.compile(rf"(?i:option|choice)\s*[\(\[]?\s*{group}[\)\]]?\s*(?i:is correct|is right)"),
        re.compile(rf"(?i:I (?:choose|pick|select))\s*(?:(?i:option)\s*)?[\(\[]?\s*{group}"),
    ]


def _distinct_letters(found: str, letters: list[str]) -> list[str]:
    return sorted({char for char in found if char in letters})


def extract_letter(text: str, letters: list[str]) -> Extraction:
    """Extract one option letter (from `letters`) from a generated reply."""
    normalised = unicodedata.normalize("NFKC", text).strip()
    letter = _letter_class(letters)

    for pattern in _explicit_patterns(letter):
        match = pattern.search(normalised)
        if match:
            found = _distinct_letters(match.group(1), letters)
            return Extraction(found[0], "pattern") if len(found) == 1 else Extraction(None, "ambiguous")

    # A reply that opens with the letter: "C", "C.", "(C)", "C、北京". "A cat ..." is an English
    # sentence, not an answer, so a letter followed by a space and a lowercase word does not count.
    leading = re.match(rf"[\s\(\[]*({letter})(?=[\)\]\.:、,。;\s]|$)", normalised)
    if leading and not re.match(rf"[\s\(\[]*{letter}\s+[a-z]", normalised):
        return Extraction(leading.group(1), "leading")

    bracketed = _distinct_letters("".join(re.findall(rf"[\(\[]\s*({letter})\s*[\)\]]", normalised)), letters)
    if len(bracketed) == 1:
        return Extraction(bracketed[0], "bracket")
    if len(bracketed) > 1:
        return Extraction(None, "ambiguous")

    standalone = []
    for match in re.finditer(rf"(?<![A-Za-z])({letter})(?![A-Za-z])", normalised):
        is_article = match.group(1) == "A" and re.match(r"\s+[a-z]", normalised[match.end():])
        if not is_article:
            standalone.append(match.group(1))
    found = sorted(set(standalone))
    if len(found) == 1:
        return Extraction(found[0], "single-letter")
    return Extraction(None, "ambiguous" if found else "none")


def _normalise_for_match(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return "".join(char for char in text if char.isalnum())


def match_option_text(text: str, options: dict[str, str]) -> str:
    """Return the letter of the option whose text best matches the reply (always some letter).

    An option whose whole text occurs in the reply scores 1 plus its length (a longer contained
    option is the more specific match); otherwise the score is difflib's similarity ratio.
    Ties go to the earlier letter.
    """
    reply = _normalise_for_match(text)
    best_letter, best_score = next(iter(options)), -1.0
    for letter, option in options.items():
        target = _normalise_for_match(option)
        if target and target in reply:
            score = 1.0 + len(target)
        else:
            score = difflib.SequenceMatcher(None, reply, target, autojunk=False).ratio()
        if score > best_score:
            best_letter, best_score = letter, score
    return best_letter
