import gzip
import json

import pytest
import zstandard

from steel.data.io import (
    CONVERT_REMEDY,
    ICONV_REMEDY,
    BadRecordLog,
    UndetectableEncodingError,
    detect_encoding,
    is_empty_input,
    iter_json_array,
    iter_lines,
    iter_records,
    open_output,
    undetectable_encodings,
    write_json,
)

RECORDS = [{"text": "你好，世界"}, {"text": "第二行 second line"}, {"text": "三"}]


def _jsonl_bytes(records, encoding="utf-8", line_end="\n"):
    return "".join(json.dumps(r, ensure_ascii=False) + line_end for r in records).encode(encoding)


def _read(path, **kwargs):
    log = BadRecordLog()
    records = list(iter_records(path, on_bad=log, **kwargs))
    return records, log


@pytest.mark.parametrize(
    "name, data",
    [
        ("plain.jsonl", _jsonl_bytes(RECORDS)),
        ("bom.jsonl", b"\xef\xbb\xbf" + _jsonl_bytes(RECORDS)),
        ("crlf.jsonl", _jsonl_bytes(RECORDS, line_end="\r\n")),
        ("gbk.jsonl", _jsonl_bytes(RECORDS, encoding="gbk")),
        ("gb18030.jsonl", _jsonl_bytes(RECORDS + [{"text": "𠀀扩展字符"}], encoding="gb18030")[: -len(b"\n")]),
    ],
)
def test_iter_records_encodings(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    records, log = _read(path)
    expected = RECORDS + ([{"text": "𠀀扩展字符"}] if "18030" in name else [])
    assert [r for _, r in records] == expected
    assert [n for n, _ in records] == list(range(1, len(expected) + 1))
    assert log.total == 0


def test_detect_encoding_names(tmp_path):
    cases = {"a": (b"\xef\xbb\xbf{}", "utf-8-sig"), "b": ("中文".encode(), "utf-8"), "c": ("中文".encode("gbk"), "gb18030")}
    for name, (data, expected) in cases.items():
        (tmp_path / name).write_bytes(data)
        assert detect_encoding(tmp_path / name) == expected


def test_detect_encoding_rejects_binary(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b"\xff\xff\xff\xff\x80\x80")
    with pytest.raises(ValueError, match="neither UTF-8 .* nor GBK/GB18030"):
        detect_encoding(path)


def test_undetectable_encodings_reasons(tmp_path):
    utf8 = tmp_path / "utf8.jsonl"
    utf8.write_text('{"text": "中文"}\n', encoding="utf-8")
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\xff\xff\xff\xff\x80\x80")
    utf16 = tmp_path / "utf16.txt"
    utf16.write_bytes("中文".encode("utf-16"))
    parquet = tmp_path / "table.parquet"
    parquet.write_bytes(b"\xff\xff\xff\xff\x80\x80")  # never sniffed: Parquet is binary

    skipped = undetectable_encodings([utf8, binary, utf16, parquet], remedy="pass --encoding NAME")
    assert [s.path for s in skipped] == [str(binary), str(utf16)]
    assert skipped[0].reason.startswith("the encoding was not detected: the first 6 bytes are neither UTF-8")
    assert skipped[0].reason.endswith("; pass --encoding NAME")
    assert skipped[1].reason == "UTF-16 is not supported; convert the file to UTF-8 first"
    assert skipped[1].to_dict() == {"path": str(utf16), "reason": skipped[1].reason}


def test_compressed_inputs(tmp_path):
    data = _jsonl_bytes(RECORDS)
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(data))
    (tmp_path / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(data))
    for name in ("a.jsonl.gz", "a.jsonl.zst"):
        records, log = _read(tmp_path / name)
        assert [r for _, r in records] == RECORDS
        assert log.total == 0


MANY = [{"text": f"第{i}条：今天天气很好，编号{i * 7919 % 100003}"} for i in range(20000)]
COMPRESSORS = {
    ".gz": gzip.compress,
    ".zst": lambda data: zstandard.ZstdCompressor().compress(data),
}


@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
def test_compressed_multi_member_inputs(tmp_path, suffix):
    # `cat a.gz b.gz` and concatenated Zstandard frames are valid files that read as one.
    compress = COMPRESSORS[suffix]
    path = tmp_path / f"two.jsonl{suffix}"
    path.write_bytes(compress(_jsonl_bytes(RECORDS[:2])) + compress(_jsonl_bytes(RECORDS[2:])))
    records, log = _read(path)
    assert [r for _, r in records] == RECORDS
    assert log.total == 0


@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
def test_truncated_compressed_input_keeps_what_was_read(tmp_path, suffix):
    # A download cut in the middle: every whole line before the cut is kept (Zstandard decodes
    # whole blocks of up to 128 KiB, hence the large input), and the cut is reported with the line
    # where reading stopped.
    data = COMPRESSORS[suffix](_jsonl_bytes(MANY))
    path = tmp_path / f"cut.jsonl{suffix}"
    path.write_bytes(data[: len(data) // 2])
    records, log = _read(path)
    assert 0 < len(records) < len(MANY)
    assert [r for _, r in records] == MANY[: len(records)]
    assert log.counts["damaged compressed file"] == 1
    assert log.counts["truncated last line"] == 1
    assert log.total == 2
    damage = log.examples["damaged compressed file"][0]
    assert f"cut.jsonl{suffix}:{len(records) + 2}" in damage
    assert "truncated" in damage
    assert f"stopped after {len(records) + 1} line(s)" in damage


def test_corrupt_compressed_input_is_a_bad_record(tmp_path):
    data = bytearray(gzip.compress(_jsonl_bytes(MANY)))
    data[len(data) // 2] ^= 0xFF
    path = tmp_path / "corrupt.jsonl.gz"
    path.write_bytes(bytes(data))
    records, log = _read(path)
    # Deflate checks its checksum only at the end of the member, so lines after the flipped byte may
    # come out garbled and are counted as bad or kept as text. The lines before it are intact.
    assert [r for _, r in records[:1000]] == MANY[:1000]
    assert log.counts["damaged compressed file"] == 1
    assert "corrupt compressed data" in log.examples["damaged compressed file"][0]


def test_truncated_compressed_json_array(tmp_path):
    data = gzip.compress(json.dumps(MANY, ensure_ascii=False, indent=1).encode())
    path = tmp_path / "cut.json.gz"
    path.write_bytes(data[: len(data) // 2])
    records, log = _read(path)
    assert 0 < len(records) < len(MANY)
    assert [r for _, r in records] == MANY[: len(records)]
    assert log.counts["damaged compressed file"] == 1


def test_malformed_and_truncated_lines(tmp_path):
    path = tmp_path / "bad.jsonl"
    lines = ['{"text": "一"}', '{"text": "二"', "", "[1, 2]", "\xff", '{"text": "三"}', '{"text": "四']
    data = "\n".join(lines).encode().replace("\xff".encode(), b"\xff")
    path.write_bytes(data)
    records, log = _read(path)
    assert [(n, r["text"]) for n, r in records] == [(1, "一"), (6, "三")]
    assert log.counts == {"malformed JSON": 1, "not a JSON object": 1, "invalid utf-8 bytes": 1, "truncated last line": 1}
    assert any(example.startswith(f"{path}:2: malformed JSON") for example in log.examples["malformed JSON"])
    assert log.examples["truncated last line"][0].startswith(f"{path}:7:")


def test_malformed_json_detail_wording(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "一"}\n{"text": "二\n{"text": "三"}\n', encoding="utf-8")
    records, log = _read(path)
    assert [n for n, _ in records] == [1, 3]
    assert log.examples["malformed JSON"] == [f"{path}:2: malformed JSON: Unterminated string starting at: column 10"]


def test_blank_last_line_is_not_bad(tmp_path):
    path = tmp_path / "blank.jsonl"
    path.write_bytes(_jsonl_bytes(RECORDS) + b"\n  \n")
    records, log = _read(path)
    assert len(records) == 3
    assert log.total == 0


def test_json_array_streams_with_line_numbers(tmp_path, monkeypatch):
    import steel.data.io as data_io

    monkeypatch.setattr(data_io, "READ_CHUNK_BYTES", 7)  # force elements to span many chunks
    path = tmp_path / "array.json"
    path.write_text("[\n" + ",\n".join(json.dumps(r, ensure_ascii=False, indent=2) for r in RECORDS) + "\n]\n")
    records, log = _read(path)
    assert [r for _, r in records] == RECORDS
    assert [n for n, _ in records] == [2, 5, 8]
    assert log.total == 0


def test_json_array_recovers_after_malformed_element(tmp_path):
    path = tmp_path / "array.json"
    path.write_text('[\n  {"text": "一"},\n  {"text": "二" "oops"},\n  {"text": "三", "x": {\n  "y": 1}}\n]\n')
    records, log = _read(path)
    assert [r["text"] for _, r in records] == ["一", "三"]
    assert log.counts == {"malformed JSON": 1}
    assert log.examples["malformed JSON"][0].startswith(f"{path}:3:")


def test_json_array_truncated(tmp_path):
    path = tmp_path / "array.json"
    path.write_text('[{"text": "一"}, {"text": "二"}, {"text": "三')
    records, log = _read(path)
    assert [r["text"] for _, r in records] == ["一", "二"]
    assert log.counts == {"truncated JSON array": 1}


def test_json_array_gbk(tmp_path):
    path = tmp_path / "array.json"
    path.write_bytes(json.dumps(RECORDS, ensure_ascii=False).encode("gbk"))
    assert [r for _, r in iter_json_array(path)] == RECORDS


def test_iter_lines_crlf_and_bom(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(b"\xef\xbb\xbf\xe4\xb8\x80\r\n\r\nb\r\n")
    assert list(iter_lines(path)) == [(1, "一"), (2, ""), (3, "b")]


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".jsonl.zst"])
def test_open_output_round_trip(tmp_path, suffix):
    path = tmp_path / "out" / f"shard{suffix}"
    with open_output(path) as writer:
        for record in RECORDS:
            writer.write(record)
    assert writer.num_records == 3
    assert [r for _, r in iter_records(path)] == RECORDS
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_open_output_leaves_nothing_on_error(tmp_path):
    path = tmp_path / "shard.jsonl"
    with pytest.raises(RuntimeError):
        with open_output(path) as writer:
            writer.write(RECORDS[0])
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_write_json_atomic(tmp_path):
    write_json(tmp_path / "summary.json", {"数": 1})
    assert json.loads((tmp_path / "summary.json").read_text(encoding="utf-8")) == {"数": 1}
    assert len(list(tmp_path.iterdir())) == 1


def test_real_samples_read_cleanly(shared_dir):
    samples = shared_dir / "data" / "steel-samples"
    for path in sorted(samples.iterdir()):
        records, log = _read(path)
        assert log.total == 0, path
        assert len(records) >= 250, path


def test_named_utf8_drops_bom(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + _jsonl_bytes(RECORDS))
    records, log = _read(path, encoding="utf-8")
    assert [r for _, r in records] == RECORDS
    assert log.total == 0


@pytest.mark.parametrize("encoding, message", [("utf-16", "not supported"), ("no-such-codec", "unknown encoding")])
def test_unusable_encodings_rejected(tmp_path, encoding, message):
    path = tmp_path / "a.jsonl"
    path.write_bytes(_jsonl_bytes(RECORDS))
    with pytest.raises(ValueError, match=message):
        list(iter_records(path, encoding=encoding))


def test_json_array_reports_extra_data(tmp_path):
    path = tmp_path / "arrays.jsonl"
    path.write_text('[{"text": "一"}]\n[{"text": "二"}]\n')
    records, log = _read(path)
    assert [r["text"] for _, r in records] == ["一"]
    assert log.counts == {"extra data after the JSON array": 1}
    assert log.examples["extra data after the JSON array"][0].startswith(f"{path}:2:")


UNDETECTABLE_BYTES = b'{"text": "\x80\x80 \x80\x80 \x80 \x80 \x80 \xff \xff"}\n'


def test_undetected_encoding_remedy_default(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(UNDETECTABLE_BYTES)
    with pytest.raises(UndetectableEncodingError) as caught:
        list(iter_records(path))
    assert str(caught.value).endswith(f"; {ICONV_REMEDY}.")
    assert "--encoding" not in str(caught.value)

    with pytest.raises(UndetectableEncodingError) as caught:
        list(iter_lines(path, remedy="pass --encoding NAME"))
    assert str(caught.value).endswith("; pass --encoding NAME.")


def _read_for_tokenizer_train(path):
    from steel.tokenizer.train import iter_texts

    list(iter_texts([path], "text"))


def _read_for_eval_perplexity(path):
    from steel.eval.cli import _read_documents

    _read_documents(path, "text")


def _read_for_sft(path):
    from steel.train.sft_data import IdentityConfig, SFTSourceConfig, iter_conversations

    list(iter_conversations(SFTSourceConfig(path=str(path)), IdentityConfig(), {}))


@pytest.mark.parametrize(
    "read, remedy",
    [(_read_for_tokenizer_train, CONVERT_REMEDY), (_read_for_eval_perplexity, CONVERT_REMEDY), (_read_for_sft, ICONV_REMEDY)],
)
def test_undetected_encoding_remedy_per_command(tmp_path, read, remedy):
    # None of these commands has an --encoding option, so none may tell the user to pass one.
    path = tmp_path / "bad.jsonl"
    path.write_bytes(UNDETECTABLE_BYTES)
    with pytest.raises((ValueError, SystemExit)) as caught:
        read(path)
    message = str(caught.value)
    assert str(path) in message
    assert remedy in message
    assert "--encoding NAME)" not in message
    assert "pass --encoding" not in message


def test_is_empty_input_cases(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    cases = {
        "empty.jsonl": (b"", True),
        "blank.jsonl": (b"\n \r\n\t\n", True),
        "bom-only.jsonl": (b"\xef\xbb\xbf\n", True),
        "empty-array.json": (b" [ \n ] \n", True),
        "one-record.jsonl": (b'\n\n{"text": "x"}\n', False),
        "array.json": (b'[{"text": "x"}]', False),
        "blank.jsonl.zst": (zstandard.ZstdCompressor().compress(b"\n\n"), True),
        "gbk.jsonl": (_jsonl_bytes(RECORDS, encoding="gbk"), False),
    }
    for name, (data, expected) in cases.items():
        (tmp_path / name).write_bytes(data)
        assert is_empty_input(tmp_path / name) is expected, name

    pq.write_table(pa.table({"text": pa.array([], pa.string())}), tmp_path / "no-rows.parquet")
    pq.write_table(pa.table({"text": ["x"]}), tmp_path / "one-row.parquet")
    assert is_empty_input(tmp_path / "no-rows.parquet") is True
    assert is_empty_input(tmp_path / "one-row.parquet") is False


@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
def test_truncated_compressed_input_is_not_empty(tmp_path, suffix):
    # Cut inside the first block: nothing decompresses, but the file is damaged, not empty.
    data = COMPRESSORS[suffix](_jsonl_bytes(MANY))
    path = tmp_path / f"cut.jsonl{suffix}"
    path.write_bytes(data[:200])
    assert not is_empty_input(path)
    empty = tmp_path / f"empty.jsonl{suffix}"
    empty.write_bytes(COMPRESSORS[suffix](b"\n"))
    assert is_empty_input(empty)
