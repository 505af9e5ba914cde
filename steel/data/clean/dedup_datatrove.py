"""MinHash dedup on datatrove's multi-stage pipeline, with Chinese-aware shingles and Jaccard checks.

`document_minhash_deduplicator` with `backend: datatrove` runs datatrove's stages instead of Steel's
one-node LSH, so signatures and buckets spread over many tasks (and Slurm or Ray nodes):

    signatures (one task per shard) -> buckets (one task per band) -> confirm (1) -> cluster (1)

datatrove splits words with its language tokenizers, and its "zh" setting does no Chinese word
segmentation, so `ChineseMinhashSignature` builds shingles with Steel's units (characters or
jieba words). `ConfirmPairs` keeps only the candidate pairs whose shingle sets really reach the
Jaccard threshold, so short texts that share a band by chance are not merged. The clusters are
then resolved by `steel.data.clean.pipeline.find_duplicates`, which keeps the first surviving
document of each cluster in input order, as the other deduplicators do.
"""

import json
import logging
import struct
from pathlib import Path

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.io import get_datafolder
from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupSignature
from datatrove.utils.hashing import create_hash_func

from steel.data import io
from steel.data.clean import dedup

logger = logging.getLogger(__name__)

PAIR_FORMAT = "<4I"  # (shard, document, shard, document), datatrove's .dups records


def minhash_config(params: dict) -> MinhashConfig:
    num_bands, rows = dedup.MinHashConfig(**_steel_params(params)).bands()
    return MinhashConfig(n_grams=params["window_size"], num_buckets=num_bands, hashes_per_bucket=rows, seed=params["seed"])


def _steel_params(params: dict) -> dict:
    return {k: v for k, v in params.items() if k != "backend"}


class ReadCleanedShard(PipelineStep):
    """Yield the documents of the cleaned intermediate shard `rank`, in order."""

    name = "read cleaned shard"
    type = "steel"

    def __init__(self, directory: str):
        super().__init__()
        self.directory = directory

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        path = Path(self.directory) / f"{rank:05d}.jsonl"
        for index, (_, record) in enumerate(io.iter_jsonl(path)):
            yield Document(text=record["__text__"], id=f"{rank:05d}:{index}")


class ChineseMinhashSignature(MinhashDedupSignature):
    """datatrove's signature stage over Steel's shingles (characters or jieba words)."""

    def __init__(self, output_folder: str, params: dict):
        # The parent's __init__ would load a datatrove word tokenizer (spaCy for most languages),
        # which the shingles here do not use; the attributes its methods read are set directly.
        PipelineStep.__init__(self)
        self.output_folder = get_datafolder(output_folder)
        self.config = minhash_config(params)
        self.num_hashes = self.config.num_buckets * self.config.hashes_per_bucket
        self._parameters = None
        self._hash_func = create_hash_func(self.config.hash_config)
        self.language = None
        self.word_tokenizer = None
        self.skip_existing_sigs = False
        self.shingle_config = dedup.MinHashConfig(**_steel_params(params))

    def get_shingles(self, text: str) -> np.ndarray:
        grams = dedup.shingle_set(text, self.shingle_config)
        return np.fromiter((self._hash_func(g.encode()) for g in sorted(grams)), dtype=np.uint64, count=len(grams)).reshape((-1, 1))


class ConfirmPairs(PipelineStep):
    """Keep the candidate pairs of the bucket stage whose exact Jaccard similarity reaches the threshold."""

    name = "confirm minhash pairs"
    type = "steel"

    def __init__(self, buckets_folder: str, output_folder: str, cleaned_dir: str, params: dict):
        super().__init__()
        self.buckets_folder, self.output_folder, self.cleaned_dir = buckets_folder, output_folder, cleaned_dir
        self.params = params

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> None:
        config = dedup.MinHashConfig(**_steel_params(self.params))
        shingles: dict[tuple[int, int], set[str]] = {}
        texts: dict[int, list[str]] = {}

        def shingles_of(key: tuple[int, int]) -> set[str]:
            if key not in shingles:
                shard, index = key
                if shard not in texts:
                    path = Path(self.cleaned_dir) / f"{shard:05d}.jsonl"
                    texts[shard] = [record["__text__"] for _, record in io.iter_jsonl(path)]
                shingles[key] = dedup.shingle_set(texts[shard][index], config)
            return shingles[key]

        output = Path(self.output_folder)
        output.mkdir(parents=True, exist_ok=True)
        num_confirmed = num_rejected = 0
        for path in sorted(Path(self.buckets_folder).glob("*.dups")):
            kept = bytearray()
            raw = path.read_bytes()
            for f1, d1, f2, d2 in struct.iter_unpack(PAIR_FORMAT, raw):
                if dedup.jaccard(shingles_of((f1, d1)), shingles_of((f2, d2))) >= config.jaccard_threshold:
                    kept += struct.pack(PAIR_FORMAT, f1, d1, f2, d2)
                    num_confirmed += 1
                else:
                    num_rejected += 1
            with io.atomic_path(output / path.name) as temp:
                temp.write_bytes(bytes(kept))
        counts = {"candidate_pairs_confirmed": num_confirmed, "candidate_pairs_rejected": num_rejected}
        io.write_json(output / "pairs.json", counts)
        logger.info("minhash candidate pairs: %d confirmed, %d rejected by Jaccard", num_confirmed, num_rejected)


def build_minhash_stages(op, work: Path, num_shards: int) -> list[tuple[str, list, int]]:
    """Build the datatrove stages of one `backend: datatrove` MinHash deduplicator, to run after cleaning."""
    base = work / "minhash" / op.label
    config = minhash_config(op.params)
    cleaned = str(work / "cleaned")
    return [
        (f"{op.label}-signatures", [ReadCleanedShard(cleaned), ChineseMinhashSignature(str(base / "signatures"), op.params)], num_shards),
        (f"{op.label}-buckets", [MinhashDedupBuckets(str(base / "signatures"), str(base / "buckets"), config=config)], config.num_buckets),
        (f"{op.label}-confirm", [ConfirmPairs(str(base / "buckets"), str(base / "confirmed"), cleaned, op.params)], 1),
        (f"{op.label}-cluster", [MinhashDedupCluster(str(base / "confirmed"), str(base / "clusters"), config=config, save_cluster_id=True)], 1),
    ]


def read_clusters(op, work: Path, num_shards: int) -> tuple[list[list[tuple[int, int]]], dict]:
    """Return the clusters as lists of (shard, document), and the pair counts of the confirm stage.

    The counts are per LSH band: a pair that shares several bands is counted once for each.
    """
    base = work / "minhash" / op.label
    clusters: dict[int, list[tuple[int, int]]] = {}
    for shard in range(num_shards):
        path = base / "clusters" / f"{shard:06d}.clusters"
        if not path.is_file():
            continue
        for document, cluster in struct.iter_unpack("<2I", path.read_bytes()):
            clusters.setdefault(cluster, []).append((shard, document))
    counts = json.loads((base / "confirmed" / "pairs.json").read_text(encoding="utf-8"))
    return [sorted(members) for _, members in sorted(clusters.items())], counts
