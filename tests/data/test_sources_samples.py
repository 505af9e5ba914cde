"""Adapters on real samples of the published corpora (skipped when the reference data is absent)."""

import pytest

from steel.data.langid import detect_language
from steel.data.sources import ConversionLog, ReadOptions, get_adapter

# sample file -> (adapter, records expected)
SAMPLES = {
    "wikipedia-cn-20230720-filtered_sample.json": ("wikipedia-cn", 250),
    "563w_baidubaike_sample.json": ("baidubaike", 1000),
    "train-00000-of-00005-a1278ede4e8c5cdb_sample.parquet": ("zhihu-kol", 1000),
    "train_3.5M_CN_sample.json": ("belle-3.5m", 1000),
    "firefly-train-1.1M_sample.jsonl": ("firefly", 1000),
    "2021-31_zh_head_0000_sample.jsonl": ("skypile", 1000),
    "train-00000-of-00059_python_sample.parquet": ("starcoder", 500),
}


@pytest.fixture(scope="module")
def converted(shared_dir):
    samples = shared_dir / "data" / "steel-samples"
    results = {}
    for filename, (source, _) in SAMPLES.items():
        log = ConversionLog()
        records = list(get_adapter(source).read((samples / filename,), ReadOptions(), log))
        results[source] = (records, log)
    return results


@pytest.mark.parametrize("filename", sorted(SAMPLES))
def test_sample_converts_without_loss(converted, filename):
    source, expected = SAMPLES[filename]
    records, log = converted[source]
    assert len(records) == expected
    assert log.bad.total == 0
    assert not log.skipped
    assert len({record["id"] for record in records}) == len(records)
    assert all(record["text"].strip() for record in records)


def test_sample_dialogues_have_turns(converted):
    for source in ("zhihu-kol", "belle-3.5m", "firefly"):
        records, _ = converted[source]
        for record in records:
            roles = [m["role"] for m in record["messages"]]
            assert roles[0] == "user", record["id"]
            assert "assistant" in roles, record["id"]
            for m in record["messages"]:
                assert m["content"] in record["text"], record["id"]


def test_sample_baidubaike_keeps_section_text(converted):
    records, _ = converted["baidubaike"]
    first = records[0]
    assert first["text"].startswith("红色食品\n红色食品是指食品为红色")
    assert first["metadata"]["url"] == "http://baike.baidu.com/view/0010.htm"


def test_sample_starcoder_headers_removed(converted):
    records, _ = converted["starcoder"]
    with_header = [r for r in records if any(key.startswith("header_") for key in r["metadata"])]
    assert len(with_header) == 250
    assert not any(r["text"].startswith(("<reponame>", "<filename>", "<gh_stars>")) for r in records)


def test_sample_chinese_corpora_detected_as_chinese(converted):
    for source in ("wikipedia-cn", "baidubaike", "skypile", "belle-3.5m"):
        records, _ = converted[source]
        share = sum(detect_language(r["text"]) == "zh" for r in records) / len(records)
        assert share > 0.9, source
