"""Loaders for the official file layouts of C-Eval, CMMLU and MMLU.

- C-Eval: `{dev,val,test}/{subject}_{split}.csv` with the header `id,question,A,B,C,D,answer`
  (`explanation` may follow in dev; the test split has no `answer` column).
- CMMLU: `{dev,test}/{subject}.csv` with the header `,Question,A,B,C,D,Answer` (the first column
  is a row index without a name).
- MMLU: `{dev,val,test}/{subject}_{split}.csv` without a header, rows `question,A,B,C,D,answer`.

Every problem (a missing file, a malformed row, an answer outside A-D) is collected with its file
and line. `load_split` raises `BenchmarkDataError` listing all of them unless `skip_invalid=True`,
in which case the invalid rows are skipped and returned in `LoadedSplit.problems` for the report.
"""

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path

from steel.eval.benchmarks import Benchmark, get_benchmark
from steel.eval.questions import MCQuestion

logger = logging.getLogger(__name__)

OPTION_LETTERS = ("A", "B", "C", "D")


class BenchmarkDataError(ValueError):
    """Benchmark files are missing or contain invalid rows; the message lists each one."""


@dataclass
class DataProblem:
    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.message}"


@dataclass
class LoadedSplit:
    benchmark: str
    split: str
    questions: dict[str, list[MCQuestion]]
    """Questions per subject key, in file order."""
    problems: list[DataProblem] = field(default_factory=list)

    @property
    def num_questions(self) -> int:
        return sum(len(questions) for questions in self.questions.values())


def subject_file(benchmark: str, data_dir: Path, subject: str, split: str) -> Path:
    if benchmark == "cmmlu":
        return data_dir / split / f"{subject}.csv"
    return data_dir / split / f"{subject}_{split}.csv"


def load_split(
    benchmark: str,
    data_dir: str | Path,
    split: str,
    subjects: list[str] | None = None,
    skip_invalid: bool = False,
) -> LoadedSplit:
    """Load one split of a benchmark for the given subjects (default: all of them)."""
    spec = get_benchmark(benchmark)
    data_dir = Path(data_dir)
    if split not in spec.splits:
        raise ValueError(f"{benchmark} has no split {split!r}; expected one of {list(spec.splits)}")
    if not data_dir.is_dir():
        raise BenchmarkDataError(f"benchmark data directory {data_dir} not found; pass the directory that contains {split}/")
    subjects = _check_subjects(spec, subjects)

    loaded = LoadedSplit(benchmark, split, {})
    for subject in subjects:
        path = subject_file(benchmark, data_dir, subject, split)
        if not path.is_file():
            loaded.problems.append(DataProblem(str(path), None, f"file for subject {subject!r} not found"))
            continue
        loaded.questions[subject] = _read_subject_file(spec, path, subject, split, loaded.problems)

    if loaded.problems and not skip_invalid:
        listing = "\n  ".join(str(problem) for problem in loaded.problems)
        raise BenchmarkDataError(
            f"{len(loaded.problems)} problem(s) in {benchmark} {split} data under {data_dir}:\n  {listing}\n"
            "Fix the files, restrict --subjects, or pass --skip-invalid to skip these rows and report them."
        )
    for problem in loaded.problems:
        logger.warning("skipped: %s", problem)
    return loaded


def _check_subjects(spec: Benchmark, subjects: list[str] | None) -> list[str]:
    if subjects is None:
        return list(spec.subjects)
    unknown = [subject for subject in subjects if subject not in spec.subjects]
    if unknown:
        raise ValueError(f"unknown {spec.name} subject(s) {unknown}; see steel.eval.benchmarks for the list")
    return list(subjects)


def _read_subject_file(
    spec: Benchmark, path: Path, subject: str, split: str, problems: list[DataProblem]
) -> list[MCQuestion]:
    has_answer = split in spec.answered_splits
    with open(path, encoding="utf-8-sig", newline="") as file:
        reader = csv.reader(file)
        rows = []  # (first line of the record, fields); a quoted field may span lines
        previous_end = 0
        try:
            for row in reader:
                if row:
                    rows.append((previous_end + 1, row))
                previous_end = reader.line_num
        except csv.Error as error:
            problems.append(DataProblem(str(path), reader.line_num, f"invalid CSV: {error}"))
            return []
    if spec.name == "mmlu":
        return _parse_mmlu(rows, spec, path, subject, has_answer, problems)
    if not rows:
        problems.append(DataProblem(str(path), None, "file is empty; expected a header row"))
        return []
    return _parse_with_header(rows, spec, path, subject, has_answer, problems)


def _parse_with_header(rows, spec, path, subject, has_answer, problems) -> list[MCQuestion]:
    _, header = rows[0]
    columns = {name.strip().lower(): index for index, name in enumerate(header)}
    question_column = "question"
    required = [question_column, *(letter.lower() for letter in OPTION_LETTERS)]
    if has_answer:
        required.append("answer")
    missing = [name for name in required if name not in columns]
    if missing:
        problems.append(DataProblem(str(path), 1, f"header {header} lacks column(s) {missing}"))
        return []

    # C-Eval names its id column `id`; CMMLU's first column has no name.
    id_column = columns.get("id", columns.get("", None))
    questions = []
    for row_number, (line, row) in enumerate(rows[1:], start=1):
        if len(row) != len(header):
            problems.append(DataProblem(str(path), line, f"row has {len(row)} fields; the header has {len(header)}"))
            continue
        question = _make_question(
            spec,
            subject,
            row_id=row[id_column] if id_column is not None else str(row_number - 1),
            text=row[columns[question_column]],
            options=[row[columns[letter.lower()]] for letter in OPTION_LETTERS],
            answer=row[columns["answer"]] if has_answer else None,
            explanation=row[columns["explanation"]] if "explanation" in columns else "",
            where=(str(path), line),
            problems=problems,
        )
        if question is not None:
            questions.append(question)
    return questions


def _parse_mmlu(rows, spec, path, subject, has_answer, problems) -> list[MCQuestion]:
    questions = []
    for row_number, (line, row) in enumerate(rows):
        if len(row) != 6:
            problems.append(DataProblem(str(path), line, f"row has {len(row)} fields; expected 6 (question, A-D, answer)"))
            continue
        question = _make_question(
            spec,
            subject,
            row_id=str(row_number),
            text=row[0],
            options=row[1:5],
            answer=row[5] if has_answer else None,
            explanation="",
            where=(str(path), line),
            problems=problems,
        )
        if question is not None:
            questions.append(question)
    return questions


def _make_question(spec, subject, row_id, text, options, answer, explanation, where, problems) -> MCQuestion | None:
    def report(message: str) -> None:
        problems.append(DataProblem(where[0], where[1], message))

    if not text.strip():
        report("empty question")
        return None
    if answer is not None:
        answer = answer.strip()
        if answer not in OPTION_LETTERS:
            report(f"answer {answer!r} is not one of A, B, C, D")
            return None
    info = spec.subjects[subject]
    return MCQuestion(
        question=text.strip(),
        options={letter: option.strip() for letter, option in zip(OPTION_LETTERS, options)},
        answer=answer,
        subject=subject,
        category=info.category,
        id=row_id.strip(),
        explanation=explanation.strip(),
        groups=info.groups,
    )
