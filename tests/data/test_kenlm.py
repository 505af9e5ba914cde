"""perplexity_filter with `kenlm:`, against a small bigram model written by hand in ARPA format."""

import json
import math
import sys

import pytest

from steel.cli import main
from steel.data.clean.operators import build_operator
from steel.data.clean.perplexity import _load_kenlm, kenlm_perplexity
from steel.data.clean.text import TextView

FLUENT = "我们今天去公园散步。天气很好。"
SCRAMBLED = "散步公园去今天我们。好很天气。"  # the same jieba words in reverse order

WORDS = ["我们", "今天", "去", "公园", "散步", "天气", "很", "好"]
BIGRAMS = ["<s> 我们", "我们 今天", "今天 去", "去 公园", "公园 散步", "散步 </s>", "<s> 天气", "天气 很", "很 好", "好 </s>"]
UNIGRAM_LOG10 = -1.2
BACKOFF_LOG10 = -0.3
BIGRAM_LOG10 = -0.1


def write_arpa(path):
    """Write a bigram model: every word has log10 p = -1.2, and each seen bigram log10 p = -0.1."""
    unigrams = [f"-99\t<s>\t{BACKOFF_LOG10}", f"{UNIGRAM_LOG10}\t</s>", "-2.0\t<unk>"]
    unigrams += [f"{UNIGRAM_LOG10}\t{word}\t{BACKOFF_LOG10}" for word in WORDS]
    lines = ["\\data\\", f"ngram 1={len(unigrams)}", f"ngram 2={len(BIGRAMS)}", "", "\\1-grams:", *unigrams]
    lines += ["", "\\2-grams:", *(f"{BIGRAM_LOG10}\t{bigram}" for bigram in BIGRAMS), "", "\\end\\", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def arpa(tmp_path_factory):
    pytest.importorskip("kenlm")
    return write_arpa(tmp_path_factory.mktemp("kenlm") / "tiny.arpa")


def test_segmentation_matches_model():
    # The expected perplexities below assume jieba splits the sentences into the model's words.
    assert TextView("我们今天去公园散步。").words("jieba") == ["我们", "今天", "去", "公园", "散步"]
    assert TextView("散步公园去今天我们。").words("jieba") == ["散步", "公园", "去", "今天", "我们"]
    assert TextView("好很天气。").words("jieba") == ["好", "很", "天气"]


def test_fluent_perplexity_by_hand(arpa):
    # Every transition, </s> included, is a seen bigram: 8 words + 2 sentence ends, each -0.1.
    assert kenlm_perplexity(TextView(FLUENT), str(arpa)) == pytest.approx(10 ** (-BIGRAM_LOG10), rel=1e-5)


def test_scrambled_perplexity_by_hand(arpa):
    # No transition is a seen bigram, so each one backs off: backoff(context) + unigram(word).
    expected = 10 ** -(BACKOFF_LOG10 + UNIGRAM_LOG10)
    assert kenlm_perplexity(TextView(SCRAMBLED), str(arpa)) == pytest.approx(expected, rel=1e-5)


def test_perplexity_without_words_is_infinite(arpa):
    assert kenlm_perplexity(TextView("。！？"), str(arpa)) == math.inf


def test_filter_removes_above_max_ppl(arpa):
    op = build_operator("perplexity_filter", {"kenlm": str(arpa), "max_ppl": 10}, 0, "test")
    assert op.skip_reason is None

    fluent = op.measure(TextView(FLUENT))
    scrambled = op.measure(TextView(SCRAMBLED))
    assert fluent < scrambled
    assert op.keeps(fluent)
    assert not op.keeps(scrambled)


def test_clean_with_kenlm_recipe(arpa, tmp_path):
    recipe = tmp_path / "kenlm.yaml"
    recipe.write_text(f"name: kenlm-only\nprocess:\n  - perplexity_filter: {{kenlm: {arpa}, max_ppl: 10}}\n", encoding="utf-8")
    corpus = tmp_path / "corpus.jsonl"
    records = [{"text": FLUENT, "id": "fluent"}, {"text": SCRAMBLED, "id": "scrambled"}]
    corpus.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    output = tmp_path / "out"

    assert main(["data", "clean", "--recipe", str(recipe), str(corpus), "--output", str(output), "--workers", "1"]) == 0
    stats = json.loads((output / "stats.json").read_text(encoding="utf-8"))
    [perplexity] = stats["operators"]
    assert perplexity["operator"] == "perplexity_filter"
    assert perplexity["skipped"] is None
    assert perplexity["docs_in"] == 2
    assert perplexity["docs_removed"] == 1

    kept_records = [json.loads(line) for line in (output / "shards" / "00000.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [record["id"] for record in kept_records] == ["fluent"]
    [example] = [json.loads(line) for line in (output / "examples" / "00_perplexity_filter.jsonl").read_text(encoding="utf-8").splitlines()]
    assert example["value"] == pytest.approx(10 ** -(BACKOFF_LOG10 + UNIGRAM_LOG10), rel=1e-5)


def test_missing_model_file_rejected(tmp_path):
    pytest.importorskip("kenlm")
    with pytest.raises(ValueError, match="KenLM model file .*missing.arpa not found"):
        build_operator("perplexity_filter", {"kenlm": str(tmp_path / "missing.arpa")}, 0, "test")


def test_kenlm_not_installed_message(tmp_path, monkeypatch):
    # A None entry in sys.modules makes `import kenlm` raise ImportError, as if it were not installed.
    monkeypatch.setitem(sys.modules, "kenlm", None)
    path = str(tmp_path / "model.arpa")
    with pytest.raises(ValueError, match=r"needs the kenlm package, which is not installed: pip install 'steel\[kenlm\]'"):
        build_operator("perplexity_filter", {"kenlm": path}, 0, "test")

    _load_kenlm.cache_clear()
    with pytest.raises(SystemExit, match=r"needs the kenlm package: pip install 'steel\[kenlm\]'"):
        _load_kenlm(path)
