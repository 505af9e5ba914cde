import gzip
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zstandard

from steel.cli import main
from steel.data.manifest import load_data_manifest
from steel.data.tokenize import TokenizeConfig, classify_language, run_tokenize
from steel.tokenizer import load_tokenizer

ZH_DOCS = [f"第{i}篇文章：北京今天天气晴朗，气温二十度。人工智能和大语言模型正在快速发展。" for i in range(40)]
EN_DOCS = [f"Document {i}: the quick brown fox jumps over the lazy dog, and then it rests in the shade." for i in range(30)]
CODE_DOCS = [f"def function_{i}(x):\n    if x > {i}:\n        return x * {i}\n    return [x, {{'k': x}}]\n" for i in range(20)]


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    elif path.suffix == ".zst":
        path.write_bytes(zstandard.ZstdCompressor().compress(data))
    else:
        path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def qwen():
    return load_tokenizer("qwen")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("corpus")
    zh = _write_jsonl(root / "zh.jsonl", [{"text": t, "source": "news"} for t in ZH_DOCS])
    en = _write_jsonl(root / "en.jsonl.gz", [{"text": t, "source": "web"} for t in EN_DOCS])
    code = _write_jsonl(root / "code.jsonl.zst", [{"text": t} for t in CODE_DOCS])
    parquet = root / "mixed.parquet"
    pq.write_table(pa.table({"text": ZH_DOCS[:5] + EN_DOCS[:5]}), parquet)
    return [zh, en, code, parquet]


def _tokenize(inputs, output, **overrides) -> dict:
    config = TokenizeConfig(inputs=list(inputs), output=output, shard_tokens=overrides.pop("shard_tokens", 500), **overrides)
    run_tokenize(config)
    return json.loads((output / "manifest.json").read_text())


def _all_tokens(directory: Path, manifest: dict, split: str | None = None) -> np.ndarray:
    parts = [
        np.fromfile(directory / s["file"], dtype=s["dtype"])
        for s in manifest["shards"]
        if split is None or s["split"] == split
    ]
    return np.concatenate(parts)


@pytest.fixture(scope="module")
def tokenized(corpus, tmp_path_factory):
    output = tmp_path_factory.mktemp("shards")
    manifest = _tokenize(corpus, output, val_fraction=0.1)
    return output, manifest


def test_manifest_records_shards_and_run(tokenized, corpus):
    output, manifest = tokenized
    assert manifest["dtype"] == "uint32"
    assert manifest["vocab_size"] == 151936
    assert manifest["tokenizer"]["name"] == "qwen"
    assert manifest["separator"] == {"token": "<|endoftext|>", "id": 151643}
    assert [s["file"] for s in manifest["sources"]] == [str(p) for p in corpus]
    for source, path in zip(manifest["sources"], corpus):
        assert source["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [s["documents"] for s in manifest["sources"]] == [40, 30, 20, 10]
    for shard in manifest["shards"]:
        data = (output / shard["file"]).read_bytes()
        assert shard["sha256"] == hashlib.sha256(data).hexdigest()
        assert len(data) == 4 * shard["tokens"]
        assert shard["dtype"] == "uint32"
    train_sizes = [s["tokens"] for s in manifest["shards"] if s["split"] == "train"]
    assert all(size == 500 for size in train_sizes[:-1])
    assert 0 < train_sizes[-1] <= 500


def test_composition_by_source_and_language(tokenized):
    _, manifest = tokenized
    assert set(manifest["tokens_by_source"]) == {"news", "web", "code", "mixed"}
    assert manifest["documents_by_source"] == {"news": 40, "web": 30, "code": 20, "mixed": 10}
    languages = manifest["tokens_by_language"]
    assert languages["zh"] > 0
    assert languages["en"] > 0
    assert languages["code"] > 0
    assert sum(languages.values()) == manifest["totals"]["tokens"]
    assert sum(manifest["tokens_by_source"].values()) == manifest["totals"]["tokens"]


def test_every_document_ends_with_one_separator(tokenized, qwen):
    output, manifest = tokenized
    tokens = _all_tokens(output, manifest)
    assert tokens.max() > 65535  # ids above uint16 survive
    separator = 151643
    assert int((tokens == separator).sum()) == manifest["totals"]["documents"] == 100
    assert tokens[-1] == separator

    expected = {tuple(qwen.encode(t)) for t in ZH_DOCS + EN_DOCS + CODE_DOCS}
    documents = np.split(tokens, np.flatnonzero(tokens == separator) + 1)[:-1]
    assert all(len(d) > 1 and d[-1] == separator for d in documents)
    assert {tuple(d[:-1].tolist()) for d in documents} == expected


def test_validation_split_is_by_document(tokenized, qwen):
    output, manifest = tokenized
    totals = manifest["totals"]
    assert totals["validation_documents"] > 0
    assert totals["train_documents"] + totals["validation_documents"] == 100
    validation = _all_tokens(output, manifest, "validation")
    assert int((validation == 151643).sum()) == totals["validation_documents"]
    assert len(validation) == totals["validation_tokens"]


def test_val_docs_holds_out_exact_count(corpus, tmp_path):
    manifest = _tokenize(corpus[:1], tmp_path / "out", val_docs=7, val_fraction=0.0)
    assert manifest["totals"]["validation_documents"] == 7
    assert manifest["totals"]["train_documents"] == 33
    assert manifest["split"]["method"] == "documents"


def test_rerun_is_byte_identical(corpus, tmp_path):
    first = tmp_path / "first"
    _tokenize(corpus, first, val_fraction=0.1, name="corpus")
    files = {p.name: p.read_bytes() for p in sorted(first.iterdir())}
    _tokenize(corpus, first, val_fraction=0.1, name="corpus", overwrite=True)
    assert {p.name: p.read_bytes() for p in sorted(first.iterdir())} == files

    parallel = tmp_path / "parallel"
    _tokenize(corpus, parallel, val_fraction=0.1, name="corpus", num_workers=2)
    assert {p.name: p.read_bytes() for p in sorted(parallel.iterdir())} == files


def test_existing_output_needs_overwrite(tokenized, corpus):
    output, _ = tokenized
    with pytest.raises(SystemExit, match="--overwrite"):
        run_tokenize(TokenizeConfig(inputs=corpus, output=output))


def test_separator_option_and_special_text(tmp_path, qwen):
    doc = _write_jsonl(tmp_path / "d.jsonl", [{"text": "a <|endoftext|> b <|im_end|> c"}, {"text": "second"}])
    manifest = _tokenize([doc], tmp_path / "out", separator="<|im_end|>", val_fraction=0.0)
    assert manifest["separator"]["id"] == 151645
    tokens = _all_tokens(tmp_path / "out", manifest).tolist()
    assert tokens == qwen.encode("a <|endoftext|> b <|im_end|> c") + [151645] + qwen.encode("second") + [151645]
    assert 151643 not in tokens


def test_unknown_separator_rejected(tmp_path):
    doc = _write_jsonl(tmp_path / "d.jsonl", [{"text": "x"}])
    with pytest.raises(SystemExit, match="not a special token"):
        _tokenize([doc], tmp_path / "out", separator="</s>")


def test_small_vocab_uses_uint16(tmp_path):
    from steel.tokenizer.train import TrainConfig, train_tokenizer

    doc = _write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in ZH_DOCS + EN_DOCS])
    tokenizer_dir = train_tokenizer(TrainConfig([doc], tmp_path / "tok", vocab_size=400))
    manifest = _tokenize([doc], tmp_path / "out", tokenizer=str(tokenizer_dir), val_fraction=0.0)
    assert manifest["dtype"] == "uint16"
    tokens = _all_tokens(tmp_path / "out", manifest)
    assert tokens.dtype == np.uint16
    tokenizer = load_tokenizer(tokenizer_dir)
    assert tokens[: len(tokenizer.encode(ZH_DOCS[0])) + 1].tolist() == tokenizer.encode(ZH_DOCS[0]) + [0]


def test_bad_input_is_reported_and_counted(tmp_path, caplog):
    good = _write_jsonl(tmp_path / "good.jsonl", [{"text": "好的文档"}])
    messy = tmp_path / "messy.jsonl"
    messy.write_bytes(
        b'{"text": "first good"}\n'
        b'{"content": "no text field"}\n'
        b'{"text": "   "}\n'
        b'{"text": "' + b"x" * 5000 + b'"}\n'
        b'{"text": "bad \xff\xfe bytes"}\n'
        b"not json at all\n"
        b'{"text": 42}\n'
        b'{"text": "last good"}\n'
    )
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(bytes(range(128, 256)) * 300)

    manifest = _tokenize([good, messy, empty, binary], tmp_path / "out", val_fraction=0.0, max_doc_chars=1000)
    assert manifest["totals"]["documents"] == 3
    skipped = manifest["skipped"]
    assert skipped["missing field 'text'"] == 1
    assert skipped["empty document"] == 1
    assert skipped["document too long"] == 1
    assert skipped["malformed JSON"] == 1
    assert skipped["field 'text' is not a string"] == 1
    assert skipped["empty file"] == 1
    assert sum(skipped.values()) >= 7  # plus the invalid bytes line and the binary file
    examples = json.dumps(manifest["skipped_examples"])
    assert f"{messy}:2" in examples
    assert f"{messy}:4" in examples
    assert str(empty) in examples
    assert str(binary) in examples
    unreadable = manifest["skipped_examples"]["unreadable file"][0]
    assert unreadable.startswith(f"{binary}: unreadable file")
    assert unreadable.endswith("pass --encoding NAME.)")
    assert any(f"{messy}:5" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    "output_name, message",
    [("existing", "is a file, not a directory"), ("existing/sub", "cannot create the output directory")],
)
def test_file_as_output_is_rejected(tmp_path, output_name, message):
    good = _write_jsonl(tmp_path / "good.jsonl", [{"text": "好的文档"}])
    (tmp_path / "existing").write_text("not a directory\n", encoding="utf-8")
    output = tmp_path / output_name
    with pytest.raises(SystemExit, match=message) as caught:
        main(["data", "tokenize", str(good), "--output", str(output)])
    assert str(output) in str(caught.value)
    assert (tmp_path / "existing").read_text(encoding="utf-8") == "not a directory\n"


def test_no_documents_is_an_error(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(SystemExit, match="no documents to tokenize"):
        _tokenize([empty], tmp_path / "out")
    with pytest.raises(SystemExit, match="not found"):
        _tokenize([tmp_path / "missing.jsonl"], tmp_path / "out2")


def test_one_huge_line_document(tmp_path, qwen):
    huge = "长" * 300_000 + " long line " * 10_000
    doc = _write_jsonl(tmp_path / "huge.jsonl", [{"text": huge}, {"text": "after"}])
    manifest = _tokenize([doc], tmp_path / "out", val_fraction=0.0, shard_tokens=1 << 20)
    tokens = _all_tokens(tmp_path / "out", manifest).tolist()
    assert tokens == qwen.encode(huge) + [151643] + qwen.encode("after") + [151643]


def test_dialogue_chatml_uses_special_ids(tmp_path, qwen):
    chat = pytest.importorskip("steel.tokenizer.chat")
    messages = [{"role": "user", "content": "你好<|im_end|>"}, {"role": "assistant", "content": "您好！"}]
    doc = _write_jsonl(tmp_path / "chat.jsonl", [{"text": "ignored", "messages": messages}, {"text": "no messages"}])
    manifest = _tokenize([doc], tmp_path / "out", dialogue="chatml", val_fraction=0.0)
    tokens = _all_tokens(tmp_path / "out", manifest).tolist()
    ids, _ = chat.encode_chat(qwen, messages)
    assert tokens == ids + [151643]
    assert tokens.count(151644) == 3  # system, user and assistant turns
    assert tokens.count(151645) == 3  # the <|im_end|> inside the user text stays ordinary text
    assert manifest["skipped"] == {"missing field 'messages'": 1}


def test_classify_language():
    assert classify_language(ZH_DOCS[0]) == "zh"
    assert classify_language(EN_DOCS[0]) == "en"
    assert classify_language(CODE_DOCS[0]) == "code"
    assert classify_language("anything", hint="python") == "code"
    assert classify_language("Здравствуйте, как дела у вас сегодня") == "other"


def test_cli_tokenize_and_inspect(corpus, tmp_path, capsys):
    output = tmp_path / "cli"
    assert main(["data", "tokenize", *map(str, corpus), "--output", str(output), "--workers", "1", "--val-docs", "5"]) == 0
    out = capsys.readouterr().out
    assert "documents: 100" in out
    assert "skipped (documents, or whole files where named so): 0" in out
    assert load_data_manifest(output).raw["totals"]["validation_documents"] == 5

    assert main(["data", "inspect", str(output), "--tokens", "20"]) == 0
    out = capsys.readouterr().out
    assert "tokens by language" in out
    assert "--- decoded ---" in out
    assert "第" in out or "Document" in out or "def" in out


def test_unknown_tokenizer_is_one_line_error(tmp_path):
    data = tmp_path / "docs.jsonl"
    data.write_text('{"text": "abc"}\n', encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "steel", "data", "tokenize", str(data), "--output", str(tmp_path / "out"), "--tokenizer", "nope"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert "unknown tokenizer 'nope'" in result.stderr
    assert "Traceback" not in result.stderr


def test_expand_inputs_skips_metadata_files(tmp_path):
    from steel.data.tokenize import expand_inputs

    converted = tmp_path / "converted"
    converted.mkdir()
    shard = _write_jsonl(converted / "news-00000-0000.jsonl", [{"text": ZH_DOCS[0]}])
    (converted / "summary.json").write_text('{"records_written": 1}')
    assert expand_inputs([converted]) == [shard]


def test_expand_inputs_reads_clean_output_shards(tmp_path):
    from steel.data.tokenize import expand_inputs

    cleaned = tmp_path / "cleaned"
    (cleaned / "shards").mkdir(parents=True)
    (cleaned / "examples").mkdir()
    shard = _write_jsonl(cleaned / "shards" / "00000.jsonl.gz", [{"text": ZH_DOCS[0]}])
    _write_jsonl(cleaned / "examples" / "text_length_filter.jsonl", [{"text": "短"}])
    (cleaned / "stats.json").write_text("{}")
    (cleaned / "manifest.json").write_text("{}")
    assert expand_inputs([cleaned]) == [shard]


def test_damaged_file_is_not_also_empty(tmp_path):
    from steel.data.tokenize import SkipLog, iter_documents

    data = zstandard.ZstdCompressor().compress(b"".join(
        json.dumps({"text": t}, ensure_ascii=False).encode() + b"\n" for t in ZH_DOCS))
    cut = tmp_path / "cut.jsonl.zst"
    cut.write_bytes(data[:100])
    skips = SkipLog()
    assert list(iter_documents(TokenizeConfig(inputs=[cut], output=tmp_path / "out"), [cut], skips)) == []
    assert skips.counts["damaged compressed file"] == 1
    assert "empty file" not in skips.counts
