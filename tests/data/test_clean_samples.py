"""The shipped recipes on real corpus samples: the faithful recipe's Data-Juicer units remove most
Chinese documents, zh-web keeps them. Expected counts were measured and the removed documents read."""

import json

import pytest

from steel.data import io
from steel.data.clean.recipe import load_recipe
from steel.data.clean.stats import measure_recipe

NUM_DOCS_PER_SOURCE = 150


@pytest.fixture(scope="module")
def sample_corpus(shared_dir, tmp_path_factory):
    samples = shared_dir / "data" / "steel-samples"
    texts = []
    for name, field in (("2021-31_zh_head_0000_sample.jsonl", "text"), ("wikipedia-cn-20230720-filtered_sample.json", "completion")):
        records = io.iter_records(samples / name)
        texts += [record[field] for _, (_, record) in zip(range(NUM_DOCS_PER_SOURCE), records)]
    for _, (_, record) in zip(range(NUM_DOCS_PER_SOURCE), io.iter_records(samples / "563w_baidubaike_sample.json")):
        parts = [record["title"], record.get("summary") or ""]
        for section in record.get("sections") or []:
            parts += [section["title"], section["content"]]
        texts.append("\n".join(p for p in parts if p))
    path = tmp_path_factory.mktemp("samples") / "web-wiki-baike.jsonl"
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    return path


def _removed(stats):
    return {op["operator"]: op["docs_removed"] for op in stats["operators"] if op["kind"] == "filter"}


def test_faithful_recipe_on_samples(sample_corpus):
    stats = measure_recipe(load_recipe("steel-text"), [sample_corpus])
    assert stats["totals"]["documents_in"] == 450
    assert stats["totals"]["documents_out"] == EXPECTED_FAITHFUL_OUT
    assert _removed(stats) == EXPECTED_FAITHFUL_REMOVED


def test_zh_web_recipe_on_samples(sample_corpus):
    stats = measure_recipe(load_recipe("zh-web"), [sample_corpus])
    assert stats["totals"]["documents_out"] == EXPECTED_ZH_WEB_OUT
    assert _removed(stats) == EXPECTED_ZH_WEB_REMOVED


# Web text and Wikipedia are clean; the Baidu Baike sample contains infobox stubs and spec tables.
EXPECTED_FAITHFUL_OUT = 143
EXPECTED_FAITHFUL_REMOVED = {
    "alphanumeric_filter": 85, "average_line_length_filter": 51, "character_repetition_filter": 0,
    "maximum_line_length_filter": 0, "perplexity_filter": 0, "special_characters_filter": 86,
    "text_length_filter": 0, "words_num_filter": 85, "word_repetition_filter": 0,
}  # fmt: skip
EXPECTED_ZH_WEB_OUT = 435
EXPECTED_ZH_WEB_REMOVED = {
    "alphanumeric_filter": 0, "average_line_length_filter": 1, "character_repetition_filter": 0,
    "maximum_line_length_filter": 1, "perplexity_filter": 0, "special_characters_filter": 6,
    "text_length_filter": 1, "words_num_filter": 5, "word_repetition_filter": 1,
}  # fmt: skip


def test_word_filter_shortcuts_agree_on_samples(sample_corpus):
    from steel.data.clean.text import TextView

    ops = [op for op in load_recipe("zh-web").operators if op.name in ("words_num_filter", "word_repetition_filter")]
    texts = [record["text"] for _, record in io.iter_records(sample_corpus)][::3]
    for text in texts:
        for op in ops:
            assert op.decide(TextView(text))[0] == op.keeps(op.measure(TextView(text)))


def test_faithful_code_recipe_on_python_sample(shared_dir, tmp_path):
    parquet = shared_dir / "data" / "steel-samples" / "train-00000-of-00059_python_sample.parquet"
    contents = [record["content"] for _, (_, record) in zip(range(200), io.iter_records(parquet))]
    path = tmp_path / "python.jsonl"
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in contents), encoding="utf-8")

    stats = measure_recipe(load_recipe("steel-code"), [path])
    removed = {op["label"]: op["docs_removed"] for op in stats["operators"] if op["kind"] == "filter"}
    modified = {op["label"]: op["docs_modified"] for op in stats["operators"] if op["kind"] == "mapper"}
    assert stats["totals"]["documents_out"] == 169
    assert removed == {
        "06_alphanumeric_filter": 1, "07_alphanumeric_filter": 7, "08_average_line_length_filter": 3,
        "09_character_repetition_filter": 7, "10_maximum_line_length_filter": 0, "11_text_length_filter": 2,
        "12_words_num_filter": 8, "13_word_repetition_filter": 3,
    }  # fmt: skip
    assert modified["05_clean_copyright_mapper"] == 29  # licence headers at the top of files
    assert modified["01_clean_links_mapper"] == 56
