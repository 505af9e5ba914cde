import json
import shutil

import pytest

from steel.cli import main
from tests.data.clean_corpus import EMOJI, MIXED, NEWS, SCIENCE, write_corpus


def _clean(inputs, output, recipe="zh-web", workers=1, extra=()):
    args = ["data", "clean", "--recipe", recipe, *map(str, inputs), "--output", str(output), "--workers", str(workers), *extra]
    assert main(args) == 0
    return json.loads((output / "stats.json").read_text(encoding="utf-8"))


def _read_shards(output):
    records = []
    for path in sorted((output / "shards").glob("*.jsonl")):
        records += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return records


def _by_operator(stats):
    return {op["operator"]: op for op in stats["operators"]}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def zh_web_output(corpus, tmp_path_factory):
    output = tmp_path_factory.mktemp("zh-web")
    return output, _clean(corpus, output)


def test_zh_web_end_to_end_counts(zh_web_output):
    output, stats = zh_web_output
    assert stats["totals"] == {
        "documents_in": 11, "chars_in": stats["totals"]["chars_in"], "documents_out": 6,
        "chars_out": stats["totals"]["chars_out"], "bad_records": 2,
    }  # fmt: skip
    ops = _by_operator(stats)
    assert ops["chinese_convert_mapper"]["docs_modified"] == 1
    assert ops["clean_html_mapper"]["docs_modified"] == 1
    assert ops["clean_links_mapper"]["docs_modified"] == 1
    assert ops["remove_repeat_sentences_mapper"]["docs_modified"] == 1  # the spam document
    assert ops["alphanumeric_filter"]["docs_removed"] == 1  # the symbol row
    assert ops["average_line_length_filter"]["docs_removed"] == 1  # 你好
    assert ops["words_num_filter"]["docs_removed"] == 1  # what is left of the spam
    assert ops["document_deduplicator"]["docs_removed"] == 1  # the exact copy
    assert ops["document_minhash_deduplicator"]["docs_removed"] == 1  # the repost, across shards
    assert ops["perplexity_filter"]["skipped"]


def test_zh_web_output_text_and_fields(zh_web_output):
    output, _ = zh_web_output
    records = _read_shards(output)
    ids = [r["id"] for r in records]
    assert ids == ["a1", "a2", "a7", "b1", "b2", "b3"]
    by_id = {r["id"]: r for r in records}
    assert by_id["a1"]["text"] == NEWS
    assert by_id["a1"]["source"] == "news"  # fields beyond text are kept
    assert by_id["a2"]["text"].startswith("台北市政府今日宣布")  # converted to simplified
    assert by_id["b1"]["text"] == SCIENCE
    assert "example.com" not in by_id["b2"]["text"]
    assert "<p>" not in by_id["b2"]["text"]
    assert by_id["b2"]["meta"] == {"url": "https://example.com"}
    assert by_id["b3"]["text"] == EMOJI.replace("ＡＢＣ", "ABC")  # emoji and Extension B kept
    assert MIXED not in [r["text"] for r in records]


def test_clean_writes_examples_and_manifest(zh_web_output):
    output, stats = zh_web_output
    examples = (output / "examples" / "21_document_minhash_deduplicator.jsonl").read_text(encoding="utf-8")
    example = json.loads(examples.splitlines()[0])
    assert example["id"] == "00001:3"
    assert example["duplicate_of"] == "00000:0"
    removed = json.loads((output / "examples" / "11_alphanumeric_filter.jsonl").read_text(encoding="utf-8"))
    assert removed["value"] < 0.5
    manifest = json.loads((output / "manifest.json").read_text(encoding="utf-8"))
    assert [s["documents"] for s in manifest["shards"]] == [3, 3]
    assert manifest["recipe"]["name"] == "zh-web"
    assert manifest["inputs"][0]["bad_records"] == 2
    assert stats["bad_records"]["by_reason"] == {"malformed JSON": 1, "missing field 'text'": 1}


def test_faithful_recipe_drops_chinese(corpus, tmp_path):
    stats = _clean(corpus, tmp_path / "out", recipe="steel-text")
    ops = _by_operator(stats)
    assert stats["totals"]["documents_out"] == 0
    assert ops["alphanumeric_filter"]["docs_removed"] == 6  # clean Chinese is "too alphanumeric"
    assert ops["words_num_filter"]["docs_removed"] == 3  # a Chinese paragraph is one whitespace word


def test_clean_is_deterministic_across_workers(corpus, zh_web_output, tmp_path):
    output, _ = zh_web_output
    _clean(corpus, tmp_path / "two", workers=2)
    for name in ("00000.jsonl", "00001.jsonl"):
        assert (tmp_path / "two" / "shards" / name).read_bytes() == (output / "shards" / name).read_bytes()
    assert (tmp_path / "two" / "stats.json").read_bytes() == (output / "stats.json").read_bytes()


def test_clean_rerun_skips_finished_shards(corpus, tmp_path):
    inputs = [tmp_path / p.name for p in corpus]
    for source, target in zip(corpus, inputs):
        shutil.copy(source, target)
    output = tmp_path / "out"
    _clean(inputs, output)

    # A crash after shard 0 finished: shard 1's task and everything after it must run again.
    work = output / "work"
    (work / "logs" / "clean" / "completions" / "00001").unlink()
    shutil.rmtree(work / "dedup")
    shutil.rmtree(work / "logs" / "dedup")
    shutil.rmtree(work / "logs" / "write")
    (output / "shards" / "00001.jsonl").unlink()
    # Shard 0's input changes: a skipped task does not see the change.
    with inputs[0].open("a", encoding="utf-8") as f:
        f.write(json.dumps({"text": SCIENCE + "新增的一段话。", "id": "a9"}, ensure_ascii=False) + "\n")

    stats = _clean(inputs, output)
    assert "a9" not in [r["id"] for r in _read_shards(output)]
    assert stats["totals"]["documents_out"] == 6


def test_clean_rejects_other_inputs_in_same_output(corpus, tmp_path):
    _clean(corpus[:1], tmp_path / "out")
    with pytest.raises(SystemExit, match="other inputs or another recipe"):
        _clean(corpus, tmp_path / "out")


def test_stages_run_elsewhere_then_stats_merges(corpus, zh_web_output, tmp_path, capsys):
    from datatrove.executor import LocalPipelineExecutor

    from steel.data.clean.pipeline import CleanConfig, build_stages
    from steel.data.clean.recipe import load_recipe

    # What a Slurm submission does, with datatrove's local executor standing in for sbatch.
    output = tmp_path / "out"
    config = CleanConfig(load_recipe("zh-web"), inputs=list(corpus), output_dir=output)
    for name, pipeline, num_tasks in build_stages(config):
        LocalPipelineExecutor(pipeline, tasks=num_tasks, workers=1, logging_dir=str(output / "work" / "logs" / name)).run()
    assert not (output / "stats.json").exists()
    assert main(["data", "stats", str(output)]) == 0
    assert "recipe zh-web: 11 documents in, 6 out" in capsys.readouterr().out
    assert (output / "stats.json").read_bytes() == (zh_web_output[0] / "stats.json").read_bytes()


def test_clean_compressed_shards(corpus, tmp_path):
    _clean(corpus, tmp_path / "out", extra=("--compression", "zst"))
    assert sorted(p.name for p in (tmp_path / "out" / "shards").iterdir()) == ["00000.jsonl.zst", "00001.jsonl.zst"]


def test_stats_command_prints_both_recipes(corpus, zh_web_output, capsys):
    output, _ = zh_web_output
    assert main(["data", "stats", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "recipe zh-web: 11 documents in, 6 out" in printed
    assert "21_document_minhash_deduplicator" in printed

    assert main(["data", "stats", "--recipe", "zh-web", "--recipe", "steel-text", "--json", *map(str, corpus)]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["recipe"] for r in results] == ["zh-web", "steel-text"]
    alone = {op["operator"]: op.get("docs_failing_alone") for op in results[1]["operators"]}
    assert alone["alphanumeric_filter"] == 6


@pytest.mark.parametrize(
    "output_name, message",
    [("existing", "is a file, not a directory"), ("existing/sub", "cannot create the output directory")],
)
def test_clean_rejects_file_as_output(corpus, tmp_path, output_name, message):
    (tmp_path / "existing").write_text("not a directory\n", encoding="utf-8")
    output = tmp_path / output_name
    with pytest.raises(SystemExit, match=message) as caught:
        main(["data", "clean", "--recipe", "zh-web", str(corpus[0]), "--output", str(output)])
    assert str(output) in str(caught.value)
    assert (tmp_path / "existing").read_text(encoding="utf-8") == "not a directory\n"


def test_clean_missing_input(tmp_path):
    with pytest.raises(SystemExit, match="not found"):
        main(["data", "clean", str(tmp_path / "nope.jsonl"), "--output", str(tmp_path / "out")])


def test_clean_reads_convert_output_directory(corpus, tmp_path):
    # A `steel data convert` output directory: its shards are read, its summary.json is not.
    converted = tmp_path / "converted"
    converted.mkdir()
    (converted / corpus[0].name).write_bytes(corpus[0].read_bytes())
    (converted / "summary.json").write_text('{"records_written": 0}', encoding="utf-8")
    output = tmp_path / "out"
    assert main(["data", "clean", "--recipe", "zh-web", str(converted), "--output", str(output)]) == 0
    manifest = json.loads((output / "manifest.json").read_text(encoding="utf-8"))
    assert "summary.json" not in json.dumps(manifest)
    assert corpus[0].name in json.dumps(manifest)


def test_datatrove_minhash_backend_matches_steel(corpus, zh_web_output, tmp_path):
    import yaml

    from steel.data.clean.recipe import resolve_recipe_path

    recipe = yaml.safe_load(resolve_recipe_path("zh-web").read_text(encoding="utf-8"))
    for entry in recipe["process"]:
        if isinstance(entry, dict) and "document_minhash_deduplicator" in entry:
            entry["document_minhash_deduplicator"]["backend"] = "datatrove"
    path = tmp_path / "zh-web-datatrove.yaml"
    path.write_text(yaml.safe_dump(recipe, allow_unicode=True), encoding="utf-8")

    stats = _clean(corpus, tmp_path / "out", recipe=str(path))
    minhash = _by_operator(stats)["document_minhash_deduplicator"]
    assert minhash["docs_removed"] == 1
    assert minhash["candidate_pairs_rejected"] == 0
    assert minhash["candidate_pairs_confirmed"] >= 1
    output, _ = zh_web_output
    for name in ("00000.jsonl", "00001.jsonl"):
        assert (tmp_path / "out" / "shards" / name).read_bytes() == (output / "shards" / name).read_bytes()


UNDETECTABLE_BYTES = b'{"text": "\x80\x80 \x80\x80 \x80 \x80 \x80 \xff \xff"}\n'


def test_undetectable_input_skipped_and_counted(tmp_path, capsys):
    good = tmp_path / "good.jsonl"
    good.write_text('{"text": "今天天气很好，我们去公园散步。公园里的花都开了，很多人在拍照。"}\n', encoding="utf-8")
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(UNDETECTABLE_BYTES)
    output = tmp_path / "out"
    stats = _clean([good, bad], output)

    assert stats["totals"]["documents_in"] == 1
    assert len(stats["skipped_files"]) == 1
    assert stats["skipped_files"][0]["path"] == str(bad)
    reason = stats["skipped_files"][0]["reason"]
    assert "neither UTF-8 (with or without BOM) nor GBK/GB18030" in reason
    assert "convert the file to UTF-8 first, with `steel data convert --source jsonl --encoding NAME" in reason

    manifest = json.loads((output / "manifest.json").read_text(encoding="utf-8"))
    assert [entry["path"] for entry in manifest["inputs"]] == [str(good.resolve())]
    assert manifest["skipped_files"] == stats["skipped_files"]
    printed = capsys.readouterr().out
    assert "1 input file(s) skipped:" in printed
    assert f"  {bad}: the encoding was not detected" in printed


def test_all_inputs_undetectable_fails(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(UNDETECTABLE_BYTES)
    output = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "steel", "data", "clean", str(bad), "--output", str(output)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1
    assert "no input could be read" in result.stderr
    assert f"{bad}: the encoding was not detected" in result.stderr
    assert "Traceback" not in result.stderr
    assert not output.exists()


def test_stats_recipe_skips_undetectable_input(corpus, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(UNDETECTABLE_BYTES)
    assert main(["data", "stats", "--recipe", "zh-web", "--json", str(corpus[0]), str(bad)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [entry["path"] for entry in result["skipped_files"]] == [str(bad)]
    assert result["totals"]["documents_in"] > 0


def test_empty_inputs_skipped_and_counted(tmp_path, capsys):
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq

    good = tmp_path / "good.jsonl"
    good.write_text('{"text": "今天天气很好，我们去公园散步。公园里的花都开了，很多人在拍照。"}\n', encoding="utf-8")
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    blank = tmp_path / "blank.jsonl.gz"
    blank.write_bytes(gzip.compress(b"\n  \r\n\n"))
    empty_array = tmp_path / "empty.json"
    empty_array.write_text("[\n]\n", encoding="utf-8")
    no_rows = tmp_path / "no-rows.parquet"
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), no_rows)
    output = tmp_path / "out"
    stats = _clean([empty, good, blank, empty_array, no_rows], output)

    assert stats["totals"]["documents_in"] == 1
    assert [entry["path"] for entry in stats["skipped_files"]] == [str(empty), str(blank), str(empty_array), str(no_rows)]
    assert {entry["reason"] for entry in stats["skipped_files"]} == {"the file is empty: it contains no records"}
    manifest = json.loads((output / "manifest.json").read_text(encoding="utf-8"))
    assert [entry["path"] for entry in manifest["inputs"]] == [str(good.resolve())]
    printed = capsys.readouterr().out
    assert "4 input file(s) skipped:" in printed
    assert f"  {empty}: the file is empty: it contains no records" in printed


def test_all_inputs_empty_fails(tmp_path):
    import subprocess
    import sys

    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n\n", encoding="utf-8")
    output = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "steel", "data", "clean", "--recipe", "zh-web", str(empty), str(blank), "--output", str(output)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1
    assert "no input contains records:" in result.stderr
    assert f"{empty}: the file is empty: it contains no records" in result.stderr
    assert f"{blank}: the file is empty: it contains no records" in result.stderr
    assert "Traceback" not in result.stderr
    assert not output.exists()


def test_clean_records_input_encodings(tmp_path, caplog):
    text = "今天天气很好，我们去公园散步。公园里的花都开了，很多人在拍照。"
    gbk = tmp_path / "gbk.jsonl"
    gbk.write_bytes(json.dumps({"text": text}, ensure_ascii=False).encode("gbk") + b"\n")
    utf8 = tmp_path / "utf8.jsonl"
    utf8.write_text(json.dumps({"text": text + "再见。"}, ensure_ascii=False) + "\n", encoding="utf-8")
    output = tmp_path / "out"
    with caplog.at_level("INFO", logger="steel.data.clean.cli"):
        stats = _clean([gbk, utf8], output, recipe="zh-web")

    assert stats["totals"]["documents_in"] == 2
    manifest = json.loads((output / "manifest.json").read_text(encoding="utf-8"))
    assert [entry["encoding"] for entry in manifest["inputs"]] == ["gb18030", "utf-8"]
    assert f"input {gbk}: detected encoding gb18030" in caplog.messages
    assert not any(message.startswith(f"input {utf8}") for message in caplog.messages)
