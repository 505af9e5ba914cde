"""Pretraining: the token-shard stream, the model and the next-token loss handed to the trainer core."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

from steel.train.config import TrainConfig
from steel.train.distributed import DistributedEnv, barrier, destroy_distributed, init_distributed
from steel.train.load import build_model, build_model_config
from steel.train.loss import CausalLMLoss
from steel.train.trainer import Trainer, TrainState, configure_determinism, select_resume_checkpoint

log = logging.getLogger(__name__)


def prepare_run_manifest(config: TrainConfig, env: DistributedEnv) -> Path:
    """Return `RUN_DIR/data_manifest.json`, creating it from `data.shards` at the first start.

    Until the run has saved a checkpoint it has trained on nothing, so a manifest left by a start
    that failed is replaced when `data.shards` names other directories.
    """
    from steel.data.manifest import RUN_MANIFEST_FILE, init_run_manifest
    from steel.train.checkpoint import list_checkpoints

    run_manifest = Path(config.run_dir) / RUN_MANIFEST_FILE
    if not run_manifest.is_file() and not config.data.shards:
        raise ValueError("data.shards is empty: give the token shard directories of `steel data tokenize`")
    replace_manifest = False
    if run_manifest.is_file():
        if list_checkpoints(config.run_dir):
            check_shards_recorded(run_manifest, config.data.shards)
        elif config.data.shards and unrecorded_shards(run_manifest, config.data.shards):
            replace_manifest = True
    if env.is_main:
        if replace_manifest:
            log.warning("%s is from a start that saved no checkpoint and lists other shards than data.shards; "
                        "creating it again from data.shards", run_manifest)
            run_manifest.unlink()
        init_run_manifest(config.run_dir, config.data.shards)
    barrier()
    return run_manifest


def check_shards_recorded(run_manifest: Path, shard_dirs: list[str]) -> None:
    """Raise ValueError when `data.shards` names a directory the run's own manifest does not contain.

    A run trains on its copy of the manifest; new data joins it only through `steel data append`, so a
    changed `data.shards` would otherwise be ignored without a word.
    """
    recorded = recorded_shards(run_manifest)
    missing = unrecorded_shards(run_manifest, shard_dirs)
    if missing:
        raise ValueError(
            f"data.shards names {', '.join(map(str, missing))}, which {run_manifest} does not contain; "
            f"this run trains on {', '.join(sorted(recorded))}. Add data with `steel data append "
            f"{run_manifest.parent} SHARDS`, or choose a new run_dir"
        )


def recorded_shards(run_manifest: Path) -> set[str]:
    return {entry["directory"] for entry in json.loads(run_manifest.read_text(encoding="utf-8"))["datasets"]}


def unrecorded_shards(run_manifest: Path, shard_dirs: list[str]) -> list[str]:
    """Return the directories of `shard_dirs` that the run's data manifest does not contain."""
    recorded = recorded_shards(run_manifest)
    return [d for d in shard_dirs if str(Path(d).resolve()) not in recorded]


def load_run_tokenizer(config: TrainConfig, manifest):
    """Load the tokenizer of the shards and check that its identity matches the manifest's."""
    from steel.tokenizer import load_tokenizer

    spec = config.data.tokenizer or manifest.tokenizer_spec()
    tokenizer = load_tokenizer(spec)
    expected = manifest.tokenizer.get("sha256")
    actual = tokenizer.identity().get("sha256")
    if expected and actual != expected:
        raise ValueError(
            f"tokenizer {spec!r} (sha256 {actual}) is not the one the shards in {manifest.path} were made "
            f"with (sha256 {expected}); set data.tokenizer to that tokenizer"
        )
    return tokenizer


def run_pretraining(config: TrainConfig) -> TrainState:
    """Pretrain with `config` as this process's rank of the world that torchrun set up (or alone)."""
    from steel.data.manifest import load_data_manifest
    from steel.data.stream import PretrainStream, validation_batches

    config.validate()
    resume_from = select_resume_checkpoint(config)  # fails early, before any data or model work
    # The model config (and its overrides) is checked before anything is written into run_dir.
    build_model_config(config.model)
    env = init_distributed(config.system.device)
    try:
        configure_determinism(config)
        manifest_path = prepare_run_manifest(config, env)
        manifest = load_data_manifest(manifest_path, verify="size")
        tokenizer = load_run_tokenizer(config, manifest)
        stream = PretrainStream(
            manifest_path,
            block_size=config.data.block_size,
            global_batch_size=config.batch.global_batch_size,
            seed=config.data.seed,
            rank=env.rank,
            world_size=env.world_size,
            weights=config.data.weights,
        )

        model_config = config.model
        if resume_from is not None and model_config.init_from is not None:
            # The checkpoint replaces every weight, so only its architecture is needed from here.
            only_init = model_config.preset is None and model_config.config is None
            model_config = replace(model_config, init_from=str(resume_from) if only_init else None)
        model = build_model(model_config, vocab_size=tokenizer.vocab_size, seed=config.seed)

        def held_out_batches():
            if not manifest.validation_shards:
                return iter(())
            return validation_batches(manifest, config.data.block_size, config.batch.micro_batch_size,
                                      max_batches=config.logging.eval_batches)

        trainer = Trainer(
            config, model, CausalLMLoss(chunk_size=config.system.loss_chunk_size), stream, env,
            tokenizer=tokenizer,
            validation_batches=held_out_batches,
            stage="pretrain",
            block_size=config.data.block_size,
            extra_meta={"data_manifest": str(manifest_path.resolve())},
        )
        return trainer.fit()
    finally:
        destroy_distributed()
