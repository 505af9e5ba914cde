import pytest
import yaml

from steel.data.clean.recipe import load_recipe, parse_recipe

DATA_JUICER_CONFIG = """
project_name: 'demo'
dataset_path: '/data/in.jsonl'
export_path: '/data/out.jsonl'
np: 40
text_keys: 'content'
open_tracer: true
process:
  - clean_email_mapper:
  - words_num_filter:
      lang: zh
      tokenization: false
      min_num: 10
      accelerator: cpu
  - document_simhash_deduplicator:
      tokenization: space
      window_size: 6
"""


def test_shipped_faithful_recipes_have_the_published_operator_counts():
    text = load_recipe("steel-text")
    code = load_recipe("steel-code")
    assert len(text.operators) == 22
    assert len(code.operators) == 15
    assert text.compat == code.compat == "data-juicer"
    assert [op.name for op in text.deduplicators] == ["document_simhash_deduplicator"]
    assert text.deduplicators[0].params["num_blocks"] == 6
    assert text.deduplicators[0].params["hamming_distance"] == 4


def test_faithful_text_recipe_uses_data_juicer_units():
    ops = {op.name: op for op in load_recipe("steel-text").operators}
    assert ops["words_num_filter"].params["unit"] == "space"
    assert ops["alphanumeric_filter"].max_value == 0.9
    assert ops["punctuation_normalization_mapper"].params["style"] == "ascii"
    assert ops["perplexity_filter"].skip_reason is not None


def test_zh_web_recipe_uses_chinese_units():
    recipe = load_recipe("zh-web")
    ops = {op.name: op for op in recipe.operators}
    assert recipe.compat == "steel"
    assert ops["words_num_filter"].params["unit"] == "jieba"
    assert ops["word_repetition_filter"].params["unit"] == "jieba"
    assert ops["average_line_length_filter"].params["unit"] == "sentence"
    assert ops["maximum_line_length_filter"].params["unit"] == "sentence"
    assert ops["alphanumeric_filter"].max_value == 1.0
    assert ops["fix_unicode_mapper"].params["fix_character_width"] is False
    assert ops["punctuation_normalization_mapper"].params["style"] == "zh"
    assert [op.method for op in recipe.deduplicators] == ["exact", "minhash"]


def test_data_juicer_config_loads_and_reports_ignored_keys(tmp_path):
    path = tmp_path / "dj.yaml"
    path.write_text(DATA_JUICER_CONFIG, encoding="utf-8")
    recipe = load_recipe(path)
    assert recipe.compat == "data-juicer"
    assert recipe.name == "demo"
    assert recipe.text_key == "content"
    for key in ("dataset_path", "export_path", "np", "open_tracer", "project_name", "01_words_num_filter.accelerator", "01_words_num_filter.lang"):
        assert key in recipe.ignored_keys
    assert recipe.operators[1].params == {"unit": "space"}


def test_recipe_errors_name_the_place():
    with pytest.raises(SystemExit, match=r"process\[0\].*unknown operator 'no_such_mapper'"):
        parse_recipe({"process": [{"no_such_mapper": None}]}, "r.yaml")
    with pytest.raises(SystemExit, match=r"process\[0\].*unknown parameter\(s\) max_len"):
        parse_recipe({"process": [{"clean_email_mapper": {"max_len": 3}}]}, "r.yaml")
    with pytest.raises(SystemExit, match="move deduplicators to the end"):
        parse_recipe({"process": ["document_deduplicator", "clean_email_mapper"]}, "r.yaml")
    with pytest.raises(SystemExit, match="`process:` list"):
        parse_recipe({"name": "x"}, "r.yaml")
    with pytest.raises(SystemExit, match="compat"):
        parse_recipe({"compat": "spark", "process": []}, "r.yaml")


def test_recipe_not_found_lists_shipped_names():
    with pytest.raises(SystemExit, match="zh-web"):
        load_recipe("no-such-recipe")


def test_recipe_fingerprint_tracks_parameters():
    a = parse_recipe({"process": [{"text_length_filter": {"min_len": 5}}]})
    b = parse_recipe({"process": [{"text_length_filter": {"min_len": 6}}]})
    c = parse_recipe(yaml.safe_load("process:\n  - text_length_filter: {min_len: 5}\n"))
    assert a.fingerprint() != b.fingerprint()
    assert a.fingerprint() == c.fingerprint()
