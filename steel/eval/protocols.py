"""Named, versioned evaluation protocols.

Published C-Eval and CMMLU numbers for one and the same model differ by more than 15 points
between protocols (few-shot letter logits against 0-shot chat generation, which split, how an
answer is read), so a number means little without its protocol. Every result file records the
protocol's name, version and every resolved setting, plus any command-line override.

A protocol's settings never change under the same version: change them and raise `version`
(the test suite pins each protocol's settings).
"""

from dataclasses import asdict, dataclass, field, replace

from steel.tokenizer.chat import DEFAULT_SYSTEM_PROMPT


@dataclass(frozen=True)
class Protocol:
    name: str
    version: int
    description: str
    mode: str
    """Scoring mode of `steel.eval.scorer` (logits, option-logprob, option-logprob-norm, generate)."""
    shots: int
    splits: dict[str, str]
    """Benchmark to the split that is scored (C-Eval's test split has no public answers)."""
    prompt_formats: dict[str, str] = field(default_factory=lambda: {"ceval": "ceval", "cmmlu": "cmmlu", "mmlu": "mmlu"})
    system_prompt: str | None = None
    """Generate mode: the system turn (None keeps the chat template's default)."""
    max_new_tokens: int = 32
    fuzzy_match: bool = False

    def with_overrides(self, **overrides) -> "Protocol":
        """Return this protocol with non-None overrides applied (recorded by `record`)."""
        changes = {key: value for key, value in overrides.items() if value is not None}
        return replace(self, **changes)

    def record(self, base: "Protocol | None" = None) -> dict:
        """Return the JSON record of this protocol; `overrides` lists fields that differ from `base`."""
        data = asdict(self)
        data["id"] = f"{self.name}/v{self.version}"
        base_data = asdict(base) if base is not None else data
        data["overrides"] = {key: data[key] for key in base_data if key != "description" and base_data[key] != data[key]}
        return data


PROTOCOLS: dict[str, Protocol] = {
    "strict": Protocol(
        name="strict",
        version=1,
        description=(
            "Each benchmark's own prompt format with 5 solved dev examples; the next-token "
            "log-probabilities of the answer-letter ids that those examples use decide the answer."
        ),
        mode="logits",
        shots=5,
        splits={"ceval": "val", "cmmlu": "test", "mmlu": "test"},
    ),
    "steel-llm-report": Protocol(
        name="steel-llm-report",
        version=1,
        description=(
            "Reconstruction of the protocol behind the Steel-LLM report's chat-model numbers "
            "(C-Eval 41.90, CMMLU 36.08): 0-shot, the question in the chat template with the "
            "default system prompt, greedy decoding with a long budget, the letter read by "
            "regular expressions and otherwise the option whose text best matches the reply, "
            "so no reply is unparseable."
        ),
        mode="generate",
        shots=0,
        splits={"ceval": "val", "cmmlu": "test", "mmlu": "test"},
        system_prompt=DEFAULT_SYSTEM_PROMPT,
        max_new_tokens=512,
        fuzzy_match=True,
    ),
}


def get_protocol(name: str) -> Protocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ValueError(f"unknown protocol {name!r}; expected one of {sorted(PROTOCOLS)}") from None
