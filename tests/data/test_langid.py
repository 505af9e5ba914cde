import pytest

from steel.data.langid import detect_language, is_chinese, script_counts


@pytest.mark.parametrize(
    "text, expected",
    [
        ("今天天气很好，我们去公园散步。", "zh"),
        ("臺灣的繁體字也是中文。", "zh"),
        ("𠀀𠀁是扩展区的汉字", "zh"),
        ("请把下面这句话翻译成英文：The quick brown fox jumps over the lazy dog.", "zh"),
        ("用Python写一个hello world程序", "zh"),
        ("The committee will publish its report on the results of the survey next week.", "en"),
        ("Ｔｈｅ ｂｏｏｋ ｉｓ ｏｎ ｔｈｅ ｔａｂｌｅ", "en"),
        ("Please explain what 机器学习 means in this context, and give an example of it.", "en"),
        ("これは日本語の文章で、ひらがなが多く含まれています。", "other"),
        ("한국어 문장은 한글로 씁니다.", "other"),
        ("Der Hund läuft schnell über die Straße und die Katze schläft im Garten.", "other"),
        ("Le chat dort sur le canapé pendant que les enfants jouent dans le jardin.", "other"),
        ("Привет, как дела?", "other"),
        ("12345 !!! 😀", "other"),
        ("", "other"),
    ],
)
def test_detect_language_cases(text, expected):
    assert detect_language(text) == expected


def test_script_counts_scripts():
    counts = script_counts("中文ABCｘかな한글é😀")
    assert counts.han == 2
    assert counts.latin == 4
    assert counts.kana == 2
    assert counts.hangul == 2
    assert counts.other_latin == 1
    assert counts.other_letters == 0


def test_is_chinese_true_false():
    assert is_chinese("你好")
    assert not is_chinese("hello there")
