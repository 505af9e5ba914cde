import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from steel.cli import main
from steel.data.manifest import RUN_MANIFEST_FILE, ShardError, init_run_manifest
from steel.data.stream import PretrainStream, permute, unigram_baseline, validation_batches
from steel.data.tokenize import ShardWriter

BLOCK_SIZE = 4
QWEN_IDENTITY = {"name": "qwen", "sha256": "0" * 64, "vocab_size": 151936}


def make_shard_dir(directory: Path, train: list[int], validation: int = 0, start: int = 100_000, name: str | None = None):
    """Shards whose tokens count up from `start`, so a sample is identified by its first token.

    `train` lists the number of samples per train shard (block_size * n + 1 tokens each).
    """
    directory.mkdir(parents=True)
    writers = {split: ShardWriter(directory, split, 10**9, "uint32") for split in ("train", "validation")}
    next_token = start
    for num_samples in train:
        size = num_samples * BLOCK_SIZE + 1
        writers["train"].add(np.arange(next_token, next_token + size, dtype=np.uint32))
        writers["train"].close()
        next_token += size
    if validation:
        writers["validation"].add(np.arange(next_token, next_token + validation, dtype=np.uint32) % 7)
        writers["validation"].close()
    manifest = {
        "format": "steel-token-shards",
        "version": 1,
        "name": name or directory.name,
        "tokenizer": QWEN_IDENTITY,
        "vocab_size": 151936,
        "dtype": "uint32",
        "separator": {"token": "<|endoftext|>", "id": 151643},
        "shards": writers["train"].shards + writers["validation"].shards,
        "sources": [{"file": f"{directory.name}.jsonl", "sha256": f"{start:064x}", "documents": 1, "tokens": 1}],
        "tokens_by_source": {directory.name: next_token - start},
        "tokens_by_language": {"zh": next_token - start},
    }
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


def sample_ids(batch: torch.Tensor) -> list[int]:
    return batch[:, 0].tolist()


def take(stream, num_steps):
    batches, states = [], []
    for batch, state in stream:
        batches.append(batch)
        states.append(state)
        if len(batches) == num_steps:
            break
    return batches, states


@pytest.fixture
def shards(tmp_path):
    # 3 shards with 7 + 5 + 8 = 20 samples.
    return make_shard_dir(tmp_path / "data", [7, 5, 8], validation=30)


def all_first_tokens(directory: Path) -> set[int]:
    manifest = json.loads((directory / "manifest.json").read_text())
    firsts = set()
    for shard in manifest["shards"]:
        if shard["split"] == "train":
            tokens = np.fromfile(directory / shard["file"], dtype=np.uint32)
            firsts.update(tokens[: len(tokens) - 1 : BLOCK_SIZE].tolist())
    return firsts


def test_permute_is_bijection():
    for n in (1, 2, 3, 10, 17, 1000, 4097):
        values = permute(np.arange(n), n, [1, 2, 3, 4])
        assert sorted(values.tolist()) == list(range(n))
    assert permute(np.arange(100), 100, [1, 2, 3, 4]).tolist() != list(range(100))
    assert permute(np.arange(100), 100, [1, 2, 3, 4]).tolist() != permute(np.arange(100), 100, [5, 6, 7, 8]).tolist()


def test_batches_have_shape_and_contiguous_tokens(shards):
    stream = PretrainStream(shards, block_size=BLOCK_SIZE, global_batch_size=4, seed=0)
    batches, states = take(stream, 3)
    for batch in batches:
        assert batch.dtype == torch.long
        assert batch.shape == (4, BLOCK_SIZE + 1)
        assert torch.equal(batch[:, 1:] - batch[:, :-1], torch.ones(4, BLOCK_SIZE, dtype=torch.long))
    assert states[-1]["step"] == 3
    assert states[-1]["samples"] == 12
    json.dumps(states[-1])  # plain JSON, no pickle


def test_each_epoch_covers_all_samples(shards):
    stream = PretrainStream(shards, block_size=BLOCK_SIZE, global_batch_size=4, seed=3)
    batches, states = take(stream, 10)  # 40 samples = two epochs of 20
    first_epoch = [i for b in batches[:5] for i in sample_ids(b)]
    second_epoch = [i for b in batches[5:] for i in sample_ids(b)]
    assert sorted(first_epoch) == sorted(all_first_tokens(shards))
    assert sorted(second_epoch) == sorted(all_first_tokens(shards))
    assert first_epoch != second_epoch
    assert states[4]["epoch"] == 1
    assert states[4]["phases"][0]["consumed"] == 0


def test_seed_changes_order(shards):
    a, _ = take(PretrainStream(shards, block_size=BLOCK_SIZE, global_batch_size=4, seed=1), 5)
    b, _ = take(PretrainStream(shards, block_size=BLOCK_SIZE, global_batch_size=4, seed=2), 5)
    assert [sample_ids(x) for x in a] != [sample_ids(x) for x in b]


@pytest.mark.parametrize("resume_after", [1, 4, 6, 9])
def test_resume_continues_exactly(shards, resume_after):
    # Global batch 3 does not divide the 20-sample epoch, so steps straddle epoch boundaries.
    reference, _ = take(PretrainStream(shards, block_size=BLOCK_SIZE, global_batch_size=3, seed=5), 20)
    _, states = take(PretrainStream(shards, block_size=BLOCK_SIZE, global_batch_size=3, seed=5), resume_after)
    saved = json.loads(json.dumps(states[-1]))

    resumed = PretrainStream(shards, block_size=BLOCK_SIZE, global_batch_size=3, seed=5)
    resumed.load_state_dict(saved)
    continued, _ = take(resumed, 20 - resume_after)
    for expected, actual in zip(reference[resume_after:], continued):
        assert torch.equal(expected, actual)


def test_world_size_split_and_change(shards):
    reference, _ = take(PretrainStream(shards, block_size=BLOCK_SIZE, global_batch_size=4, seed=7), 12)

    ranks = [PretrainStream(shards, block_size=BLOCK_SIZE, global_batch_size=4, seed=7, rank=r, world_size=2) for r in range(2)]
    per_rank = [take(stream, 3) for stream in ranks]
    for step in range(3):
        assert torch.equal(torch.cat([per_rank[r][0][step] for r in range(2)]), reference[step])
    assert per_rank[0][1][-1] == per_rank[1][1][-1]  # the state is global

    state = per_rank[0][1][-1]
    four = [PretrainStream(shards, block_size=BLOCK_SIZE, global_batch_size=4, seed=7, rank=r, world_size=4) for r in range(4)]
    for stream in four:
        stream.load_state_dict(state)
    continued = [take(stream, 9)[0] for stream in four]
    for step in range(9):
        assert torch.equal(torch.cat([continued[r][step] for r in range(4)]), reference[3 + step])


def test_dataloader_workers_keep_order(shards):
    reference, reference_states = take(PretrainStream(shards, block_size=BLOCK_SIZE, global_batch_size=2, seed=9), 8)
    stream = PretrainStream(shards, block_size=BLOCK_SIZE, global_batch_size=2, seed=9)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2)
    batches, states = take(loader, 8)
    for expected, actual in zip(reference, batches):
        assert torch.equal(expected, actual)
    assert states == reference_states


def test_append_reshuffles_untrained_remainder(tmp_path):
    first = make_shard_dir(tmp_path / "first", [6, 6], start=100_000)
    second = make_shard_dir(tmp_path / "second", [5, 3], start=500_000)
    run_dir = tmp_path / "run"
    manifest_path = init_run_manifest(run_dir, [first])
    assert manifest_path == run_dir / RUN_MANIFEST_FILE

    stream = PretrainStream(run_dir, block_size=BLOCK_SIZE, global_batch_size=4, seed=11)
    batches, states = take(stream, 2)
    trained = [i for b in batches for i in sample_ids(b)]

    shard_dir_files = {p: p.read_bytes() for d in (first, second) for p in sorted(d.iterdir())}
    assert main(["data", "append", str(run_dir), str(second)]) == 0
    assert {p: p.read_bytes() for d in (first, second) for p in sorted(d.iterdir())} == shard_dir_files

    resumed = PretrainStream(run_dir, block_size=BLOCK_SIZE, global_batch_size=4, seed=11)
    resumed.load_state_dict(states[-1])
    remaining_in_epoch = 12 - 8 + 8  # untrained old samples + all new ones
    after, after_states = take(resumed, 8)  # 32 samples: the rest of epoch 0 and all of epoch 1
    flat = [i for b in after for i in sample_ids(b)]
    rest_of_epoch = flat[:remaining_in_epoch]
    assert not set(rest_of_epoch) & set(trained)
    assert len(set(rest_of_epoch)) == remaining_in_epoch
    assert set(trained) | set(rest_of_epoch) == all_first_tokens(first) | all_first_tokens(second)
    # The new data is shuffled in, not appended at the end.
    new_ids = all_first_tokens(second)
    positions = [k for k, i in enumerate(rest_of_epoch) if i in new_ids]
    assert positions != list(range(remaining_in_epoch - len(new_ids), remaining_in_epoch))
    # The next epoch covers everything once.
    assert sorted(flat[remaining_in_epoch:]) == sorted(all_first_tokens(first) | all_first_tokens(second))
    assert after_states[-1]["epoch"] == 2

    # Resuming again from a state saved after the append continues exactly.
    again = PretrainStream(run_dir, block_size=BLOCK_SIZE, global_batch_size=4, seed=11)
    again.load_state_dict(after_states[1])
    continued, _ = take(again, 3)
    for expected, actual in zip(after[2:5], continued):
        assert torch.equal(expected, actual)


def test_append_rejects_duplicate_content(tmp_path, capsys):
    first = make_shard_dir(tmp_path / "first", [4])
    run_dir = tmp_path / "run"
    init_run_manifest(run_dir, [first])
    copy = tmp_path / "copy"
    shutil.copytree(first, copy)
    with pytest.raises(SystemExit) as error:
        main(["data", "append", str(run_dir), str(copy)])
    message = str(error.value)
    assert str(copy / "train-00000.bin") in message
    assert str((first / "train-00000.bin").resolve()) in message
    run = json.loads((run_dir / RUN_MANIFEST_FILE).read_text())
    assert len(run["datasets"]) == 1


def test_append_rejects_duplicate_source_file(tmp_path):
    first = make_shard_dir(tmp_path / "first", [4], start=0)
    other = make_shard_dir(tmp_path / "other", [4], start=1000)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["sources"] = [{"file": "same-input.jsonl", "sha256": f"{0:064x}", "documents": 1, "tokens": 1}]
    (other / "manifest.json").write_text(json.dumps(manifest))
    run_dir = tmp_path / "run"
    init_run_manifest(run_dir, [first])
    with pytest.raises(SystemExit, match="same-input.jsonl.*first.jsonl"):
        main(["data", "append", str(run_dir), str(other)])


def test_run_manifest_is_kept_on_resume(tmp_path):
    first = make_shard_dir(tmp_path / "first", [4])
    second = make_shard_dir(tmp_path / "second", [4], start=900_000)
    run_dir = tmp_path / "run"
    path = init_run_manifest(run_dir, [first])
    before = path.read_text()
    assert init_run_manifest(run_dir, [second]) == path
    assert path.read_text() == before


@pytest.mark.parametrize("damage", ["truncate", "odd-size", "flip"])
def test_corrupted_shard_reported_by_name(shards, damage):
    shard = shards / "train-00001.bin"
    data = bytearray(shard.read_bytes())
    if damage == "truncate":
        shard.write_bytes(bytes(data[:-8]))
    elif damage == "odd-size":
        shard.write_bytes(bytes(data) + b"\x00")
    else:
        data[5] ^= 0xFF
        shard.write_bytes(bytes(data))
    with pytest.raises(ShardError, match="train-00001.bin"):
        PretrainStream(shards, block_size=BLOCK_SIZE, global_batch_size=2)


def test_missing_shard_reported(shards):
    (shards / "train-00002.bin").unlink()
    with pytest.raises(ShardError, match="train-00002.bin: shard file not found"):
        PretrainStream(shards, block_size=BLOCK_SIZE, global_batch_size=2)


def test_mixture_weights_scale_samples(tmp_path):
    heavy = make_shard_dir(tmp_path / "heavy", [6], start=0)
    light = make_shard_dir(tmp_path / "light", [8], start=10_000)
    run_dir = tmp_path / "run"
    init_run_manifest(run_dir, [heavy, light])
    stream = PretrainStream(run_dir, block_size=BLOCK_SIZE, global_batch_size=4, seed=1, weights={"heavy": 2.0, "light": 0.5})
    batches, _ = take(stream, 8)  # 12 + 4 = 16 samples per epoch, two epochs
    flat = [i for b in batches for i in sample_ids(b)]
    first_epoch = Counter(flat[:16])
    assert all(first_epoch[i] == 2 for i in all_first_tokens(heavy))
    light_ids = all_first_tokens(light)
    assert sum(first_epoch[i] for i in light_ids) == 4
    # Over two epochs the light dataset is covered once.
    assert {i for i in flat if i in light_ids} == light_ids

    with pytest.raises(ValueError, match="unknown datasets"):
        PretrainStream(run_dir, block_size=BLOCK_SIZE, global_batch_size=4, weights={"nope": 1.0})


def test_state_mismatch_rejected(shards):
    _, states = take(PretrainStream(shards, block_size=BLOCK_SIZE, global_batch_size=2), 1)
    with pytest.raises(ValueError, match="block_size"):
        PretrainStream(shards, block_size=2, global_batch_size=2).load_state_dict(states[-1])
    with pytest.raises(ValueError, match="seed"):
        PretrainStream(shards, block_size=BLOCK_SIZE, global_batch_size=2, seed=99).load_state_dict(states[-1])


def test_validation_batches_fixed_order(shards):
    batches = list(validation_batches(shards, block_size=BLOCK_SIZE, batch_size=3))
    assert [b.shape[0] for b in batches] == [3, 3, 1]  # (30 - 1) // 4 = 7 samples
    assert all(b.shape[1] == BLOCK_SIZE + 1 for b in batches)
    again = list(validation_batches(shards, block_size=BLOCK_SIZE, batch_size=3))
    assert all(torch.equal(a, b) for a, b in zip(batches, again))
    assert len(list(validation_batches(shards, block_size=BLOCK_SIZE, batch_size=3, max_batches=2))) == 2


def test_unigram_baseline_add_one(shards):
    manifest = json.loads((shards / "manifest.json").read_text())
    train = np.concatenate([np.fromfile(shards / s["file"], dtype=np.uint32) for s in manifest["shards"] if s["split"] == "train"])
    validation = np.fromfile(shards / "validation-00000.bin", dtype=np.uint32)
    vocab_size = 151936
    counts = np.bincount(train, minlength=vocab_size)
    expected = -np.mean(np.log((counts[validation] + 1) / (len(train) + vocab_size)))
    assert unigram_baseline(shards) == pytest.approx(expected, rel=1e-9)
    assert unigram_baseline(shards) > 0
