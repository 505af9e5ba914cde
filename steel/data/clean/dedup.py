"""Document deduplication: exact content hashes, SimHash and MinHash-LSH.

Each method has two halves. A per-document signature (`content_hash`, `simhash`,
`minhash_signature`) is computed in parallel while shards are cleaned; a global search over all
signatures (`find_exact_duplicates`, `find_simhash_duplicates`, `find_minhash_duplicates`) then
runs once over every shard, so duplicates are found across shards. In each group of duplicates the
first document in input order is kept, which makes the result deterministic.
"""

import hashlib
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import xxhash

from steel.data.clean.text import jieba_words

logger = logging.getLogger(__name__)

SHINGLE_UNITS = ("space", "character", "punctuation", "jieba")


@cache
def _compiled(pattern: str):
    import regex  # supports \p{P}, as Data-Juicer's ignore patterns use

    return regex.compile(pattern)


_PUNCTUATION_SPLIT = re.compile(r"[\s.,;:!?。，；：！？、“”\"'（）()]+")


def tokens_for_shingles(text: str, tokenization: str, lowercase: bool = True, ignore_pattern: str | None = None) -> list[str]:
    """Split `text` into the tokens that shingles are built from.

    `space`: whitespace tokens (Data-Juicer's default; a Chinese paragraph is one token).
    `character`: every character except whitespace. `punctuation`: pieces between punctuation.
    `jieba`: jieba-segmented words.
    """
    if lowercase:
        text = text.lower()
    if ignore_pattern:
        text = _compiled(ignore_pattern).sub("", text)
    if tokenization == "space":
        return text.split()
    if tokenization == "character":
        return list("".join(text.split()))  # `split()` drops exactly the characters that `isspace()`
    if tokenization == "punctuation":
        return [t for t in _PUNCTUATION_SPLIT.split(text) if t]
    if tokenization == "jieba":
        return jieba_words(text)
    raise ValueError(f"unknown tokenization {tokenization!r}; expected one of {SHINGLE_UNITS}")


def shingles(tokens: Sequence[str], window_size: int, separator: str = " ") -> list[str]:
    """Windows of `window_size` consecutive tokens. A text with fewer tokens has none.

    NOTE: like Data-Juicer, a document with fewer than `window_size` tokens gets no shingles and so
    the all-zero SimHash fingerprint, which makes all such documents duplicates of each other. With
    whitespace tokens every short Chinese paragraph is such a document.
    """
    num_shingles = len(tokens) - window_size + 1
    if num_shingles <= 0:
        return []
    # Slice each window out of the joined tokens instead of joining every window again.
    joined = separator.join(tokens)
    lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens)) + len(separator)
    starts = np.concatenate(([0], np.cumsum(lengths)))  # as if a separator followed every token
    ends = starts[window_size:] - len(separator)
    return list(map(joined.__getitem__, map(slice, starts[:num_shingles].tolist(), ends.tolist())))


def _separator(tokenization: str) -> str:
    return "" if tokenization in ("character", "jieba") else " "


# ---------------------------------------------------------------------------------------------
# Exact


def content_hash(text: str, lowercase: bool = False, ignore_non_character: bool = False) -> bytes:
    """MD5 of the text (16 bytes), optionally lowercased and without non-alphanumeric characters."""
    if lowercase:
        text = text.lower()
    if ignore_non_character:
        text = "".join(c for c in text if c.isalnum())
    return hashlib.md5(text.encode("utf-8")).digest()


def find_exact_duplicates(hashes: Sequence[bytes]) -> dict[int, int]:
    """Map each duplicate's index to the index of its first occurrence."""
    first: dict[bytes, int] = {}
    duplicates = {}
    for i, h in enumerate(hashes):
        if h in first:
            duplicates[i] = first[h]
        else:
            first[h] = i
    return duplicates


# ---------------------------------------------------------------------------------------------
# SimHash

_BIT_SHIFTS = np.arange(64, dtype=np.uint64)


def simhash(
    text: str, tokenization: str = "space", window_size: int = 6, lowercase: bool = True, ignore_pattern: str | None = None
) -> int:
    """64-bit SimHash of the document's shingles (xxh64 per shingle; each bit is a majority vote)."""
    tokens = tokens_for_shingles(text, tokenization, lowercase, ignore_pattern)
    grams = shingles(tokens, window_size, _separator(tokenization))
    if not grams:
        return 0
    hashes = np.fromiter(map(xxhash.xxh64_intdigest, map(str.encode, grams)), dtype="<u8", count=len(grams))
    # Bit j of a little-endian uint64 is bit j % 8 of its byte j // 8.
    bits = np.unpackbits(hashes.view(np.uint8).reshape(-1, 8), axis=1, bitorder="little")
    votes = bits.sum(axis=0, dtype=np.int64) * 2 > len(grams)
    return int((votes.astype(np.uint64) << _BIT_SHIFTS).sum(dtype=np.uint64))


def _block_masks(num_blocks: int) -> list[tuple[int, int]]:
    """(shift, mask) of `num_blocks` contiguous bit ranges that cover 64 bits."""
    sizes = [64 // num_blocks + (1 if i < 64 % num_blocks else 0) for i in range(num_blocks)]
    masks, shift = [], 0
    for size in sizes:
        masks.append((shift, (1 << size) - 1))
        shift += size
    return masks


class _UnionFind:
    def __init__(self, size: int):
        self.parent = list(range(size))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        root_i, root_j = self.find(i), self.find(j)
        if root_i != root_j:
            # The smaller index is the root, so the first document in input order is kept.
            self.parent[max(root_i, root_j)] = min(root_i, root_j)


def _clusters_to_duplicates(union_find: _UnionFind, size: int) -> dict[int, int]:
    duplicates = {}
    for i in range(size):
        root = union_find.find(i)
        if root != i:
            duplicates[i] = root
    return duplicates


def find_simhash_duplicates(fingerprints: Sequence[int], num_blocks: int = 6, hamming_distance: int = 4) -> dict[int, int]:
    """Map each near-duplicate's index to the first document of its cluster.

    Two fingerprints within `hamming_distance` bits agree on at least `num_blocks - hamming_distance`
    of the `num_blocks` bit blocks (pigeonhole), so only documents that share such a combination of
    blocks are compared. Clusters are transitive (union-find), as in Data-Juicer.
    """
    if hamming_distance >= num_blocks:
        raise ValueError(f"hamming_distance ({hamming_distance}) must be smaller than num_blocks ({num_blocks})")
    values = np.asarray(fingerprints, dtype=np.uint64)
    union_find = _UnionFind(len(values))

    # Identical fingerprints first; the block search then runs over distinct values only.
    unique, first_index, inverse = np.unique(values, return_index=True, return_inverse=True)
    for i, group in enumerate(inverse):
        if first_index[group] != i:
            union_find.union(int(first_index[group]), i)

    blocks = _block_masks(num_blocks)
    num_shared = num_blocks - hamming_distance
    from itertools import combinations

    for chosen in combinations(blocks, num_shared):
        key = np.zeros(len(unique), dtype=np.uint64)
        for shift, mask in chosen:
            key = (key << np.uint64(mask.bit_length())) | ((unique >> np.uint64(shift)) & np.uint64(mask))
        order = np.argsort(key, kind="stable")
        sorted_keys = key[order]
        boundaries = np.flatnonzero(np.diff(sorted_keys)) + 1
        for group in np.split(order, boundaries):
            if len(group) < 2:
                continue
            members = unique[group]
            for a in range(len(group) - 1):
                distances = np.bitwise_count(members[a] ^ members[a + 1 :])
                for b in np.flatnonzero(distances <= hamming_distance):
                    union_find.union(int(first_index[group[a]]), int(first_index[group[a + 1 + b]]))
    return _clusters_to_duplicates(union_find, len(values))


# ---------------------------------------------------------------------------------------------
# MinHash with LSH

_MERSENNE_PRIME = np.uint64((1 << 61) - 1)
_MAX_HASH = np.uint64((1 << 32) - 1)


@dataclass(frozen=True)
class MinHashConfig:
    tokenization: str = "character"
    window_size: int = 5
    lowercase: bool = True
    ignore_pattern: str | None = None
    num_permutations: int = 256
    jaccard_threshold: float = 0.7
    num_bands: int | None = None
    num_rows_per_band: int | None = None
    seed: int = 42

    def bands(self) -> tuple[int, int]:
        """(bands, rows per band), chosen so that the LSH threshold (1/b)^(1/r) sits just under the Jaccard one."""
        if self.num_bands and self.num_rows_per_band:
            return self.num_bands, self.num_rows_per_band
        best = None
        for rows in range(1, self.num_permutations + 1):
            bands = self.num_permutations // rows
            threshold = (1 / bands) ** (1 / rows)
            error = abs(threshold - (self.jaccard_threshold - 0.05))
            if best is None or error < best[0]:
                best = (error, bands, rows)
        return best[1], best[2]


@cache
def _permutations(num_permutations: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(seed)
    # a < 2**31 and b < 2**32 keep a * h + b below 2**64 for 32-bit shingle hashes h.
    a = rng.randint(1, 2**31, size=num_permutations, dtype=np.uint64)
    b = rng.randint(0, 2**32, size=num_permutations, dtype=np.uint64)
    return a, b


def shingle_set(text: str, config: MinHashConfig) -> set[str]:
    tokens = tokens_for_shingles(text, config.tokenization, config.lowercase, config.ignore_pattern)
    grams = shingles(tokens, config.window_size, _separator(config.tokenization))
    if not grams and tokens:
        grams = [_separator(config.tokenization).join(tokens)]  # a short text is one shingle
    return set(grams)


def minhash_signature(text: str, config: MinHashConfig) -> np.ndarray:
    """`num_permutations` minimum hashes (uint64) of the document's shingle set."""
    grams = shingle_set(text, config)
    a, b = _permutations(config.num_permutations, config.seed)
    if not grams:
        return np.full(config.num_permutations, _MAX_HASH, dtype=np.uint64)
    hashes = np.fromiter(map(xxhash.xxh32_intdigest, map(str.encode, sorted(grams))), dtype=np.uint64, count=len(grams))
    permuted = (hashes[:, None] * a + b) % _MERSENNE_PRIME & _MAX_HASH
    return permuted.min(axis=0)


def jaccard(a: set, b: set) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def find_minhash_duplicates(
    signatures: np.ndarray, config: MinHashConfig, load_shingles: Callable[[int], set[str]]
) -> tuple[dict[int, int], dict[str, int]]:
    """Map each near-duplicate's index to the first document of its cluster, and count the pairs.

    LSH bands propose candidate pairs; each candidate is confirmed by the exact Jaccard similarity
    of the two shingle sets (`load_shingles(index)`), so short texts that happen to share a band
    are not merged.
    """
    num_bands, rows = config.bands()
    union_find = _UnionFind(len(signatures))
    confirmed: set[tuple[int, int]] = set()
    rejected: set[tuple[int, int]] = set()
    cache_: dict[int, set[str]] = {}

    def shingles_of(i: int) -> set[str]:
        if i not in cache_:
            cache_[i] = load_shingles(i)
        return cache_[i]

    for band in range(num_bands):
        chunk = np.ascontiguousarray(signatures[:, band * rows : (band + 1) * rows])
        buckets: dict[bytes, list[int]] = {}
        for i, row in enumerate(chunk):
            buckets.setdefault(row.tobytes(), []).append(i)
        for members in buckets.values():
            for position, j in enumerate(members[1:], start=1):
                # Compare with earlier members of the bucket until one confirms the match.
                for i in members[:position]:
                    pair = (i, j)
                    if union_find.find(i) == union_find.find(j):
                        break
                    if pair in rejected:
                        continue
                    if jaccard(shingles_of(i), shingles_of(j)) >= config.jaccard_threshold:
                        confirmed.add(pair)
                        union_find.union(i, j)
                        break
                    rejected.add(pair)
    counts = {"candidate_pairs_confirmed": len(confirmed), "candidate_pairs_rejected": len(rejected)}
    return _clusters_to_duplicates(union_find, len(signatures)), counts
