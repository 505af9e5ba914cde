import dataclasses
import inspect
import math
import random
from collections import Counter

import numpy as np
import pytest

from steel.data import io
from steel.data.clean import dedup, perplexity
from steel.data.clean import filters as F
from steel.data.clean import text as text_module
from steel.data.clean.code import count_tokens
from steel.data.clean.operators import DEDUPLICATORS, FILTERS, IGNORED_OPERATOR_KEYS, MAPPERS, build_operator
from steel.data.clean.text import TextView, jieba_words, ngram_counts, space_words, split_sentences

CHINESE = "我们今天在北京大学召开了一次关于人工智能发展的学术研讨会。与会专家讨论了大语言模型的训练方法！你觉得怎么样？"
ENGLISH = "The quick brown fox jumps over the lazy dog. It was a sunny day, and everyone was happy."


# --- units ---------------------------------------------------------------------------------------


def _counter_ngram_counts(text, n):
    return sorted(Counter(text[i : i + n] for i in range(len(text) - n + 1)).values())


NGRAM_TEXTS = [
    "", "短", CHINESE, ENGLISH * 5, "欢迎光临本店，全场商品八折优惠。" * 30, "ab" * 300,
    "生僻字𠀀𣘴😀\ud800孤立代理项" * 40,
]  # fmt: skip


def test_delete_special_chars_matches_definition():
    rng = random.Random(0)
    alphabet = "aZ09,.!？。、「」\x00\x07\t \u3000\u200b\xa0中文𠀀😀👨\u200d🔥€½²ǅⅫ"
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20)))
        kept = "".join(char for char in text if not text_module.is_special_char(char))
        assert text_module.delete_special_chars(text, keep_ascii_controls=False) == kept, repr(text)
        with_controls = "".join(char for char in text if char in "\x00\x07" or not text_module.is_special_char(char))
        assert text_module.remove_special_chars(text) == with_controls, repr(text)


@pytest.mark.parametrize("n", [1, 2, 10])
def test_ngram_counts_equal_counter(n, monkeypatch):
    for text in NGRAM_TEXTS:
        assert sorted(ngram_counts(text, n).tolist()) == _counter_ngram_counts(text, n), text[:20]
    # A multiplier of 0 makes n-grams with the same last character collide: the exact count remains.
    monkeypatch.setattr(text_module, "_HASH_MULTIPLIER", np.uint64(0))
    for text in NGRAM_TEXTS:
        assert sorted(ngram_counts(text, n).tolist()) == _counter_ngram_counts(text, n), text[:20]




def test_space_words_see_one_chinese_word():
    assert len(space_words(CHINESE)) == 1
    assert space_words("Hello, World! (test)") == ["hello", "world", "test"]


def test_jieba_words_segment_chinese_and_keep_english():
    words = jieba_words(CHINESE)
    assert "北京大学" in words
    assert "人工智能" in words
    assert "。" not in words
    assert "！" not in words
    assert jieba_words("我喜欢Python和machine learning") == ["我", "喜欢", "python", "和", "machine", "learning"]


def test_split_sentences_chinese_terminators():
    assert split_sentences("第一句。第二句！“第三句？”\n第四行没有句号") == ["第一句。", "第二句！", "“第三句？”", "第四行没有句号"]


def test_text_view_caches_segmentation():
    view = TextView(CHINESE)
    assert view.words("jieba") is view.words("jieba")
    with pytest.raises(ValueError, match="unknown word unit"):
        view.words("bpe")


# --- filters -------------------------------------------------------------------------------------


def test_alphanumeric_ratio_counts_cjk_as_alphanumeric():
    assert F.alphanumeric_ratio(CHINESE) > 0.9  # why Data-Juicer's max_ratio 0.9 drops clean Chinese
    assert 0.7 < F.alphanumeric_ratio(ENGLISH) < 0.9
    assert F.alphanumeric_ratio("!!!???...") == 0.0
    assert F.alphanumeric_ratio("") == 0.0


def test_alphanumeric_ratio_per_token_uses_qwen_tokens():
    text = "def add(a, b):\n    return a + b\n"
    expected = sum(c.isalnum() for c in text) / count_tokens(text)
    assert F.alphanumeric_ratio(text, tokenization=True) == pytest.approx(expected)
    assert count_tokens("hello world") == 2


def test_average_and_maximum_line_length():
    text = "短行\n" + "长" * 20
    assert F.average_line_length(text) == pytest.approx(len(text) / 2)
    assert F.maximum_line_length(text) == 20
    assert F.maximum_line_length(CHINESE) == len(CHINESE)  # one paragraph is one line
    assert F.maximum_line_length(CHINESE, unit="sentence") == len("我们今天在北京大学召开了一次关于人工智能发展的学术研讨会。")
    assert F.average_line_length(CHINESE, unit="sentence") == pytest.approx(len(CHINESE) / 3)


def test_character_repetition_ratio():
    assert F.character_repetition_ratio(CHINESE) == 0.0
    # 5 distinct 10-grams repeat; the top int(sqrt(5)) = 2 of them hold 2/5 of all occurrences.
    assert F.character_repetition_ratio("买一送一，" * 30) == pytest.approx(0.4, abs=0.01)
    assert F.character_repetition_ratio("short", rep_len=10) == 0.0


def test_special_characters_ratio_includes_emoji_and_cjk_punctuation():
    assert F.special_characters_ratio("😀😀ab") == 0.5
    assert F.special_characters_ratio("你好，世界。") == pytest.approx(2 / 6)
    assert F.special_characters_ratio("１２３") == 0.0  # full-width digits are not ASCII digits
    assert F.special_characters_ratio("𠀀𣘴") == 0.0  # CJK Extension B ideographs are letters


def test_words_num_units():
    assert F.words_num(CHINESE) == 1
    assert F.words_num(CHINESE, unit="jieba") > 20
    assert F.words_num(ENGLISH) == F.words_num(ENGLISH, unit="jieba") == 18


def test_word_repetition_ratio():
    spam = "欢迎光临本店，全场商品八折优惠。" * 10
    assert F.word_repetition_ratio(spam, rep_len=5, unit="jieba") > 0.8
    assert F.word_repetition_ratio(spam, rep_len=5, unit="space") == 0.0  # one whitespace "word"
    assert F.word_repetition_ratio(CHINESE, rep_len=5, unit="jieba") == 0.0


def test_filter_operator_bounds_are_inclusive():
    op = build_operator("text_length_filter", {"min_len": 3, "max_len": 5}, 0, "test")
    assert [op.keeps(op.measure(TextView(t))) for t in ("ab", "abc", "abcde", "abcdef")] == [False, True, True, False]


def test_filter_operator_defaults_are_report_parameters():
    op = build_operator("words_num_filter", None, 0, "test")
    assert (op.min_value, op.max_value, op.params["unit"]) == (10, 10000, "space")
    op = build_operator("word_repetition_filter", {"lang": "zh", "tokenization": True}, 0, "test")
    assert op.params == {"rep_len": 10, "unit": "jieba"}
    assert op.ignored_keys == ["lang"]


def test_perplexity_filter_skips_without_model(caplog):
    op = build_operator("perplexity_filter", {"lang": "zh", "max_ppl": 1500}, 0, "test")
    assert op.skip_reason is not None and "model" in op.skip_reason
    assert op.max_value == 1500
    assert "skipped" in caplog.text


def test_perplexity_filter_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown parameter"):
        build_operator("perplexity_filter", {"model_path": "x"}, 0, "test")


def test_perplexity_filter_with_model_is_configured(tmp_path):
    op = build_operator("perplexity_filter", {"model": str(tmp_path), "max_ppl": 800}, 0, "test")
    assert op.skip_reason is None
    assert op.params == {"model": str(tmp_path), "max_tokens": 512}
    assert op.max_value == 800
    with pytest.raises(ValueError, match="either"):
        build_operator("perplexity_filter", {"model": "a", "kenlm": "b"}, 0, "test")


def test_infinite_bounds_accept_everything():
    op = build_operator("alphanumeric_filter", {"min_ratio": 0.0, "max_ratio": math.inf}, 0, "test")
    assert op.keeps(op.measure(TextView(CHINESE)))


SHORTCUT_TEXTS = [
    CHINESE, ENGLISH, "你好", "", "！！！", "欢迎光临本店，全场商品八折优惠。" * 10, "a b c d e f g h i j k " * 3,
    "生僻字𠀀𣘴和表情😀😀，以及ＡＢＣ全角。" * 3, "3.14 + 2.71 = 5.85；100% 正确！", "中华人民共和国国务院新闻办公室。中华人民共和国国务院新闻办公室。",
]  # fmt: skip


@pytest.mark.parametrize("bounds", [(10, 100000), (3, 20), (0, 5)])
def test_words_num_shortcut_agrees_with_segmentation(bounds):
    op = build_operator("words_num_filter", {"unit": "jieba", "min_num": bounds[0], "max_num": bounds[1]}, 0, "test")
    for text in SHORTCUT_TEXTS:
        lower, upper = F.jieba_words_num_bounds(text)
        assert lower <= F.words_num(text, unit="jieba") <= upper, text
        assert op.decide(TextView(text))[0] == op.keeps(op.measure(TextView(text))), text


@pytest.mark.parametrize("rep_len,max_ratio", [(10, 0.5), (3, 0.1), (2, 0.0)])
def test_word_repetition_shortcut_agrees_with_segmentation(rep_len, max_ratio):
    params = {"unit": "jieba", "rep_len": rep_len, "max_ratio": max_ratio}
    op = build_operator("word_repetition_filter", params, 0, "test")
    for text in SHORTCUT_TEXTS:
        ratio = F.word_repetition_ratio(text, rep_len, "jieba")
        lower, _ = F.jieba_words_num_bounds(text)
        assert ratio <= F.word_repetition_upper_bound(text, rep_len, lower), text
        assert op.decide(TextView(text))[0] == op.keeps(ratio), text


def test_word_filter_shortcut_skips_segmentation():
    op = build_operator("words_num_filter", {"unit": "jieba"}, 0, "test")
    view = TextView("，".join(["今天天气很好"] * 12) + "。")
    assert op.decide(view) == (True, None)
    assert not view.has_words("jieba")


def test_jieba_lower_bound_segments_only_what_it_needs():
    text = "，".join(["今天天气很好我们一起去公园散步"] * 3) + "。短句。"
    num_words = len(jieba_words(text))
    view = TextView(text)
    assert view.jieba_words_lower_bound(0) == 4  # one word per block, before any segmentation
    bound = view.jieba_words_lower_bound(8)
    assert 8 <= bound < num_words
    assert not view.has_words("jieba")
    assert view.jieba_words_lower_bound(10**6) == num_words  # every block segmented: the exact count


BLOCK_TEXTS = SHORTCUT_TEXTS + [
    "mixed 中文 and English, 数字3.14和符号#&%。\r\n下一行\tTab", "㐀扩展A区和兼容字豈以及鿖不在块里", "C++ 与 C# 的 a.b_c-d 100%",
    "私用区\ue000字符 3.14\ue000",
]  # fmt: skip


@pytest.mark.parametrize("target", [0, 3, 10**6])
def test_jieba_words_from_blocks_equal_whole_text(target):
    for text in BLOCK_TEXTS:
        view = TextView(text)
        assert view.jieba_words_lower_bound(target) <= len(jieba_words(text)), text
        assert view.words("jieba") == jieba_words(text), text


@pytest.mark.parametrize("rep_len", [2, 3])
def test_word_repetition_bound_holds_on_random_text(rep_len):
    # Greek capitals lowercase differently alone and in context (Σ to σ or ς); ASCII controls are special.
    pieces = ["ΑΣ", "ΒΣ", "ς", "\x01", " ", "，", "中文", "分词", "ab", "Ab", "3.14", "。"]
    rng = random.Random(rep_len)
    for _ in range(400):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 30)))
        ratio = F.word_repetition_ratio(text, rep_len, "jieba")
        lower, upper = F.jieba_words_num_bounds(text)
        assert lower <= F.words_num(text, "jieba") <= upper, repr(text)
        assert ratio <= F.word_repetition_upper_bound(text, rep_len, lower), repr(text)


def test_word_filter_shortcuts_agree_on_samples(shared_dir):
    samples = shared_dir / "data/steel-samples"
    records = zip(range(120), io.iter_records(samples / "2021-31_zh_head_0000_sample.jsonl"))
    texts = [record["text"] for _, (_, record) in records]
    operators = [
        build_operator("words_num_filter", {"unit": "jieba", "min_num": 10, "max_num": 10000}, 0, "test"),
        build_operator("words_num_filter", {"unit": "jieba", "min_num": 200, "max_num": 400}, 0, "test"),
        build_operator("word_repetition_filter", {"unit": "jieba", "rep_len": 10, "max_ratio": 0.5}, 0, "test"),
        build_operator("word_repetition_filter", {"unit": "jieba", "rep_len": 5, "max_ratio": 0.05}, 0, "test"),
    ]
    for text in texts:
        segmented = TextView(text)  # shared by the exact statistics
        for op in operators:
            kept, value = op.decide(TextView(text))
            exact = op.measure(segmented)
            assert kept == op.keeps(exact), (op.name, text[:200])
            assert value is None or value == exact


def _parameters(function, skip: int = 1) -> set[str]:
    """Names of `function`'s parameters after the first `skip` (the text, or the fingerprints)."""
    return set(list(inspect.signature(function).parameters)[skip:])


def _accepted_by_signature(name: str) -> set[str]:
    """The recipe keys of operator `name`, read from the signatures of the functions that take them."""
    if name in MAPPERS:
        return _parameters(MAPPERS[name].function)
    if name in DEDUPLICATORS:
        method = DEDUPLICATORS[name].method
        if method == "exact":
            return _parameters(dedup.content_hash)
        if method == "simhash":
            return _parameters(dedup.simhash) | _parameters(dedup.find_simhash_duplicates)
        return {f.name for f in dataclasses.fields(dedup.MinHashConfig)} | {"backend"}
    spec = FILTERS[name]
    if name == "perplexity_filter":
        keys = _parameters(perplexity.causal_lm_perplexity) | _parameters(perplexity.kenlm_perplexity)
    else:
        keys = _parameters(spec.statistic)
    keys |= {key for key in (spec.min_key, spec.max_key) if key}
    keys.add("lang")  # Data-Juicer's language key, accepted by every filter
    if "unit" in keys and name.startswith("word"):
        keys.add("tokenization")  # Data-Juicer's spelling of the word unit
    return keys


@pytest.mark.parametrize("name", sorted([*MAPPERS, *FILTERS, *DEDUPLICATORS]))
def test_misspelt_parameter_lists_valid_keys(name):
    with pytest.raises(ValueError) as raised:
        build_operator(name, {"max_lenght": 1}, 3, "recipe.yaml: process[3]")
    message = str(raised.value)
    assert message.startswith("recipe.yaml: process[3]: unknown parameter(s) max_lenght; ")

    operator_part, common_part = message.split("; ")[1:]
    listed = operator_part.removeprefix(f"valid for {name}: ")
    assert operator_part.startswith(f"valid for {name}: ")
    assert set(listed.split(", ")) - {"none"} == _accepted_by_signature(name)
    assert common_part == "valid for every operator: " + ", ".join(sorted(IGNORED_OPERATOR_KEYS))


def _tiny_model_dir(directory):
    """A tiny random Steel model with a byte-level BPE tokenizer, saved as a Hugging Face directory."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from steel.model import SteelConfig, SteelForCausalLM
    from steel.tokenizer import load_tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )  # fmt: skip
    bpe.train_from_iterator([CHINESE, ENGLISH], trainer=trainer)
    PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>").save_pretrained(directory)
    config = SteelConfig(
        vocab_size=load_tokenizer(directory).vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, ffn_type="dense",
    )  # fmt: skip
    torch.manual_seed(0)
    SteelForCausalLM(config).save_pretrained(directory)
    return directory


def test_perplexity_with_steel_model(tmp_path):
    pytest.importorskip("steel.train.load")
    import torch

    from steel.data.clean.perplexity import _load_causal_lm

    model_dir = str(_tiny_model_dir(tmp_path / "model"))
    op = build_operator("perplexity_filter", {"model": model_dir, "max_ppl": 1e9, "max_tokens": 64}, 0, "test")
    perplexity = op.measure(TextView(CHINESE))

    loaded = _load_causal_lm(model_dir)
    ids = torch.tensor([loaded.tokenizer.encode(CHINESE)[:64]])
    with torch.no_grad():
        expected = math.exp(loaded.model(input_ids=ids, labels=ids).loss.item())
    assert perplexity == pytest.approx(expected, rel=1e-4)
    assert op.keeps(perplexity)
    strict = build_operator("perplexity_filter", {"model": model_dir, "max_ppl": 1.0}, 0, "test")
    assert not strict.keeps(strict.measure(TextView(CHINESE)))  # a random model is far above perplexity 1
