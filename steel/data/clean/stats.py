"""Per-operator statistics: what each operator removed or changed, with examples.

`OperatorStats` is filled while a shard is cleaned and merged across shards into `stats.json`.
`measure_recipe` runs a recipe's per-document operators in one process on (a sample of) the inputs.
For every filter it reports the documents it removed in recipe order and the share it would remove
on its own. The second number shows what a threshold does, independent of the other filters.
"""

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

EXAMPLE_CHARS = 600


def truncate(text: str, max_chars: int = EXAMPLE_CHARS) -> str:
    return text if len(text) <= max_chars else text[:max_chars] + f"… [{len(text) - max_chars} more characters]"


def _number(value: float) -> float | str:
    """JSON has no infinity: write it as a string."""
    return value if math.isfinite(value) else str(value)


@dataclass
class OperatorStats:
    label: str
    operator: str
    kind: str
    docs_in: int = 0
    chars_in: int = 0
    docs_removed: int = 0
    docs_modified: int = 0
    chars_removed: int = 0  # removed documents' characters, or characters a mapper deleted
    chars_added: int = 0  # characters a mapper inserted (macro expansion, punctuation spacing)
    skipped: str | None = None
    examples: list[dict] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def record_modified(self, doc_id: str, before: str, after: str, num_examples: int) -> None:
        self.docs_modified += 1
        delta = len(before) - len(after)
        if delta > 0:
            self.chars_removed += delta
        else:
            self.chars_added -= delta
        if len(self.examples) < num_examples:
            self.examples.append({"id": doc_id, "before": truncate(before), "after": truncate(after)})

    def record_removed(self, doc_id: str, text: str, value: float, num_examples: int) -> None:
        self.docs_removed += 1
        self.chars_removed += len(text)
        if len(self.examples) < num_examples:
            self.examples.append({"id": doc_id, "value": _number(round(value, 4)), "text": truncate(text)})

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "operator": self.operator,
            "kind": self.kind,
            "docs_in": self.docs_in,
            "chars_in": self.chars_in,
            "docs_removed": self.docs_removed,
            "docs_modified": self.docs_modified,
            "chars_removed": self.chars_removed,
            "chars_added": self.chars_added,
            "skipped": self.skipped,
            **self.extra,
            "examples": self.examples,
        }


def merge_stats(parts: list[dict], num_examples: int) -> dict:
    """Sum per-shard statistics of one operator; examples are taken in shard order."""
    merged = dict(parts[0])
    for key in ("docs_in", "chars_in", "docs_removed", "docs_modified", "chars_removed", "chars_added"):
        merged[key] = sum(p[key] for p in parts)
    merged["examples"] = [e for p in parts for e in p["examples"]][:num_examples]
    return merged


# ---------------------------------------------------------------------------------------------
# Reading and printing


def load_stats(path: str | Path) -> dict:
    """stats.json of a cleaned output directory (or the file itself)."""
    path = Path(path)
    if path.is_dir():
        if not (path / "stats.json").is_file() and (path / "work" / "plan.json").is_file():
            from steel.data.clean.pipeline import finish_from_plan

            return finish_from_plan(path)  # stages run by another executor: merge their statistics now
        path = path / "stats.json"
    if not path.is_file():
        raise SystemExit(f"{path} not found: give an output directory of `steel data clean` or its stats.json")
    return json.loads(path.read_text(encoding="utf-8"))


def _percent(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:5.1f}%" if whole else "    -"


def format_table(stats: dict) -> str:
    """Format one line per operator: documents removed or modified (share of its input), characters removed."""
    totals = stats["totals"]
    has_alone = any("docs_failing_alone" in op for op in stats["operators"])
    header = f"{'operator':<38} {'docs in':>8} {'removed':>8} {'':>6} {'modified':>8} {'chars removed':>14}"
    if has_alone:
        header += f" {'alone':>7}"
    lines = [f"recipe {stats['recipe']}: {totals['documents_in']} documents in, {totals['documents_out']} out", header]
    for op in stats["operators"]:
        if op.get("skipped"):
            lines.append(f"{op['label']:<38} skipped: {op['skipped']}")
            continue
        line = (
            f"{op['label']:<38} {op['docs_in']:>8} {op['docs_removed']:>8} {_percent(op['docs_removed'], op['docs_in']):>6} "
            f"{op['docs_modified']:>8} {op['chars_removed']:>14}"
        )
        if has_alone and "docs_failing_alone" in op:
            line += f" {_percent(op['docs_failing_alone'], totals['documents_in']):>7}"
        lines.append(line)
    if has_alone:
        lines.append("alone: share of all documents the filter removes when it runs by itself after the mappers")
    skipped_files = stats.get("skipped_files", [])
    if skipped_files:
        lines.append(f"{len(skipped_files)} input file(s) skipped:")
        lines.extend(f"  {skipped_file['path']}: {skipped_file['reason']}" for skipped_file in skipped_files)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Measuring a recipe without writing shards


def measure_recipe(recipe, inputs: list[Path], max_docs: int | None = None, num_examples: int = 3) -> dict:
    """Run the per-document operators in one process; report removals in order and per filter alone.

    Deduplicators are not run (they need the global pass of `steel data clean`).
    """
    from steel.data import io
    from steel.data.clean.text import TextView

    ops = recipe.per_document
    stats = [OperatorStats(op.label, op.name, op.kind, skipped=op.skip_reason) for op in ops]
    failing_alone = [0] * len(ops)
    docs_in = chars_in = docs_out = chars_out = 0
    bad = io.BadRecordLog()
    for path in inputs:
        for line_no, record in io.iter_records(path, on_bad=bad):
            if max_docs is not None and docs_in >= max_docs:
                break
            text = record.get(recipe.text_key)
            if not isinstance(text, str):
                bad(io.BadRecord(str(path), line_no, f"missing field {recipe.text_key!r}"))
                continue
            docs_in += 1
            chars_in += len(text)
            doc_id = f"{Path(path).name}:{line_no}"
            view, alive = None, True
            for i, (op, op_stats) in enumerate(zip(ops, stats)):
                if op.skip_reason:
                    continue
                if op.kind == "mapper":
                    before, text = text, op.map(text)
                    view = None
                    if alive:
                        op_stats.docs_in += 1
                        op_stats.chars_in += len(before)
                        if text != before:
                            op_stats.record_modified(doc_id, before, text, num_examples)
                    continue
                view = view or TextView(text)
                kept, value = op.decide(view)
                failing_alone[i] += not kept
                if alive:
                    op_stats.docs_in += 1
                    op_stats.chars_in += len(text)
                    if not kept:
                        op_stats.record_removed(doc_id, text, value, num_examples)
                        alive = False
            if alive:
                docs_out += 1
                chars_out += len(text)
    operators = []
    for op, op_stats, alone in zip(ops, stats, failing_alone):
        entry = op_stats.to_dict()
        if op.kind == "filter":
            entry["docs_failing_alone"] = alone
        operators.append(entry)
    totals = {"documents_in": docs_in, "chars_in": chars_in, "documents_out": docs_out, "chars_out": chars_out, "bad_records": bad.total}
    return {"recipe": recipe.name, "totals": totals, "operators": operators, "bad_records": bad.to_dict()}
