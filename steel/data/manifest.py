"""Token-shard manifests: reading and checking them, and a training run's own copy.

A shard directory has `manifest.json` (written by `steel data tokenize`). A training run keeps
`RUN_DIR/data_manifest.json`, made from one or more shard directories by `init_run_manifest` and
extended by `steel data append`; shard directories are never modified. Both load through
`load_data_manifest`, which checks every shard's size and, by default, its sha256 and reports a
bad shard by file name instead of reading garbage.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MANIFEST_FILE = "manifest.json"
RUN_MANIFEST_FILE = "data_manifest.json"
SHARD_FORMAT = "steel-token-shards"
RUN_FORMAT = "steel-run-data"
DTYPES = ("uint16", "uint32")


class ShardError(ValueError):
    """A shard is missing, truncated, has the wrong size for its dtype or fails its checksum."""


def shard_dtype(vocab_size: int) -> str:
    """uint16 when every id fits (vocab_size <= 65,536), else uint32, so no id ever wraps."""
    return "uint16" if vocab_size <= 2**16 else "uint32"


def write_json_atomic(path: str | Path, obj) -> None:
    """Write indented UTF-8 JSON under a temporary name, then rename it over `path`."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: invalid JSON at line {error.lineno}: {error.msg}") from error


def _sha256_file(path: Path) -> str:
    from steel.resources import sha256_file

    return sha256_file(path)


@dataclass(frozen=True)
class ShardInfo:
    """One shard file: where it is, its split, token count, dtype, checksum and dataset."""

    path: Path
    split: str
    tokens: int
    dtype: str
    sha256: str
    dataset: str

    @property
    def file(self) -> str:
        return self.path.name

    def check(self, verify: str = "sha256") -> None:
        """Raise ShardError naming the file when it is missing, of the wrong size, or (with sha256) altered."""
        if self.dtype not in DTYPES:
            raise ShardError(f"{self.path}: unknown dtype {self.dtype!r} in the manifest (expected uint16 or uint32)")
        if not self.path.is_file():
            raise ShardError(f"{self.path}: shard file not found")
        size = self.path.stat().st_size
        itemsize = np.dtype(self.dtype).itemsize
        if size % itemsize:
            raise ShardError(f"{self.path}: {size} bytes is not a whole number of {self.dtype} tokens; the file is damaged")
        if size != self.tokens * itemsize:
            raise ShardError(
                f"{self.path}: {size // itemsize} tokens on disk but the manifest records {self.tokens}; "
                "the shard is truncated or was replaced. Re-run `steel data tokenize`."
            )
        if verify == "sha256":
            actual = _sha256_file(self.path)
            if actual != self.sha256:
                raise ShardError(
                    f"{self.path}: sha256 {actual} does not match the manifest's {self.sha256}; "
                    "the shard is corrupted. Re-run `steel data tokenize`."
                )

    def memmap(self) -> np.ndarray:
        return np.memmap(self.path, dtype=np.dtype(self.dtype).newbyteorder("<"), mode="r", shape=(self.tokens,))


@dataclass
class DataManifest:
    """A shard directory's manifest or a run's data manifest, with absolute shard paths."""

    path: Path
    raw: dict
    shards: list[ShardInfo] = field(default_factory=list)

    @property
    def train_shards(self) -> list[ShardInfo]:
        return [s for s in self.shards if s.split == "train"]

    @property
    def validation_shards(self) -> list[ShardInfo]:
        return [s for s in self.shards if s.split == "validation"]

    @property
    def tokenizer(self) -> dict:
        return self.raw["tokenizer"]

    @property
    def vocab_size(self) -> int:
        return int(self.raw["vocab_size"])

    @property
    def separator_id(self) -> int:
        return int(self.raw["separator"]["id"])

    def tokenizer_spec(self) -> str:
        """Return the `load_tokenizer` spec of the recorded tokenizer ("qwen" or its directory)."""
        return self.tokenizer["name"]

    def summary(self) -> str:
        """Format the tokenizer, separator, tokens per split, source and language for people."""
        raw = self.raw
        train = sum(s.tokens for s in self.train_shards)
        validation = sum(s.tokens for s in self.validation_shards)
        lines = [
            f"manifest: {self.path}",
            f"tokenizer: {self.tokenizer['name']} (sha256 {self.tokenizer['sha256'][:12]}), vocab_size {self.vocab_size}",
            f"separator: {raw['separator']['token']} = {self.separator_id}",
            f"shards: {len(self.train_shards)} train ({train:,} tokens), "
            f"{len(self.validation_shards)} validation ({validation:,} tokens)",
        ]
        for title, key in (("tokens by source", "tokens_by_source"), ("tokens by language", "tokens_by_language")):
            counts = _merged_counts(raw, key)
            total = sum(counts.values()) or 1
            lines.append(f"{title}:")
            for name, count in sorted(counts.items(), key=lambda item: -item[1]):
                lines.append(f"  {name:<24} {count:>15,}  {100 * count / total:5.1f}%")
        skipped = _merged_counts(raw, "skipped")
        if skipped:
            lines.append("skipped documents: " + ", ".join(f"{reason}: {n}" for reason, n in skipped.items()))
        return "\n".join(lines)


def _merged_counts(raw: dict, key: str) -> dict[str, int]:
    # A run manifest keeps each dataset's counts; a shard manifest has them at the top level.
    parts = [d.get(key, {}) for d in raw.get("datasets", [])] if raw.get("format") == RUN_FORMAT else [raw.get(key, {})]
    merged: dict[str, int] = {}
    for part in parts:
        for name, count in part.items():
            merged[name] = merged.get(name, 0) + int(count)
    return merged


def resolve_manifest_path(path: str | Path) -> Path:
    """Accept a manifest file, a shard directory or a run directory."""
    path = Path(path)
    if path.is_dir():
        for name in (RUN_MANIFEST_FILE, MANIFEST_FILE):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(
            f"{path}: neither {RUN_MANIFEST_FILE} nor {MANIFEST_FILE} found in this directory. If it contains "
            "documents rather than token shards, tokenize them first with `steel data tokenize`"
        )
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found")
    return path


def _shards_from_directory_manifest(raw: dict, directory: Path, dataset: str) -> list[ShardInfo]:
    return [
        ShardInfo(directory / s["file"], s["split"], int(s["tokens"]), s["dtype"], s["sha256"], dataset)
        for s in raw["shards"]
    ]


def load_data_manifest(path: str | Path, verify: str = "sha256") -> DataManifest:
    """Load a manifest and check its shards: `verify` is "sha256" (size and checksum), "size" or "none"."""
    if verify not in ("sha256", "size", "none"):
        raise ValueError(f"verify must be 'sha256', 'size' or 'none', got {verify!r}")
    path = resolve_manifest_path(path)
    raw = _read_json(path)
    kind = raw.get("format")
    if kind == SHARD_FORMAT:
        shards = _shards_from_directory_manifest(raw, path.parent, raw.get("name") or path.parent.name)
    elif kind == RUN_FORMAT:
        shards = [
            ShardInfo(Path(s["path"]), s["split"], int(s["tokens"]), s["dtype"], s["sha256"], s["dataset"])
            for s in raw["shards"]
        ]
    else:
        raise ValueError(
            f"{path}: not a Steel token manifest (format {kind!r}); expected {SHARD_FORMAT} or {RUN_FORMAT}. "
            "Documents (for example a `steel data clean` output) must be tokenized first with `steel data tokenize`"
        )

    if verify != "none":
        for shard in shards:
            shard.check(verify)
    return DataManifest(path, raw, shards)


def fingerprint(shards: list[ShardInfo]) -> str:
    """sha256 over the shards' checksums in order: which data a stream position refers to."""
    digest = hashlib.sha256()
    for shard in shards:
        digest.update(shard.sha256.encode() + b"\n")
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# A run's own data manifest


def _dataset_entry(manifest: DataManifest, name: str) -> dict:
    raw = manifest.raw
    return {
        "name": name,
        "directory": str(manifest.path.parent.resolve()),
        "manifest_sha256": _sha256_file(manifest.path),
        "sources": raw.get("sources", []),
        "tokens_by_source": raw.get("tokens_by_source", {}),
        "tokens_by_language": raw.get("tokens_by_language", {}),
        "skipped": raw.get("skipped", {}),
        "totals": raw.get("totals", {}),
    }


def _shard_entries(manifest: DataManifest, name: str) -> list[dict]:
    return [
        {
            "dataset": name,
            "path": str(s.path.resolve()),
            "split": s.split,
            "tokens": s.tokens,
            "dtype": s.dtype,
            "sha256": s.sha256,
        }
        for s in manifest.shards
    ]


def _check_compatible(run: dict, manifest: DataManifest, run_path: Path) -> None:
    if manifest.tokenizer["sha256"] != run["tokenizer"]["sha256"]:
        raise ValueError(
            f"{manifest.path}: tokenizer {manifest.tokenizer['name']} (sha256 {manifest.tokenizer['sha256'][:12]}) "
            f"differs from the run's {run['tokenizer']['name']} (sha256 {run['tokenizer']['sha256'][:12]}) in {run_path}; "
            "tokenize the data with the run's tokenizer"
        )
    if manifest.separator_id != run["separator"]["id"]:
        raise ValueError(
            f"{manifest.path}: separator id {manifest.separator_id} differs from the run's {run['separator']['id']} "
            f"in {run_path}; tokenize with --separator {run['separator']['token']}"
        )


def _check_not_duplicate(run: dict, manifest: DataManifest, run_path: Path) -> None:
    """Reject shards or input files whose content is already in the run, naming both files."""
    known_shards = {s["sha256"]: s["path"] for s in run["shards"]}
    for shard in manifest.shards:
        if shard.sha256 in known_shards:
            raise ValueError(
                f"{shard.path} has the same content (sha256 {shard.sha256[:12]}) as {known_shards[shard.sha256]}, "
                f"which is already in {run_path}; the data was not added"
            )
    known_sources = {
        source["sha256"]: source["file"] for dataset in run["datasets"] for source in dataset.get("sources", [])
    }
    for source in manifest.raw.get("sources", []):
        if source["sha256"] in known_sources:
            raise ValueError(
                f"input {source['file']} of {manifest.path} has the same content (sha256 {source['sha256'][:12]}) as "
                f"{known_sources[source['sha256']]}, which is already in {run_path}; the data was not added"
            )


def _unique_name(run: dict, name: str) -> str:
    taken = {dataset["name"] for dataset in run["datasets"]}
    candidate, number = name, 2
    while candidate in taken:
        candidate, number = f"{name}-{number}", number + 1
    return candidate


def _add_dataset(run: dict, manifest: DataManifest, run_path: Path) -> str:
    _check_compatible(run, manifest, run_path)
    _check_not_duplicate(run, manifest, run_path)
    name = _unique_name(run, manifest.raw.get("name") or manifest.path.parent.name)
    run["datasets"].append(_dataset_entry(manifest, name))
    run["shards"].extend(_shard_entries(manifest, name))
    return name


def init_run_manifest(run_dir: str | Path, shard_dirs: list[str | Path]) -> Path:
    """Create `RUN_DIR/data_manifest.json` from shard directories; an existing one is kept as it is.

    A resumed run therefore trains on its own copy, including data added by `steel data append`.
    """
    run_dir = Path(run_dir)
    path = run_dir / RUN_MANIFEST_FILE
    if path.is_file():
        return path
    if not shard_dirs:
        raise ValueError("init_run_manifest needs at least one shard directory")

    manifests = [load_data_manifest(d) for d in shard_dirs]
    first = manifests[0].raw
    run = {
        "format": RUN_FORMAT,
        "version": 1,
        "tokenizer": first["tokenizer"],
        "vocab_size": first["vocab_size"],
        "separator": first["separator"],
        "datasets": [],
        "shards": [],
    }
    for manifest in manifests:
        _add_dataset(run, manifest, path)
    run["vocab_size"] = max(int(m.raw["vocab_size"]) for m in manifests)

    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, run)
    return path


def append_to_run_manifest(run_dir: str | Path, shard_dirs: list[str | Path]) -> list[str]:
    """Add shard directories to a run's data manifest; all are checked before any is added."""
    path = resolve_manifest_path(run_dir) if Path(run_dir).is_dir() else Path(run_dir)
    if path.name != RUN_MANIFEST_FILE or not path.is_file():
        raise FileNotFoundError(
            f"{run_dir}: no {RUN_MANIFEST_FILE}; a run gets one when training starts (init_run_manifest)"
        )
    run = _read_json(path)
    added = [_add_dataset(run, load_data_manifest(d), path) for d in shard_dirs]
    write_json_atomic(path, run)
    return added
