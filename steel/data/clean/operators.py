"""The operator table: Data-Juicer operator names mapped to Steel's functions, parameters and defaults.

Defaults are the parameters the Steel-LLM report lists for text (Data-Juicer's units). A recipe
entry overrides them; Steel-only keys (`unit`, `style`, ...) choose Chinese-correct units.
"""

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from steel.data.clean import code, filters, mappers
from steel.data.clean.text import TextView

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MapperSpec:
    function: Callable[..., str]
    defaults: dict[str, Any]


@dataclass(frozen=True)
class FilterSpec:
    statistic: Callable[..., float]
    defaults: dict[str, Any]  # arguments of `statistic`
    min_key: str | None
    max_key: str | None
    min_default: float
    max_default: float


@dataclass(frozen=True)
class DedupSpec:
    method: str  # "exact", "simhash" or "minhash"
    defaults: dict[str, Any]


MAPPERS: dict[str, MapperSpec] = {
    "chinese_convert_mapper": MapperSpec(mappers.chinese_convert, {"mode": "t2s"}),
    "clean_email_mapper": MapperSpec(mappers.clean_email, {"repl": "", "pattern": None}),
    "clean_html_mapper": MapperSpec(mappers.clean_html, {}),
    "clean_ip_mapper": MapperSpec(mappers.clean_ip, {"repl": "", "pattern": None}),
    "clean_links_mapper": MapperSpec(mappers.clean_links, {"repl": "", "pattern": None}),
    "clean_copyright_mapper": MapperSpec(code.clean_copyright, {}),
    "expand_macro_mapper": MapperSpec(mappers.expand_macro, {}),
    "fix_unicode_mapper": MapperSpec(
        mappers.fix_unicode, {"normalization": "NFC", "fix_character_width": True, "uncurl_quotes": True}
    ),
    "punctuation_normalization_mapper": MapperSpec(mappers.punctuation_normalization, {"style": "ascii"}),
    "remove_repeat_sentences_mapper": MapperSpec(
        mappers.remove_repeat_sentences,
        {"lowercase": False, "ignore_special_character": True, "min_repeat_sentence_length": 2},
    ),
    "remove_specific_chars_mapper": MapperSpec(
        mappers.remove_specific_chars, {"chars_to_remove": mappers.DEFAULT_CHARS_TO_REMOVE}
    ),
    "whitespace_normalization_mapper": MapperSpec(mappers.whitespace_normalization, {}),
}

FILTERS: dict[str, FilterSpec] = {
    "alphanumeric_filter": FilterSpec(filters.alphanumeric_ratio, {"tokenization": False}, "min_ratio", "max_ratio", 0.0, 0.9),
    "average_line_length_filter": FilterSpec(filters.average_line_length, {"unit": "line"}, "min_len", "max_len", 10, 150),
    "character_repetition_filter": FilterSpec(
        filters.character_repetition_ratio, {"rep_len": 10}, "min_ratio", "max_ratio", 0.0, 0.4
    ),
    "maximum_line_length_filter": FilterSpec(filters.maximum_line_length, {"unit": "line"}, "min_len", "max_len", 0, 1000),
    "special_characters_filter": FilterSpec(filters.special_characters_ratio, {}, "min_ratio", "max_ratio", 0.0, 0.25),
    "text_length_filter": FilterSpec(filters.text_length, {}, "min_len", "max_len", 10, 100000),
    "words_num_filter": FilterSpec(filters.words_num, {"unit": "space"}, "min_num", "max_num", 10, 10000),
    "word_repetition_filter": FilterSpec(
        filters.word_repetition_ratio, {"rep_len": 10, "unit": "space"}, "min_ratio", "max_ratio", 0.0, 0.5
    ),
    # The statistic is bound when the recipe is built, from `model` or `kenlm` (see perplexity.py).
    "perplexity_filter": FilterSpec(None, {}, None, "max_ppl", 0.0, 1500),
}

DEDUPLICATORS: dict[str, DedupSpec] = {
    "document_deduplicator": DedupSpec("exact", {"lowercase": False, "ignore_non_character": False}),
    "document_simhash_deduplicator": DedupSpec(
        "simhash",
        {"tokenization": "space", "window_size": 6, "lowercase": True, "ignore_pattern": None, "num_blocks": 6, "hamming_distance": 4},
    ),
    "document_minhash_deduplicator": DedupSpec(
        "minhash",
        {
            "tokenization": "character", "window_size": 5, "lowercase": True, "ignore_pattern": None,
            "num_permutations": 256, "jaccard_threshold": 0.7, "num_bands": None, "num_rows_per_band": None, "seed": 42,
            "backend": "steel",
        },
    ),  # fmt: skip
}

# Keys Data-Juicer accepts that Steel reads differently or does not need: reported, never silently used.
DATA_JUICER_WORD_KEYS = ("lang", "tokenization")
IGNORED_OPERATOR_KEYS = frozenset(("accelerator", "batch_size", "num_proc", "cpu_required", "mem_required", "text_key", "skip_op_error"))
WORD_FILTERS = ("words_num_filter", "word_repetition_filter")
# The keys steel.data.clean.perplexity.build_perplexity reads, besides `max_ppl` and `lang`.
PERPLEXITY_KEYS = ("model", "kenlm", "max_tokens")


def operator_keys(name: str) -> list[str]:
    """List the parameters operator `name` accepts in a recipe, besides the `IGNORED_OPERATOR_KEYS` of every operator."""
    if name in MAPPERS:
        return sorted(MAPPERS[name].defaults)
    if name in DEDUPLICATORS:
        return sorted(DEDUPLICATORS[name].defaults)
    spec = FILTERS[name]
    keys = {*spec.defaults, "lang"}  # Data-Juicer's language key, which Steel ignores
    keys.update(key for key in (spec.min_key, spec.max_key) if key)
    if name in WORD_FILTERS:
        keys.add("tokenization")  # Data-Juicer's spelling of `unit`
    if name == "perplexity_filter":
        keys.update(PERPLEXITY_KEYS)
    return sorted(keys)


def _check_keys(name: str, entry: dict[str, Any], where: str) -> None:
    """Raise ValueError naming the keys of `entry` that operator `name` does not accept, and those it does."""
    keys = operator_keys(name)
    unknown = sorted(set(entry) - set(keys) - IGNORED_OPERATOR_KEYS)
    if unknown:
        raise ValueError(
            f"{where}: unknown parameter(s) {', '.join(unknown)}; valid for {name}: {', '.join(keys) or 'none'}; "
            f"valid for every operator: {', '.join(sorted(IGNORED_OPERATOR_KEYS))}"
        )
    if name in WORD_FILTERS and "unit" in entry and "tokenization" in entry:
        raise ValueError(f"{where}: set `unit` (Steel's) or `tokenization` (Data-Juicer's), not both")


@dataclass
class Operator:
    """One resolved recipe step."""

    name: str
    kind: str  # "mapper", "filter" or "dedup"
    params: dict[str, Any]
    index: int = 0
    function: Callable | None = None
    min_value: float = -math.inf
    max_value: float = math.inf
    method: str | None = None  # deduplicators: "exact", "simhash" or "minhash"
    skip_reason: str | None = None  # set when the operator cannot run (for example perplexity without a model)
    ignored_keys: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        """Unique name within a recipe: `03_word_repetition_filter`."""
        return f"{self.index:02d}_{self.name}"

    def map(self, text: str) -> str:
        return self.function(text, **self.params)

    def measure(self, view: TextView) -> float:
        return self.function(view, **self.params)

    def keeps(self, value: float) -> bool:
        return self.min_value <= value <= self.max_value

    def decide(self, view: TextView) -> tuple[bool, float | None]:
        """Return whether the filter keeps the document, and the statistic when it had to compute it.

        Jieba word filters first try exact bounds that need little or no segmentation (most clean
        documents pass them); the statistic is computed only when the bounds cannot decide.
        """
        if self.params.get("unit") == "jieba":
            if self.name == "words_num_filter" and filters.jieba_words_num_within(view, self.min_value, self.max_value):
                return True, None
            if (
                self.name == "word_repetition_filter"
                and self.min_value <= 0
                and filters.jieba_word_repetition_at_most(view, self.params["rep_len"], self.max_value)
            ):
                return True, None
        value = self.measure(view)
        return self.keeps(value), value


def _word_unit_from_data_juicer(name: str, entry: dict[str, Any], ignored: list[str]) -> str:
    """Translate Data-Juicer's `tokenization` to a Steel word unit.

    `tokenization: false` splits on whitespace. `tokenization: true` makes Data-Juicer load a
    SentencePiece model for `lang`; Steel uses jieba words in its place.
    """
    tokenization = entry.pop("tokenization", False)
    lang = entry.pop("lang", None)
    if lang is not None:
        ignored.append("lang")
    return "jieba" if tokenization else "space"


def build_operator(name: str, entry: dict[str, Any] | None, index: int, where: str) -> Operator:
    """Resolve one recipe entry (`name: {key: value}`) into an `Operator`; `where` names it in errors."""
    if name not in MAPPERS and name not in FILTERS and name not in DEDUPLICATORS:
        known = sorted([*MAPPERS, *FILTERS, *DEDUPLICATORS])
        raise ValueError(f"{where}: unknown operator {name!r}; Steel implements: {', '.join(known)}")
    entry = dict(entry or {})
    _check_keys(name, entry, where)
    ignored = sorted(k for k in entry if k in IGNORED_OPERATOR_KEYS)
    for key in ignored:
        entry.pop(key)

    if name in MAPPERS:
        spec = MAPPERS[name]
        params = _merge(spec.defaults, entry, where)
        return Operator(name, "mapper", params, index, spec.function, ignored_keys=ignored)

    if name in FILTERS:
        spec = FILTERS[name]
        if name in WORD_FILTERS and "unit" not in entry:
            entry["unit"] = _word_unit_from_data_juicer(name, entry, ignored)
        elif "lang" in entry and name != "perplexity_filter":
            entry.pop("lang")
            ignored.append("lang")
        min_value = float(entry.pop(spec.min_key, spec.min_default)) if spec.min_key else -math.inf
        max_value = float(entry.pop(spec.max_key, spec.max_default)) if spec.max_key else math.inf
        if name == "perplexity_filter":
            from steel.data.clean.perplexity import build_perplexity

            function, params, skip_reason = build_perplexity(entry, where)
            return Operator(name, "filter", params, index, function, -math.inf, max_value, skip_reason=skip_reason, ignored_keys=ignored)
        params = _merge(spec.defaults, entry, where)
        return Operator(name, "filter", params, index, spec.statistic, min_value, max_value, ignored_keys=ignored)

    spec = DEDUPLICATORS[name]
    params = _merge(spec.defaults, entry, where)
    if params.get("backend", "steel") not in ("steel", "datatrove"):
        raise ValueError(f"{where}: backend must be 'steel' (one-node LSH) or 'datatrove' (multi-stage), got {params['backend']!r}")
    return Operator(name, "dedup", params, index, None, method=spec.method, ignored_keys=ignored)


def _merge(defaults: dict[str, Any], entry: dict[str, Any], where: str) -> dict[str, Any]:
    # `_check_keys` has rejected every other key already; this guards the operator functions' arguments.
    unknown = sorted(set(entry) - set(defaults))
    if unknown:
        raise ValueError(f"{where}: unexpected parameter(s) {', '.join(unknown)} left after reading the recipe entry")
    return {**defaults, **entry}
