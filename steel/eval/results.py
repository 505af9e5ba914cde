"""Per-question results and their aggregation into overall, per-category and per-subject accuracy."""

from collections import defaultdict
from dataclasses import asdict, dataclass, field


@dataclass
class QuestionResult:
    id: str
    subject: str
    category: str
    answer: str | None
    prediction: str | None
    """The chosen letter; None when a generated reply could not be parsed (counted as wrong)."""
    groups: tuple[str, ...] = ()
    num_shots: int = 0
    over_context: bool = False
    scores: dict[str, float] | None = None
    """Per-letter log-probabilities (logits and option-logprob modes)."""
    output: str | None = None
    """The generated reply (generate mode)."""
    extraction: str | None = None
    """Extraction method that read the letter from `output` (`steel.eval.extraction.Extraction.method`)."""

    @property
    def correct(self) -> bool | None:
        if self.answer is None:
            return None
        return self.prediction == self.answer

    def to_dict(self) -> dict:
        record = asdict(self)
        record["groups"] = list(self.groups)
        record["correct"] = self.correct
        return record


def _accuracy(correct: int, total: int) -> float | None:
    return correct / total if total else None


@dataclass
class _Tally:
    correct: int = 0
    total: int = 0
    unparseable: int = 0
    over_context: int = 0
    subjects: set = field(default_factory=set)

    def add(self, result: QuestionResult) -> None:
        self.subjects.add(result.subject)
        self.over_context += result.over_context
        if result.correct is None:
            return
        self.total += 1
        self.correct += result.correct
        self.unparseable += result.prediction is None


def summarize(results: list[QuestionResult], categories: list[str] | tuple[str, ...] = ()) -> dict:
    """Aggregate results into overall, per-category and per-subject accuracy.

    `accuracy` is over questions (each question weighs the same); `macro_accuracy` is the mean of
    the subjects' accuracies. A category appears in `categories` order, then any other category
    or group found in the results. Questions without an answer (a test split) count in no accuracy.
    """
    overall = _Tally()
    by_subject: dict[str, _Tally] = defaultdict(_Tally)
    by_category: dict[str, _Tally] = defaultdict(_Tally)
    subject_category: dict[str, str] = {}
    for result in results:
        overall.add(result)
        by_subject[result.subject].add(result)
        subject_category[result.subject] = result.category
        for group in (result.category, *result.groups):
            by_category[group].add(result)

    subjects = {
        subject: {
            "category": subject_category[subject],
            "accuracy": _accuracy(tally.correct, tally.total),
            "correct": tally.correct,
            "total": tally.total,
            "unparseable": tally.unparseable,
        }
        for subject, tally in sorted(by_subject.items())
    }

    def macro(tally: _Tally) -> float | None:
        values = [subjects[s]["accuracy"] for s in sorted(tally.subjects) if subjects[s]["accuracy"] is not None]
        return sum(values) / len(values) if values else None

    ordered = [c for c in categories if c in by_category] + sorted(c for c in by_category if c not in categories)
    category_table = {
        name: {
            "accuracy": _accuracy(by_category[name].correct, by_category[name].total),
            "macro_accuracy": macro(by_category[name]),
            "correct": by_category[name].correct,
            "total": by_category[name].total,
            "num_subjects": len(by_category[name].subjects),
        }
        for name in ordered
    }
    return {
        "overall": {
            "accuracy": _accuracy(overall.correct, overall.total),
            "macro_accuracy": macro(overall),
            "correct": overall.correct,
            "total": overall.total,
            "num_questions": len(results),
            "unanswered": sum(1 for r in results if r.answer is None),
            "unparseable": overall.unparseable,
            "over_context": overall.over_context,
        },
        "categories": category_table,
        "subjects": subjects,
    }
