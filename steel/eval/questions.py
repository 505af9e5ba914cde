"""The multiple-choice question record shared by the loaders, the prompts and the scorer."""

from dataclasses import dataclass, field

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass
class MCQuestion:
    """One multiple-choice question with 2 to 26 options labelled A, B, C, ...

    `answer` is None for splits without answers (the C-Eval test split); such questions can be
    scored for a submission file but count in no accuracy.
    """

    question: str
    options: dict[str, str]
    answer: str | None = None
    subject: str = "custom"
    category: str = "custom"
    id: str = ""
    explanation: str = ""
    groups: tuple[str, ...] = field(default_factory=tuple)
    """Extra report groups besides `category` (CMMLU's "China specific")."""

    def __post_init__(self) -> None:
        letters = list(self.options)
        if len(letters) < 2:
            raise ValueError(f"question {self.id or self.question[:40]!r} has {len(letters)} option(s); need at least 2")
        if letters != list(LETTERS[: len(letters)]):
            raise ValueError(
                f"question {self.id or self.question[:40]!r} has option labels {letters}; "
                f"expected consecutive letters {list(LETTERS[: len(letters)])}"
            )
        if self.answer is not None and self.answer not in self.options:
            raise ValueError(
                f"question {self.id or self.question[:40]!r} has answer {self.answer!r}, "
                f"which is not one of its options {letters}"
            )

    @property
    def letters(self) -> list[str]:
        return list(self.options)
