"""Cleaning recipes: YAML files listing operators in order, Steel's own or Data-Juicer's.

A Steel recipe:

    name: zh-web
    text_key: text
    process:
      - chinese_convert_mapper: {mode: t2s}
      - words_num_filter: {unit: jieba, min_num: 10}
      - document_minhash_deduplicator: {tokenization: character}

A Data-Juicer configuration (`project_name`, `np`, `process`, ...) loads too. The operators keep
their names and keys; global keys that only matter to Data-Juicer (paths, caches, tracer, process
count) are ignored and listed in `Recipe.ignored_keys`, as are operator keys Steel does not use.
Deduplicators must come after every mapper and filter, because they run across all shards once
the per-shard operators are done.
"""

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from steel.data.clean.operators import Operator, build_operator
from steel.resources import ResourceError, recipes_dir

logger = logging.getLogger(__name__)

STEEL_KEYS = frozenset(("name", "description", "compat", "text_key", "process"))
COMPAT_VALUES = ("steel", "data-juicer")


@dataclass
class Recipe:
    name: str
    operators: list[Operator]
    text_key: str = "text"
    compat: str = "steel"
    source: str = ""
    ignored_keys: list[str] = field(default_factory=list)  # "key" or "03_operator.key"

    @property
    def per_document(self) -> list[Operator]:
        return [op for op in self.operators if op.kind != "dedup"]

    @property
    def deduplicators(self) -> list[Operator]:
        return [op for op in self.operators if op.kind == "dedup"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "compat": self.compat,
            "text_key": self.text_key,
            "process": [
                {
                    "operator": op.name,
                    "kind": op.kind,
                    "params": op.params,
                    "min": op.min_value if op.kind == "filter" else None,
                    "max": op.max_value if op.kind == "filter" else None,
                    "skipped": op.skip_reason,
                }
                for op in self.operators
            ],
        }

    def fingerprint(self) -> str:
        """sha256 of the resolved operators: two recipes with the same fingerprint clean identically."""
        blob = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def resolve_recipe_path(spec: str | Path) -> Path:
    """A recipe file path, or the name of a shipped recipe (`zh-web`, `steel-text`, `steel-code`)."""
    path = Path(spec)
    if path.is_file():
        return path
    try:
        shipped_dir = recipes_dir() / "data"
    except ResourceError as error:
        raise SystemExit(f"recipe {str(spec)!r}: no such file, and {error}") from error

    shipped = shipped_dir / f"{spec}.yaml"
    if shipped.is_file():
        return shipped
    names = sorted(p.stem for p in shipped_dir.glob("*.yaml"))
    raise SystemExit(f"recipe {str(spec)!r} not found: give a YAML file or one of {', '.join(names)}")


def load_recipe(spec: str | Path) -> Recipe:
    path = resolve_recipe_path(spec)
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise SystemExit(f"{path}: invalid YAML: {error}") from error
    return parse_recipe(config, source=str(path))


def parse_recipe(config: Any, source: str = "<recipe>") -> Recipe:
    if not isinstance(config, dict) or not isinstance(config.get("process"), list):
        raise SystemExit(f"{source}: a recipe is a mapping with a `process:` list of operators")

    compat = config.get("compat") or ("data-juicer" if "project_name" in config else "steel")
    if compat not in COMPAT_VALUES:
        raise SystemExit(f"{source}: compat must be one of {COMPAT_VALUES}, got {compat!r}")
    ignored = sorted(k for k in config if k not in STEEL_KEYS and k != "text_keys")
    text_key = _text_key(config, source, ignored)

    operators = []
    for index, entry in enumerate(config["process"]):
        name, params = _operator_entry(entry, index, source)
        where = f"{source}: process[{index}] {name}"
        try:
            op = build_operator(name, params, index, where)
        except ValueError as error:
            raise SystemExit(str(error)) from error
        ignored.extend(f"{op.label}.{key}" for key in op.ignored_keys)
        operators.append(op)

    _check_dedup_last(operators, source)
    recipe = Recipe(config.get("name") or config.get("project_name") or Path(source).stem, operators, text_key, compat, source, ignored)
    if ignored:
        logger.info("%s: ignored keys (not used by Steel): %s", source, ", ".join(ignored))
    return recipe


def _text_key(config: dict, source: str, ignored: list[str]) -> str:
    if "text_key" in config:
        return str(config["text_key"])
    text_keys = config.get("text_keys", "text")
    if isinstance(text_keys, list):
        if len(text_keys) > 1:
            ignored.append("text_keys[1:]")  # Data-Juicer also processes only the first key
        text_keys = text_keys[0] if text_keys else "text"
    return str(text_keys)


def _operator_entry(entry: Any, index: int, source: str) -> tuple[str, dict | None]:
    if isinstance(entry, str):
        return entry, None
    if isinstance(entry, dict) and len(entry) == 1:
        name, params = next(iter(entry.items()))
        if params is None or isinstance(params, dict):
            return name, params
    raise SystemExit(f"{source}: process[{index}] must be `operator_name:` or `operator_name: {{key: value}}`, got {entry!r}")


def _check_dedup_last(operators: list[Operator], source: str) -> None:
    seen_dedup = None
    for op in operators:
        if op.kind == "dedup":
            seen_dedup = op
        elif seen_dedup is not None:
            raise SystemExit(
                f"{source}: {op.name} comes after {seen_dedup.name}; move deduplicators to the end of `process`, "
                "because they run across all shards after the per-document operators"
            )
