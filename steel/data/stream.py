"""The resumable pretraining stream, validation batches, a unigram baseline and `steel data append`.

Samples. Train shard i with n_i tokens gives (n_i - 1) // block_size samples. Sample k is
tokens[k * block_size : k * block_size + block_size + 1]. Inputs and shifted targets overlap by one
token, so every token except a shard's short tail is a target once per epoch.

Mixture weights. A dataset (one `steel data tokenize` output) with weight w contributes
round(w * n_i) virtual samples per shard and epoch: w = 2 reads each sample twice, w = 0.5 reads
half, rotating so that successive epochs cover the other half.

Order. Each epoch visits its virtual samples in a seeded pseudo-random permutation (a Feistel
network over the index range, so no permutation array is stored). Optimizer step s takes the
global positions [s * global_batch_size, (s + 1) * global_batch_size) of the concatenated epochs,
and rank r takes its contiguous part of that batch. The state after a step is the global sample
position, so it is independent of world size and of DataLoader workers.

Appending. When a resumed run's data manifest has more shards than the state knows, the samples
of the current epoch not yet trained and all samples of the new shards form a new "phase" of the
epoch with its own permutation: nothing already trained in this epoch repeats, and the next epoch
covers everything.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from steel.data.manifest import (
    DataManifest,
    ShardError,
    ShardInfo,
    append_to_run_manifest,
    fingerprint,
    init_run_manifest,
    load_data_manifest,
)

log = logging.getLogger(__name__)

STATE_FORMAT = "steel-pretrain-stream"
FEISTEL_ROUNDS = 4

__all__ = [
    "PretrainStream",
    "init_run_manifest",
    "unigram_baseline",
    "validation_batches",
]


# ---------------------------------------------------------------------------------------------
# A seeded permutation of [0, n) computed per index


def _round_keys(*parts: int) -> list[int]:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return [int.from_bytes(digest[8 * i : 8 * i + 8], "little") for i in range(FEISTEL_ROUNDS)]


def _mix(x: np.ndarray, key: int) -> np.ndarray:
    # splitmix64's finaliser: a fast, well-spread 64-bit hash.
    with np.errstate(over="ignore"):
        x = (x ^ np.uint64(key)) * np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def permute(indices: np.ndarray, n: int, keys: list[int]) -> np.ndarray:
    """Map positions in [0, n) to a pseudo-random permutation of [0, n) fixed by `keys`.

    A balanced Feistel network permutes [0, 4^h) with 4^h >= n; values that land outside [0, n)
    are encrypted again (cycle walking), which keeps the map a bijection of [0, n).
    """
    if n <= 1:
        return np.zeros_like(indices, dtype=np.int64)
    half_bits = max(1, math.ceil(math.log2(n) / 2))
    mask = np.uint64((1 << half_bits) - 1)
    shift = np.uint64(half_bits)

    def encrypt(x: np.ndarray) -> np.ndarray:
        left, right = x >> shift, x & mask
        for key in keys:
            left, right = right, left ^ (_mix(right, key) & mask)
        return (left << shift) | right

    x = encrypt(np.asarray(indices, dtype=np.uint64))
    outside = x >= np.uint64(n)
    while outside.any():
        x[outside] = encrypt(x[outside])
        outside = x >= np.uint64(n)
    return x.astype(np.int64)


# ---------------------------------------------------------------------------------------------
# The stream


class PretrainStream(torch.utils.data.IterableDataset):
    """Batches of `block_size + 1` tokens per optimizer step, with an exact, global, JSON state.

    Iterating yields `(local_batch, state)`: `local_batch` is a LongTensor of shape
    [global_batch_size // world_size, block_size + 1] for this rank, and `state` is the position
    after that step. Save the state of the last optimizer step that completed; batches prefetched
    beyond it are not trained and come again after `load_state_dict`.

    `manifest_path` is a run directory, its `data_manifest.json`, a shard directory or its
    `manifest.json`. `weights` maps dataset names to mixture multipliers (default 1.0).
    `verify="sha256"` reads every shard once when the stream opens; "size" checks sizes only,
    for corpora too large to hash at every start.
    """

    def __init__(
        self,
        manifest_path: str | Path,
        block_size: int,
        global_batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        weights: dict[str, float] | None = None,
        verify: str = "sha256",
    ) -> None:
        super().__init__()
        if block_size < 1 or global_batch_size < 1:
            raise ValueError(f"block_size and global_batch_size must be positive, got {block_size}, {global_batch_size}")
        if global_batch_size % world_size:
            raise ValueError(f"global_batch_size {global_batch_size} is not divisible by world_size {world_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside [0, world_size={world_size})")

        self.manifest = load_data_manifest(manifest_path, verify=verify)
        self.block_size = block_size
        self.global_batch_size = global_batch_size
        self.local_batch_size = global_batch_size // world_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size

        self.shards = self.manifest.train_shards
        self.weights = self._resolve_weights(weights or {})
        self.samples_per_shard = np.array([max(0, (s.tokens - 1) // block_size) for s in self.shards], dtype=np.int64)
        self.virtual_per_shard = np.array(
            [round(self.weights[s.dataset] * n) for s, n in zip(self.shards, self.samples_per_shard)], dtype=np.int64
        )
        self.virtual_offsets = np.concatenate([[0], np.cumsum(self.virtual_per_shard)])
        if self.virtual_offsets[-1] == 0:
            raise ValueError(
                f"{self.manifest.path}: no train shard has more than block_size={block_size} tokens; "
                "use more data or a smaller block_size"
            )
        self._memmaps: dict[int, np.ndarray] = {}
        self._fingerprints: dict[int, str] = {}
        self._state = self._initial_state()
        self._last_state = self._state
        self._log_plan()

    def _resolve_weights(self, weights: dict[str, float]) -> dict[str, float]:
        datasets = sorted({s.dataset for s in self.shards})
        unknown = sorted(set(weights) - set(datasets))
        if unknown:
            raise ValueError(f"mixture weights name unknown datasets {unknown}; the manifest has {datasets}")
        negative = {name: w for name, w in weights.items() if not w >= 0}
        if negative:
            raise ValueError(f"mixture weights must be >= 0, got {negative}")
        return {name: float(weights.get(name, 1.0)) for name in datasets}

    def _log_plan(self) -> None:
        tail_tokens = sum(s.tokens for s in self.shards) - int(self.samples_per_shard.sum()) * self.block_size
        log.info(
            "stream: %d train shards, %d samples of %d tokens per epoch (%d virtual with weights %s); "
            "%d tokens in shard tails are not sampled",
            len(self.shards),
            int(self.samples_per_shard.sum()),
            self.block_size + 1,
            self.num_virtual(len(self.shards)),
            self.weights,
            tail_tokens,
        )

    # --- positions --------------------------------------------------------------------------

    def num_virtual(self, num_shards: int) -> int:
        return int(self.virtual_offsets[num_shards])

    def _initial_state(self) -> dict:
        num_shards = len(self.shards)
        return {
            "format": STATE_FORMAT,
            "version": 1,
            "seed": self.seed,
            "block_size": self.block_size,
            "weights": self.weights,
            "epoch": 0,
            "phases": [self._new_phase(num_shards, self.num_virtual(num_shards))],
            "step": 0,
            "samples": 0,
        }

    def _new_phase(self, num_shards: int, pool: int) -> dict:
        if num_shards not in self._fingerprints:
            self._fingerprints[num_shards] = fingerprint(self.shards[:num_shards])
        return {
            "num_shards": num_shards,
            "shards_sha256": self._fingerprints[num_shards],
            "pool": pool,
            "consumed": 0,
        }

    def _phase_lookup(self, epoch: int, phases: list[dict], level: int, positions: np.ndarray) -> np.ndarray:
        """Virtual sample ids at `positions` of phase `level` of an epoch."""
        phase = phases[level]
        drawn = permute(positions, phase["pool"], _round_keys(self.seed, epoch, level))
        if level == 0:
            return drawn
        previous = phases[level - 1]
        remaining = previous["pool"] - previous["consumed"]
        ids = np.empty_like(drawn)
        is_old = drawn < remaining
        ids[is_old] = self._phase_lookup(epoch, phases, level - 1, previous["consumed"] + drawn[is_old])
        ids[~is_old] = self.num_virtual(previous["num_shards"]) + (drawn[~is_old] - remaining)
        return ids

    def _sample_ids(self, start: int, count: int) -> list[tuple[int, int, int]]:
        """(epoch, shard index, sample index) of `count` samples from `start` samples after the state."""
        state = self._state
        phases = state["phases"]
        last = phases[-1]
        remaining = last["pool"] - last["consumed"]
        epoch_size = self.num_virtual(len(self.shards))
        positions = np.arange(start, start + count, dtype=np.int64)

        result = []
        current = positions < remaining
        if current.any():
            ids = self._phase_lookup(state["epoch"], phases, len(phases) - 1, last["consumed"] + positions[current])
            result.extend(self._to_samples(state["epoch"], ids))
        later = positions[~current] - remaining
        for epoch_offset in np.unique(later // epoch_size):
            epoch = state["epoch"] + 1 + int(epoch_offset)
            in_epoch = later[later // epoch_size == epoch_offset] % epoch_size
            full_phase = [{"pool": epoch_size}]
            result.extend(self._to_samples(epoch, self._phase_lookup(epoch, full_phase, 0, in_epoch)))
        return result

    def _to_samples(self, epoch: int, virtual_ids: np.ndarray) -> list[tuple[int, int, int]]:
        shard_indices = np.searchsorted(self.virtual_offsets, virtual_ids, side="right") - 1
        samples = []
        for virtual_id, shard_index in zip(virtual_ids.tolist(), shard_indices.tolist()):
            within = virtual_id - int(self.virtual_offsets[shard_index])
            num_real = int(self.samples_per_shard[shard_index])
            # Weighted shards rotate their start each epoch so that w < 1 covers the rest later.
            rotation = (epoch * int(self.virtual_per_shard[shard_index])) % num_real
            samples.append((epoch, shard_index, (within + rotation) % num_real))
        return samples

    def _state_after(self, num_samples: int, num_steps: int) -> dict:
        state = self._state
        last = state["phases"][-1]
        remaining = last["pool"] - last["consumed"]
        new = dict(state, step=state["step"] + num_steps, samples=state["samples"] + num_samples)
        if num_samples < remaining:
            new["phases"] = state["phases"][:-1] + [dict(last, consumed=last["consumed"] + num_samples)]
            return new
        epoch_size = self.num_virtual(len(self.shards))
        beyond = num_samples - remaining
        new["epoch"] = state["epoch"] + 1 + beyond // epoch_size
        phase = self._new_phase(len(self.shards), epoch_size)
        phase["consumed"] = beyond % epoch_size
        new["phases"] = [phase]
        return new

    # --- reading ----------------------------------------------------------------------------

    def _read(self, shard_index: int, sample_index: int) -> np.ndarray:
        memmap = self._memmaps.get(shard_index)
        if memmap is None:
            memmap = self._memmaps[shard_index] = self.shards[shard_index].memmap()
        start = sample_index * self.block_size
        return memmap[start : start + self.block_size + 1]

    def batch_for_step(self, step_offset: int) -> tuple[torch.Tensor, dict]:
        """This rank's batch for the `step_offset`-th step after the current state, and the state after it."""
        first = step_offset * self.global_batch_size + self.rank * self.local_batch_size
        samples = self._sample_ids(first, self.local_batch_size)
        batch = np.stack([self._read(shard, index) for _, shard, index in samples]).astype(np.int64)
        state = self._state_after((step_offset + 1) * self.global_batch_size, step_offset + 1)
        return torch.from_numpy(batch), state

    def __iter__(self) -> Iterator[tuple[torch.Tensor, dict]]:
        # DataLoader workers take every num_workers-th step; the loader interleaves them back in order.
        worker = torch.utils.data.get_worker_info()
        worker_id, num_workers = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        step_offset = worker_id
        while True:
            batch, state = self.batch_for_step(step_offset)
            self._last_state = state
            yield batch, state
            step_offset += num_workers

    # --- state ------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Return the state after the last batch this object yielded, or the loaded state."""
        return _copy_state(self._last_state)

    def load_state_dict(self, state: dict) -> None:
        """Continue after the step `state` was yielded with; shards appended since then join the epoch."""
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a pretraining stream state (format {state.get('format')!r})")
        if state["block_size"] != self.block_size:
            raise ValueError(
                f"the state was saved with block_size {state['block_size']}, this stream has {self.block_size}; "
                "sample boundaries would differ"
            )
        if state["seed"] != self.seed:
            raise ValueError(f"the state was saved with seed {state['seed']}, this stream has seed {self.seed}")
        # Datasets appended since the state was saved may bring new weights; old ones must not change.
        if {name: self.weights.get(name) for name in state["weights"]} != state["weights"]:
            raise ValueError(f"the state was saved with mixture weights {state['weights']}, this stream has {self.weights}")

        state = _copy_state(state)
        state["weights"] = dict(self.weights)
        last = state["phases"][-1]
        known = last["num_shards"]
        if known > len(self.shards) or fingerprint(self.shards[:known]) != last["shards_sha256"]:
            raise ValueError(
                f"{self.manifest.path}: the train shards differ from the ones this state was saved with "
                f"({known} shards); a run's data may only grow by `steel data append`"
            )
        if known < len(self.shards):
            remaining = last["pool"] - last["consumed"]
            new_samples = self.num_virtual(len(self.shards)) - self.num_virtual(known)
            state["phases"].append(self._new_phase(len(self.shards), remaining + new_samples))
            log.info(
                "stream: %d appended shards add %d samples; reshuffled with the %d not yet trained in epoch %d",
                len(self.shards) - known,
                new_samples,
                remaining,
                state["epoch"],
            )
        self._state = state
        self._last_state = state

    def __getstate__(self) -> dict:
        # DataLoader workers get a copy without open memory maps; each opens its own.
        return {**self.__dict__, "_memmaps": {}}


def _copy_state(state: dict) -> dict:
    return {**state, "weights": dict(state["weights"]), "phases": [dict(p) for p in state["phases"]]}


# ---------------------------------------------------------------------------------------------
# Validation and the unigram baseline


def _as_manifest(manifest: DataManifest | str | Path, verify: str = "size") -> DataManifest:
    return manifest if isinstance(manifest, DataManifest) else load_data_manifest(manifest, verify=verify)


def validation_batches(
    manifest: DataManifest | str | Path,
    block_size: int,
    batch_size: int,
    max_batches: int | None = None,
) -> Iterator[torch.Tensor]:
    """Yield the validation split in a fixed order as LongTensors [<= batch_size, block_size + 1].

    Samples are taken like training samples (stride block_size) from every validation shard in
    manifest order; the last batch may be smaller.
    """
    manifest = _as_manifest(manifest)
    shards = manifest.validation_shards
    if not shards:
        raise ValueError(f"{manifest.path}: no validation shards; tokenize with --val-fraction or --val-docs")

    pending: list[np.ndarray] = []
    num_batches = 0
    for shard in shards:
        tokens = shard.memmap()
        for k in range(max(0, (shard.tokens - 1) // block_size)):
            pending.append(tokens[k * block_size : k * block_size + block_size + 1])
            if len(pending) == batch_size:
                yield torch.from_numpy(np.stack(pending).astype(np.int64))
                pending = []
                num_batches += 1
                if max_batches is not None and num_batches >= max_batches:
                    return
    if pending:
        yield torch.from_numpy(np.stack(pending).astype(np.int64))


def _token_counts(shards: list[ShardInfo], vocab_size: int, chunk_tokens: int = 1 << 24) -> np.ndarray:
    counts = np.zeros(vocab_size, dtype=np.int64)
    for shard in shards:
        tokens = shard.memmap()
        for start in range(0, shard.tokens, chunk_tokens):
            counts += np.bincount(tokens[start : start + chunk_tokens], minlength=vocab_size)[:vocab_size]
    return counts


def unigram_baseline(manifest: DataManifest | str | Path) -> float:
    """Cross-entropy (nats/token) of an add-one unigram model fitted on train and scored on validation.

    p(t) = (count_train(t) + 1) / (N_train + vocab_size), over the manifest's vocab_size ids; every
    validation token is scored, separators included. A language model that does not beat this
    number has learned no more than token frequencies.
    """
    manifest = _as_manifest(manifest)
    if not manifest.validation_shards:
        raise ValueError(f"{manifest.path}: no validation shards to score the unigram baseline on")
    vocab_size = manifest.vocab_size
    train_counts = _token_counts(manifest.train_shards, vocab_size)
    validation_counts = _token_counts(manifest.validation_shards, vocab_size)
    log_probs = np.log(train_counts + 1.0) - math.log(train_counts.sum() + vocab_size)
    return float(-(validation_counts * log_probs).sum() / validation_counts.sum())


# ---------------------------------------------------------------------------------------------
# `steel data append`


def append_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="training run directory (contains data_manifest.json)")
    parser.add_argument("shards", nargs="+", type=Path, help="shard directories written by `steel data tokenize`")


def append(args: argparse.Namespace) -> int:
    try:
        added = append_to_run_manifest(args.run_dir, args.shards)
    except (ShardError, FileNotFoundError, ValueError) as error:
        raise SystemExit(str(error)) from None
    print(
        f"added {', '.join(added)} to {args.run_dir / 'data_manifest.json'}; "
        "a resumed run reshuffles them with the samples of this epoch not yet trained"
    )
    return 0
