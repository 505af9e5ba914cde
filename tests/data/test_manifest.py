import json
from pathlib import Path

import pytest

from steel.cli import main
from steel.data.manifest import (
    RUN_MANIFEST_FILE,
    append_to_run_manifest,
    init_run_manifest,
    load_data_manifest,
    shard_dtype,
)
from steel.data.stream import PretrainStream
from steel.data.tokenize import TokenizeConfig, run_tokenize
from steel.tokenizer import load_tokenizer

DOCS = [f"这是第{i}个测试文档，内容关于中文语言模型的预训练数据。Sample {i}." for i in range(60)]


def _tokenize(tmp_path: Path, name: str, docs: list[str], **overrides) -> Path:
    source = tmp_path / f"{name}.jsonl"
    source.write_text("".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    output = tmp_path / name
    run_tokenize(TokenizeConfig(inputs=[source], output=output, shard_tokens=400, val_fraction=0.1, **overrides))
    return output


@pytest.fixture(scope="module")
def qwen_shards(tmp_path_factory):
    return _tokenize(tmp_path_factory.mktemp("m"), "zh", DOCS)


def test_shard_dtype_thresholds():
    assert shard_dtype(65536) == "uint16"
    assert shard_dtype(65537) == "uint32"
    assert shard_dtype(151936) == "uint32"


def test_load_accepts_directory_file_and_run(qwen_shards, tmp_path):
    by_dir = load_data_manifest(qwen_shards)
    by_file = load_data_manifest(qwen_shards / "manifest.json")
    assert [s.path for s in by_dir.shards] == [s.path for s in by_file.shards]
    assert by_dir.separator_id == 151643
    assert by_dir.tokenizer_spec() == "qwen"

    run_dir = tmp_path / "run"
    init_run_manifest(run_dir, [qwen_shards])
    run = load_data_manifest(run_dir)
    assert run.path.name == RUN_MANIFEST_FILE
    assert [s.path for s in run.shards] == [s.path.resolve() for s in by_dir.shards]
    assert run.vocab_size == 151936
    assert "tokens by language" in run.summary()

    with pytest.raises(FileNotFoundError, match="neither"):
        load_data_manifest(tmp_path)


def test_stream_reads_real_tokens(qwen_shards):
    tokenizer = load_tokenizer("qwen")
    stream = PretrainStream(qwen_shards, block_size=16, global_batch_size=2, seed=0)
    batch, state = next(iter(stream))
    text = tokenizer.decode(batch[0].tolist())
    assert "测试文档" in text or "预训练" in text or "Sample" in text
    assert state["step"] == 1


def test_append_rejects_other_tokenizer(qwen_shards, tmp_path):
    from steel.tokenizer.train import TrainConfig, train_tokenizer

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in DOCS), encoding="utf-8")
    tokenizer_dir = train_tokenizer(TrainConfig([corpus], tmp_path / "tok", vocab_size=300))
    other = _tokenize(tmp_path, "other", DOCS[:30] + ["另一批数据"], tokenizer=str(tokenizer_dir))

    run_dir = tmp_path / "run"
    init_run_manifest(run_dir, [qwen_shards])
    with pytest.raises(ValueError, match="tokenizer"):
        append_to_run_manifest(run_dir, [other])


def test_append_rejects_other_separator(qwen_shards, tmp_path):
    other = _tokenize(tmp_path, "sep", ["完全不同的文档内容" + str(i) for i in range(20)], separator="<|im_end|>")
    run_dir = tmp_path / "run"
    init_run_manifest(run_dir, [qwen_shards])
    with pytest.raises(ValueError, match="separator"):
        append_to_run_manifest(run_dir, [other])


def test_append_needs_a_run_manifest(qwen_shards, tmp_path):
    (tmp_path / "empty-run").mkdir()
    with pytest.raises(SystemExit, match="manifest"):
        main(["data", "append", str(tmp_path / "empty-run"), str(qwen_shards)])


def test_append_adds_dataset_and_shards(qwen_shards, tmp_path):
    more = _tokenize(tmp_path, "more", [f"新增的数据{i}：关于训练中途追加语料。" for i in range(40)])
    run_dir = tmp_path / "run"
    init_run_manifest(run_dir, [qwen_shards])
    assert append_to_run_manifest(run_dir, [more]) == ["more"]
    run = json.loads((run_dir / RUN_MANIFEST_FILE).read_text())
    assert [d["name"] for d in run["datasets"]] == ["zh", "more"]
    assert {s["dataset"] for s in run["shards"]} == {"zh", "more"}
    assert len(load_data_manifest(run_dir).train_shards) == len(load_data_manifest(qwen_shards).train_shards) + len(
        load_data_manifest(more).train_shards
    )


def test_untokenized_directories_point_to_tokenize(tmp_path):
    converted = tmp_path / "converted"
    converted.mkdir()
    (converted / "summary.json").write_text("{}", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="steel data tokenize"):
        load_data_manifest(converted)

    cleaned = tmp_path / "cleaned"
    cleaned.mkdir()
    (cleaned / "manifest.json").write_text('{"format": "steel-clean/1"}', encoding="utf-8")
    with pytest.raises(ValueError, match="tokenized first with `steel data tokenize`"):
        load_data_manifest(cleaned)
