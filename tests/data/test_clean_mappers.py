import json
import random
import unicodedata

import ftfy
import opencc
import pytest

from steel.data import io
from steel.data.clean import mappers as M
from steel.data.clean.code import clean_copyright

# Characters outside the Basic Multilingual Plane: CJK Extension B (𠀀, 𣘴) and emoji (😀, 👨‍👩‍👧).
EXTENSION_B = "𠀀𣘴"
FAMILY_EMOJI = "👨\u200d👩\u200d👧"


# --- traditional to simplified -----------------------------------------------------------------


def test_chinese_convert_traditional_only_characters():
    assert M.chinese_convert("這個軟體的說明書寫得很詳細。") == "这个软体的说明书写得很详细。"  # characters, not vocabulary
    assert M.chinese_convert("電腦與網絡") == "电脑与网络"


def test_chinese_convert_keeps_simplified_and_other_scripts():
    text = f"简体中文 English 😀 {EXTENSION_B} ｆｕｌｌ"
    assert M.chinese_convert(text) == text


def test_chinese_convert_phrase_table():
    # 乾 stays in 乾隆 (a name) but becomes 干 in 乾燥: OpenCC's phrase table decides.
    assert M.chinese_convert("乾隆皇帝") == "乾隆皇帝"
    assert M.chinese_convert("天氣乾燥") == "天气干燥"


def test_chinese_convert_fast_path_matches_opencc(shared_dir):
    converter = opencc.OpenCC("t2s")
    path = shared_dir / "data/steel-samples/2021-31_zh_head_0000_sample.jsonl"
    texts = [json.loads(line)["text"] for line in path.open(encoding="utf-8")][:300]
    texts += ["這是繁體", "乾隆", "简体", "mixed 繁體 and 简体"]
    for text in texts:
        assert M.chinese_convert(text) == converter.convert(text)


@pytest.mark.parametrize("mode", ["t2s", "s2t"])
def test_chinese_convert_phrases_without_trigger_characters(mode):
    # Phrases made only of characters that convert to themselves, so only the phrase search finds them.
    triggers = M._conversion_triggers(mode)
    phrases = triggers.phrases.pattern.split("|")
    assert phrases
    converter = opencc.OpenCC(mode)
    for phrase in phrases:
        assert triggers.chars.isdisjoint(phrase), phrase
        assert not triggers.any_trigger.isdisjoint(phrase), phrase
        text = f"前文{phrase}后文"
        assert M.chinese_convert(text, mode) == converter.convert(text), phrase


def test_chinese_convert_characters_outside_bmp():
    triggers = M._conversion_triggers("t2s")
    converter = opencc.OpenCC("t2s")
    outside = sorted(char for char in triggers.chars if ord(char) > 0xFFFF)[:20]
    assert outside
    for char in outside:
        assert M.chinese_convert(f"简体{char}。") == converter.convert(f"简体{char}。"), char
    assert M.chinese_convert("简体𠀀😀。") == "简体𠀀😀。"


def test_clean_ip_hint_agrees_with_full_pattern():
    rng = random.Random(0)
    pieces = ["0", "1", "25", "255", "256", "1.2", ".", ":", "::", "fe80", "a", " ", "٣", "版本"]
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 20)))
        assert M.clean_ip(text) == M._IP.sub("", text), repr(text)


# --- e-mail, links, IP ---------------------------------------------------------------------------


def test_clean_email_chinese_and_english():
    assert M.clean_email("联系zhang.san+ml@example.com.cn谢谢") == "联系谢谢"
    assert M.clean_email("mail a_b@mail.example.org now") == "mail  now"
    assert M.clean_email("no address @ here") == "no address @ here"


def test_clean_email_custom_pattern_and_replacement():
    assert M.clean_email("写信给 x@y.com", repl="[邮箱]") == "写信给 [邮箱]"
    assert M.clean_email("a#b", pattern=r"#", repl="@") == "a@b"


def test_clean_links_stops_at_chinese_text():
    assert M.clean_links("请访问https://example.com/a?b=1获取资料") == "请访问获取资料"
    assert M.clean_links("see www.baidu.com and ftp://files.example.org/x.zip.") == "see  and "
    assert M.clean_links("no link: xwww.example") == "no link: xwww.example"


def test_clean_ip_v4_and_v6():
    assert M.clean_ip("服务器192.168.1.1已重启") == "服务器已重启"
    assert M.clean_ip("addr 2001:db8::1 and fe80:0:0:0:0:0:0:1 end") == "addr  and  end"


def test_clean_ip_keeps_versions_and_times():
    for text in ("版本 1.2.3.4.5", "时间 12:30:45", "数值 3.14", "999.1.1.1"):
        assert M.clean_ip(text) == text


# --- HTML ----------------------------------------------------------------------------------------


def test_clean_html_keeps_text_and_structure():
    html = "<p>你好<b>世界</b></p><ul><li>一</li><li>二</li></ul><script>var x = 1;</script>A &amp; B"
    assert M.clean_html(html) == "你好世界\n* 一\n* 二\nA & B"


def test_clean_html_leaves_plain_text_alone():
    text = "3 < 5 且 5 > 3，这不是标签"
    assert M.clean_html(text) == text


# --- LaTeX macros --------------------------------------------------------------------------------


def test_expand_macro_without_arguments():
    text = r"\newcommand{\R}{\mathbb{R}} \def\eps{\varepsilon} 设 $x \in \R$，\eps>0，\Rset 不变"
    expanded = M.expand_macro(text)
    assert r"$x \in \mathbb{R}$" in expanded
    assert r"\varepsilon>0" in expanded
    assert r"\Rset" in expanded
    assert expanded.startswith(r"\newcommand{\R}{\mathbb{R}}")  # definitions stay as written


def test_expand_macro_skips_macros_with_arguments():
    text = r"\newcommand{\norm}[1]{\lVert #1 \rVert} $\norm{x}$"
    assert M.expand_macro(text) == text


# --- Unicode repair ------------------------------------------------------------------------------


def test_fix_unicode_repairs_mojibake():
    broken = "中文测试很好".encode("utf-8").decode("latin-1")
    assert M.fix_unicode(broken) == "中文测试很好"


def test_fix_unicode_chinese_settings_keep_fullwidth_and_quotes():
    text = "他说：“你好（测试）！”"
    assert M.fix_unicode(text, fix_character_width=False, uncurl_quotes=False) == text
    # Data-Juicer's settings (ftfy's defaults) rewrite the same text to ASCII punctuation.
    assert M.fix_unicode(text) == '他说:"你好(测试)!"'


def test_fix_unicode_skips_text_that_needs_nothing():
    assert not M.needs_unicode_fix("纯中文文本，没有问题。", fix_character_width=False, uncurl_quotes=False)
    assert M.needs_unicode_fix("ﬁ ligature")
    assert M.needs_unicode_fix("a\x00b")
    assert M.needs_unicode_fix("&amp;")
    assert M.needs_unicode_fix("\uf900")  # a CJK compatibility ideograph, which NFC rewrites


HARD_UNICODE_CASES = [
    "纯中文。", "ｆｕｌｌ　ｗｉｄｔｈ！", "“curly” ‘quotes’", "emoji 😀 " + FAMILY_EMOJI, EXTENSION_B,
    "e\u0301 combining", "\ufeffBOM", "tab\tand\r\nCRLF", "控制\x07字符", "ﬁne", "A &lt; B", "<b>&amp;</b>",
    "ä¸\xadæ–‡", "カ\u3099", "\u2028line", "\uf900\uf901", "Ｈｅｌｌｏ，世界", "ｶﾀｶﾅ",
]  # fmt: skip


@pytest.mark.parametrize("width,quotes", [(True, True), (False, False)])
def test_fix_unicode_fast_path_matches_ftfy(width, quotes):
    for text in HARD_UNICODE_CASES:
        expected = ftfy.fix_text(text, fix_character_width=width, uncurl_quotes=quotes)
        assert M.fix_unicode(text, fix_character_width=width, uncurl_quotes=quotes) == expected, text


def test_fix_unicode_fast_path_matches_ftfy_on_samples(shared_dir):
    path = shared_dir / "data/steel-samples/2021-31_zh_head_0000_sample.jsonl"
    texts = [json.loads(line)["text"] for line in path.open(encoding="utf-8")][:200]
    for text in texts:
        assert M.fix_unicode(text, fix_character_width=False, uncurl_quotes=False) == ftfy.fix_text(
            text, fix_character_width=False, uncurl_quotes=False
        )


# Characters that stress the line-by-line repair: HTML entity starts, mojibake lead and continuation
# bytes, full-width forms whose width fix gives `&` or Latin-1 signs, curly quotes, line breaks.
FUZZ_ALPHABET = (
    "ab&<>;# \n\n\t⦅ｶ①℃カ\u3099中文。，、「」“”‘’…—·ÃÂ©¢£¥¬é\xa0\u200b\r\x07ﬁ\uf900\u3000"
    + "".join(map(chr, range(0xFF01, 0xFF61)))
    + "".join(map(chr, range(0xFFE0, 0xFFE7)))
)


def test_fix_unicode_full_width_entities_and_signs():
    # The width fix turns these into `&amp;` and `¬¢`, which ftfy's next pass repairs again.
    assert M.fix_unicode("＆ａｍｐ；") == "&"
    assert M.fix_unicode("ａ＆ｌｔ；ｂ") == "a<b"
    assert M.fix_unicode("￢￠") == "¢"
    assert M.fix_unicode("a￢￠\n中文￢￠") == "a¢\n中文¬¢"  # ftfy judges each line on its own


@pytest.mark.parametrize("width,quotes", [(True, True), (False, False), (True, False)])
def test_fix_unicode_matches_ftfy_on_random_text(width, quotes):
    rng = random.Random(0)
    for _ in range(3000):
        text = "".join(rng.choice(FUZZ_ALPHABET) for _ in range(rng.randint(1, 12)))
        expected = ftfy.fix_text(text, fix_character_width=width, uncurl_quotes=quotes)
        assert M.fix_unicode(text, fix_character_width=width, uncurl_quotes=quotes) == expected, repr(text)


def test_fix_unicode_repairs_only_suspect_lines():
    broken = "中文测试".encode("utf-8").decode("latin-1")
    lines = ["第一行，全角：ＡＢＣ“引号”\n", f"第二行 {broken} 和 &amp; 实体\n", "第三行 <b>\n", "第四行 &lt; 不转义"]
    text = "".join(lines)
    assert M.fix_unicode(text) == ftfy.fix_text(text)
    assert M.fix_unicode(text) == '第一行,全角:ABC"引号"\n第二行 中文测试 和 & 实体\n第三行 <b>\n第四行 &lt; 不转义'


def test_fix_unicode_default_settings_match_ftfy_on_samples(shared_dir):
    samples = shared_dir / "data/steel-samples"
    texts = [record["completion"] for _, (_, record) in zip(range(300), io.iter_records(samples / "wikipedia-cn-20230720-filtered_sample.json"))]
    texts += [record["text"] for _, (_, record) in zip(range(300), io.iter_records(samples / "2021-31_zh_head_0000_sample.jsonl"))]
    for text in texts:
        assert M.fix_unicode(text) == ftfy.fix_text(text), text[:200]


def test_space_separators_all_in_bmp():
    # whitespace_normalization scans only the Basic Multilingual Plane for space separators.
    outside = [code for code in range(0x10000, 0x110000) if unicodedata.category(chr(code)) == "Zs"]
    assert outside == []
    assert M.whitespace_normalization("a\u3000b\u00a0c\u200bd") == "a b cd"


# --- punctuation ---------------------------------------------------------------------------------


def test_punctuation_ascii_style_is_data_juicers():
    assert M.punctuation_normalization("你好，世界！“引号”【注】") == '你好,世界!"引号"[注]'


def test_punctuation_zh_style():
    assert M.punctuation_normalization("你好,世界!ＡＢＣ１２３，“引号”", "zh") == "你好，世界!ABC123，“引号”"
    assert M.punctuation_normalization("结束了?\n好的", "zh") == "结束了？\n好的"
    assert M.punctuation_normalization("Hello, world! 3,000", "zh") == "Hello, world! 3,000"


def test_punctuation_unknown_style():
    with pytest.raises(ValueError, match="unknown punctuation style"):
        M.punctuation_normalization("x", "fancy")


# --- repeated sentences --------------------------------------------------------------------------


def test_remove_repeat_sentences_chinese_and_english():
    text = "今天天气很好。我们去公园。今天天气很好！好。好。\nHello world. Hello world. Bye."
    assert M.remove_repeat_sentences(text) == "今天天气很好。我们去公园。好。好。\nHello world. Bye."


def test_remove_repeat_sentences_ignores_special_characters():
    text = "第一句话。**第一句话**。第二句话。"
    assert M.remove_repeat_sentences(text) == "第一句话。第二句话。"


def test_remove_repeat_sentences_min_length():
    text = "是的。是的。我明白了。我明白了。"
    assert M.remove_repeat_sentences(text, min_repeat_sentence_length=2) == "是的。我明白了。"
    assert M.remove_repeat_sentences(text, min_repeat_sentence_length=3) == "是的。是的。我明白了。"


def test_remove_repeat_sentences_drops_emptied_lines_only():
    text = "重复的一行。\n\n重复的一行。\n最后一行"
    assert M.remove_repeat_sentences(text) == "重复的一行。\n\n最后一行"


# --- given characters, whitespace ----------------------------------------------------------------


def test_remove_specific_chars():
    assert M.remove_specific_chars("◆重点■内容●") == "重点内容"
    assert M.remove_specific_chars("abc", chars_to_remove="b") == "ac"


def test_whitespace_normalization():
    assert M.whitespace_normalization("\u3000\u3000你好\u00a0世界\u200b！ \r\n第二行 ") == "你好 世界！ \n第二行"
    assert M.whitespace_normalization(FAMILY_EMOJI) == FAMILY_EMOJI  # zero-width joiners stay


# --- copyright headers ---------------------------------------------------------------------------


def test_clean_copyright_line_comments_after_metadata():
    code = "<reponame>a/b\n# Copyright 2020 Foo\n# License: MIT\nimport os\n"
    assert clean_copyright(code) == "<reponame>a/b\nimport os\n"


def test_clean_copyright_block_comment():
    assert clean_copyright("/* Copyright (c) 2019 Bar\n * All rights reserved. */\nint main() {}") == "int main() {}"


def test_clean_copyright_keeps_shebang_and_other_comments():
    assert clean_copyright("#!/usr/bin/env python\n# Copyright X\nprint(1)") == "#!/usr/bin/env python\nprint(1)"
    code = "# a helper\nx = 1  # copyright symbol handling\n"
    assert clean_copyright(code) == code
