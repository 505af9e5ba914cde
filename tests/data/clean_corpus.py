"""A small hand-made corpus for the cleaning tests: each document exercises one operator."""

import json
from pathlib import Path

NEWS = (
    "国家统计局今天发布数据显示，今年前三季度国内生产总值同比增长百分之五点二，经济运行总体回升向好。"
    "其中第三季度增长百分之四点九，消费对经济增长的贡献率明显提高，就业形势总体稳定，居民收入继续增加。"
    "专家认为，随着各项政策效果持续显现，全年经济增长目标有望顺利实现。"
)
SCIENCE = (
    "机器学习是人工智能的一个分支，研究计算机怎样从数据中学习规律并做出预测。深度学习使用多层神经网络，"
    "在图像识别、语音识别和自然语言处理等任务上取得了突破性进展，也带来了对算力和数据的巨大需求。"
    "研究人员正在探索更高效的训练方法，以降低大模型的能耗和成本。"
)
TRADITIONAL = (
    "臺北市政府今日宣布，將在明年擴建市區的公共圖書館網絡，增加閱覽座位與電子資源。"
    "市長表示，圖書館是城市的重要文化設施，希望讓更多市民享受閱讀的樂趣，並鼓勵青少年養成終身學習的習慣。"
)
ENGLISH = (
    "The city council approved a new plan to expand the public library network next year. "
    "The mayor said that libraries are important cultural institutions and that more residents "
    "should be able to enjoy reading. The plan adds reading rooms, digital resources and longer hours."
)
MIXED = (
    "<p>欢迎访问我们的网站https://example.com/news获取最新消息，或发邮件到 editor@example.com 联系编辑部。</p>"
    "<p>本周的主题是城市交通：地铁新线路将在下个月开通，预计每天可以服务二十万名乘客，缓解早晚高峰的拥堵。</p>"
)
EMOJI = (
    "今天去公园散步😀，看到很多人在锻炼身体。生僻字𠀀和𣘴也能正常显示。ＡＢＣ全角字母会被转换成半角，"
    "大家都觉得天气非常好，空气也很清新，真是一个适合户外活动的周末。"
)
SPAM = "买一送一，全场五折！" * 40
SYMBOLS = "★★★★ ---- #### 1234 5678 ---- ★★★★ //// 9999 ---- ==== ++++ 0000 **** ~~~~ 1111"
SHORT = "你好"
# NEWS with a dateline in front and an end mark: a near-duplicate, not an exact copy.
NEWS_REPOST = "新华社北京电 " + NEWS + "（完）"

SHARD_A = [
    {"text": NEWS, "id": "a1", "source": "news"},
    {"text": TRADITIONAL, "id": "a2"},
    {"text": NEWS, "id": "a3"},
    {"text": SHORT, "id": "a4"},
    {"text": SPAM, "id": "a5"},
    {"text": SYMBOLS, "id": "a6"},
    {"text": ENGLISH, "id": "a7"},
]
SHARD_B = [
    {"text": SCIENCE, "id": "b1"},
    {"text": MIXED, "id": "b2", "meta": {"url": "https://example.com"}},
    {"text": EMOJI, "id": "b3"},
    {"text": NEWS_REPOST, "id": "b4"},
]


def write_corpus(directory: Path) -> list[Path]:
    """Write the two shards; shard A also has a malformed line and a record without text."""
    directory.mkdir(parents=True, exist_ok=True)
    a, b = directory / "a.jsonl", directory / "b.jsonl"
    lines = [json.dumps(r, ensure_ascii=False) for r in SHARD_A]
    lines.insert(3, '{"text": "broken')
    lines.append(json.dumps({"id": "a8", "title": "no text field"}))
    a.write_text("\n".join(lines) + "\n", encoding="utf-8")
    b.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in SHARD_B), encoding="utf-8")
    return [a, b]
