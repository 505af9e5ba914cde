"""Benchmark questions that appear in training or fine-tuning data, by normalised n-gram overlap.

Texts are normalised (NFKC, case-folded, everything but letters and digits removed), so spacing,
punctuation and full-width forms do not hide a copy. A question's n-grams are its windows of
`ngram` normalised characters, and a question shorter than that is one n-gram of its own length.
Its overlap is the fraction of those n-grams that occur anywhere in the data. Questions shorter
than `min_chars` are too short to match meaningfully and are counted, not checked.

The data is streamed once, so memory grows with the benchmark's n-grams, not the data size.
"""

import json
import logging
import unicodedata
from collections.abc import Iterable, Iterator
from pathlib import Path

from tqdm import tqdm

from steel.eval.questions import MCQuestion

logger = logging.getLogger(__name__)


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return "".join(char for char in text if char.isalnum())


def question_ngrams(text: str, ngram: int) -> set[str]:
    if len(text) <= ngram:
        return {text}
    return {text[i : i + ngram] for i in range(len(text) - ngram + 1)}


def _strings(value) -> Iterator[str]:
    """Yield every string inside a JSON value (fine-tuning records nest text in messages)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


class JsonlTexts:
    """Iterate (location, text) over JSONL files, one item per line with all its strings joined.

    Invalid JSON lines are skipped and counted in `num_skipped_lines`.
    """

    def __init__(self, paths: list[Path]):
        self.paths = [Path(path) for path in paths]
        self.num_skipped_lines = 0

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for path in self.paths:
            with open(path, encoding="utf-8") as file:
                for line_number, line in enumerate(file, start=1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        self.num_skipped_lines += 1
                        logger.debug("%s:%d: invalid JSON, skipped", path, line_number)
                        continue
                    yield f"{path}:{line_number}", "\n".join(_strings(record))


def iter_jsonl_texts(paths: list[Path]) -> JsonlTexts:
    return JsonlTexts(paths)


def find_contamination(
    questions: list[tuple[str, MCQuestion]],
    documents: Iterable[tuple[str, str]],
    ngram: int = 13,
    threshold: float = 0.5,
    min_chars: int = 8,
    progress: bool = False,
) -> dict:
    """Return the questions (given as (split, question) pairs) whose n-gram overlap reaches `threshold`."""
    if ngram < 1:
        raise ValueError(f"ngram must be at least 1, got {ngram}")

    grams_of: list[set[str] | None] = []
    owners: dict[str, list[int]] = {}  # n-gram -> indices of the questions that contain it
    lengths: set[int] = set()
    for index, (_, question) in enumerate(questions):
        text = normalise(question.question)
        if len(text) < min_chars:
            grams_of.append(None)
            continue
        grams = question_ngrams(text, ngram)
        grams_of.append(grams)
        for gram in grams:
            owners.setdefault(gram, []).append(index)
            lengths.add(len(gram))

    matched: list[set[str]] = [set() for _ in questions]
    first_match: list[str | None] = [None] * len(questions)
    num_documents = 0
    for location, text in tqdm(documents, desc="scanning", unit="doc", disable=not progress):
        num_documents += 1
        normalised = normalise(text)
        for length in lengths:
            for start in range(len(normalised) - length + 1):
                gram = normalised[start : start + length]
                for index in owners.get(gram, ()):
                    matched[index].add(gram)
                    if first_match[index] is None:
                        first_match[index] = location

    flagged = []
    for index, (split, question) in enumerate(questions):
        grams = grams_of[index]
        if not grams:
            continue
        overlap = len(matched[index]) / len(grams)
        if overlap >= threshold:
            flagged.append({
                "split": split,
                "subject": question.subject,
                "id": question.id,
                "overlap": overlap,
                "first_match": first_match[index],
                "question": question.question,
            })
    flagged.sort(key=lambda item: (-item["overlap"], item["split"], item["subject"], item["id"]))
    return {
        "ngram": ngram,
        "threshold": threshold,
        "min_chars": min_chars,
        "num_questions": len(questions),
        "num_too_short": sum(grams is None for grams in grams_of),
        "num_documents": num_documents,
        "num_skipped_lines": getattr(documents, "num_skipped_lines", 0),
        "flagged": flagged,
    }
