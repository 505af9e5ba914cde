"""SFT data: record formats, preparation, skip counts, mixtures, packing and resumable batches."""

import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from steel.tokenizer import load_tokenizer
from steel.tokenizer.chat import encode_chat
from steel.train.loss import IGNORE_INDEX
from steel.train.sft_data import (
    IdentityConfig,
    SFTBatches,
    SFTDataConfig,
    SFTSourceConfig,
    collate_rows,
    draw_epoch,
    load_conversations,
    load_sources,
    pack_rows,
    record_conversations,
    tokenize_source,
)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("qwen")


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def convert(record, **source_settings):
    return record_conversations(record, SFTSourceConfig(path="x", **source_settings), Counter())


def test_alpaca_with_input_history_and_system():
    record = {
        "instruction": "翻译成英文",
        "input": "你好",
        "output": "Hello",
        "system": "你是翻译。",
        "history": [["在吗", "在"]],
    }

    assert convert(record) == [[
        {"role": "system", "content": "你是翻译。"},
        {"role": "user", "content": "在吗"},
        {"role": "assistant", "content": "在"},
        {"role": "user", "content": "翻译成英文\n你好"},
        {"role": "assistant", "content": "Hello"},
    ]]  # fmt: skip


def test_sharegpt_roles_and_source_system():
    record = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}

    assert convert(record, system="Be kind.") == [[
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"},
    ]]  # fmt: skip


def test_messages_keep_their_own_system():
    messages = [{"role": "system", "content": "A"}, {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a"}]  # fmt: skip

    assert convert({"messages": messages}, system="B") == [messages]


@pytest.mark.parametrize(
    "options",
    [
        {"choices": ["一", "二", "三", "四"]},
        {"choices": {"A": "一", "B": "二", "C": "三", "D": "四"}},
        {"A": "一", "B": "二", "C": "三", "D": "四"},
    ],
)
def test_multiple_choice_option_layouts(options):
    record = {"question": "二是哪个？", "answer": "B", **options}

    [conversation] = convert(record, choice_answer="answer")

    assert conversation[0]["content"].endswith("二是哪个？\nA. 一\nB. 二\nC. 三\nD. 四")
    assert conversation[1]["content"] == "答案：B"


def test_multiple_choice_with_and_without_worked_answer():
    record = {"question": "What is 2+2?", "choices": ["3", "4"], "answer": "b", "explanation": "2+2=4."}

    both = convert(record, choice_answer="both")
    explained = convert(record, choice_answer="explained")
    unexplained = convert({**record, "explanation": ""}, choice_answer="explained")

    assert [c[1]["content"] for c in both] == ["Answer: B", "2+2=4.\nAnswer: B"]
    assert [c[1]["content"] for c in explained] == ["2+2=4.\nAnswer: B"]
    assert [c[1]["content"] for c in unexplained] == ["Answer: B"]


def test_multiple_choice_without_question_is_rejected():
    from steel.data.sources.base import RecordError

    with pytest.raises(RecordError, match="missing field 'question'"):
        convert({"choices": ["1", "2"], "answer": "A"}, format="multiple_choice")


def test_load_jsonl_counts_every_skip(tmp_path):
    path = tmp_path / "mixed.jsonl"
    write_jsonl(path, [
        {"instruction": "说你好", "output": "你好"},
        {"instruction": "说再见", "output": ""},
        {"conversations": [{"from": "alien", "value": "?"}]},
        {"text": "no chat here"},
        {"messages": [{"role": "user", "content": "Say hi in English"}, {"role": "assistant", "content": "Hi"}]},
    ])  # fmt: skip
    with open(path, "a", encoding="utf-8") as f:
        f.write("{not json\n")

    conversations, stats = load_conversations(SFTSourceConfig(path=str(path), language="zh"), IdentityConfig())

    assert [c[-1]["content"] for c in conversations] == ["你好"]
    assert stats["records"] == 5
    assert stats["skipped"] == {
        "empty assistant": 1,
        "unknown role": 1,
        "unknown record format": 1,
        "truncated last line": 1,
        "not Chinese": 1,
    }


def test_load_parquet_directory(tmp_path):
    rows = [{"instruction": f"问题{i}", "input": "", "output": f"回答{i}"} for i in range(3)]
    (tmp_path / "data").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "data" / "part-0.parquet")
    write_jsonl(tmp_path / "data" / "part-1.jsonl", [{"instruction": "问题3", "output": "回答3"}])

    conversations, stats = load_conversations(SFTSourceConfig(path=str(tmp_path / "data")), IdentityConfig())

    assert [c[-1]["content"] for c in conversations] == ["回答0", "回答1", "回答2", "回答3"]
    assert stats["skipped"] == {}


def test_identity_samples_use_name_and_maker():
    source = SFTSourceConfig(format="identity")

    conversations, _ = load_conversations(source, IdentityConfig(name="小钢", maker="钢铁实验室"))

    assert len(conversations) > 10
    answers = [c[1]["content"] for c in conversations]
    assert all("小钢" in a for a in answers)
    assert all("钢铁实验室" in a for a in answers)
    assert any(a.startswith("I am 小钢") for a in answers)


def test_identity_template_file(tmp_path):
    path = write_jsonl(tmp_path / "identity.jsonl", [{"question": "名字？", "answer": "{name}，来自{maker}"}])

    conversations, _ = load_conversations(SFTSourceConfig(format="identity"),
                                          IdentityConfig(name="N", maker="M", templates=str(path)))  # fmt: skip

    assert conversations == [[{"role": "user", "content": "名字？"}, {"role": "assistant", "content": "N，来自M"}]]


def test_truncated_away_answer_is_counted(tokenizer):
    long_prompt = [{"role": "user", "content": "很长的问题。" * 50}, {"role": "assistant", "content": "短答"}]
    short = [{"role": "user", "content": "问"}, {"role": "assistant", "content": "答"}]

    source = tokenize_source("s", [long_prompt, short], tokenizer, cutoff_len=64, stats={"skipped": {}})

    assert len(source) == 1
    assert source.stats["truncated"] == 1
    assert source.stats["skipped"] == {"empty assistant after truncation": 1}
    ids, mask = source.sample(0)
    assert (ids.tolist(), mask.tolist()) == encode_chat(tokenizer, short)


def test_mixture_shares_per_epoch():
    sizes, weights = [1000, 5000], [0.8, 0.2]

    first = draw_epoch(sizes, weights, samples_per_epoch=1000, seed=0, epoch=0)
    second = draw_epoch(sizes, weights, samples_per_epoch=1000, seed=0, epoch=1)

    assert np.bincount(first[:, 0]).tolist() == [800, 200]
    assert len(set(first[first[:, 0] == 0, 1].tolist())) == 800  # no repeats within a pass
    assert set(first[first[:, 0] == 1, 1].tolist()) != set(second[second[:, 0] == 1, 1].tolist())
    assert np.array_equal(first, draw_epoch(sizes, weights, samples_per_epoch=1000, seed=0, epoch=0))


def test_mixture_upsamples_small_source():
    order = draw_epoch([3, 100], [0.5, 0.5], samples_per_epoch=20, seed=1, epoch=0)

    small = order[order[:, 0] == 0, 1].tolist()
    assert len(small) == 10
    assert sorted(Counter(small).values()) == [3, 3, 4]  # three whole passes, then one more sample


def test_unweighted_epoch_takes_every_sample_once():
    order = draw_epoch([4, 3], None, None, seed=0, epoch=2)

    assert sorted(map(tuple, order.tolist())) == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (1, 2)]


def test_pack_rows_respects_capacity():
    lengths = np.array([5, 5, 9, 2, 11, 3])

    rows = pack_rows(lengths, capacity=10)

    assert rows == [[0, 1], [2, 3], [4], [5]]
    assert sum(rows, []) == list(range(len(lengths)))
    assert all(sum(lengths[row] - 1) <= 10 for row in rows)


def test_collate_packed_row_keeps_segments_apart(tokenizer):
    first = encode_chat(tokenizer, [{"role": "user", "content": "一"}, {"role": "assistant", "content": "好"}])
    second = encode_chat(tokenizer, [{"role": "user", "content": "二"}, {"role": "assistant", "content": "行"}])
    samples = [(np.array(ids), np.array(mask)) for ids, mask in (first, second)]

    batch = collate_rows([samples, samples[:1]], pad_id=tokenizer.pad_id)

    n1, n2 = len(first[0]) - 1, len(second[0]) - 1
    assert batch["input_ids"].shape == (2, n1 + n2)
    assert batch["segment_ids"][0].tolist() == [1] * n1 + [2] * n2
    assert batch["position_ids"][0].tolist() == list(range(n1)) + list(range(n2))
    assert batch["attention_mask"][1].tolist() == [1] * n1 + [0] * n2
    assert batch["segment_ids"][1].tolist() == [1] * n1 + [0] * n2
    # Labels are the next supervised token; the last input of a segment has none, so no
    # target ever crosses into the next sample.
    expected = [t if m else IGNORE_INDEX for t, m in zip(first[0][1:], first[1][1:])]
    assert batch["labels"][0, :n1].tolist() == expected
    assert batch["labels"][0, n1 - 1].item() == IGNORE_INDEX
    assert (batch["labels"][1, n1:] == IGNORE_INDEX).all()
    assert (batch["input_ids"][1, n1:] == tokenizer.pad_id).all()


def test_labels_keep_end_of_turn_not_padding(tokenizer):
    ids, mask = encode_chat(tokenizer, [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}])

    batch = collate_rows([[(np.array(ids), np.array(mask))], [(np.array(ids[:5]), np.array(mask[:5]))]],
                         pad_id=tokenizer.pad_id)  # fmt: skip

    targets = batch["labels"][0][batch["labels"][0] != IGNORE_INDEX].tolist()
    assert targets == tokenizer.encode("a") + [tokenizer.special_ids["<|im_end|>"]]
    assert tokenizer.pad_id not in batch["labels"].tolist()
    assert tokenizer.pad_id != tokenizer.special_ids["<|im_end|>"]


def _mixture_config(tmp_path, **settings):
    write_jsonl(tmp_path / "zh.jsonl", [{"instruction": f"问题{i}", "output": f"答案{i}"} for i in range(10)])
    write_jsonl(tmp_path / "en.jsonl", [{"instruction": f"Question {i}", "output": f"Answer {i}"} for i in range(6)])
    sources = [SFTSourceConfig(path=str(tmp_path / "zh.jsonl"), weight=0.8),
               SFTSourceConfig(path=str(tmp_path / "en.jsonl"), weight=0.2)]  # fmt: skip
    return SFTDataConfig(sources=sources, cutoff_len=64, epochs=2, samples_per_epoch=10, **settings)


def _flatten(local_batch):
    """The rows of a batch as token lists without padding."""
    return [ids[mask.bool()].tolist() for ids, mask in zip(local_batch["input_ids"], local_batch["attention_mask"])]


@pytest.mark.parametrize("packing", [False, True])
def test_batches_resume_after_any_step(tmp_path, tokenizer, packing):
    config = _mixture_config(tmp_path, packing=packing)
    sources = load_sources(config, tokenizer)

    full = SFTBatches(sources, config, tokenizer.pad_id, global_batch_size=4)
    steps = [(_flatten(batches), state) for batches, state in full]

    assert len(steps) == full.num_steps
    for cut in range(len(steps)):
        resumed = SFTBatches(sources, config, tokenizer.pad_id, global_batch_size=4)
        resumed.load_state_dict(steps[cut][1])
        assert [_flatten(b) for b, _ in resumed] == [rows for rows, _ in steps[cut + 1 :]]


def test_batches_split_across_ranks(tmp_path, tokenizer):
    config = _mixture_config(tmp_path)
    sources = load_sources(config, tokenizer)
    single = SFTBatches(sources, config, tokenizer.pad_id, global_batch_size=4)
    ranks = [SFTBatches(sources, config, tokenizer.pad_id, 4, rank=r, world_size=2) for r in range(2)]

    for (whole, _), (part0, _), (part1, _) in zip(single, *ranks):
        assert _flatten(whole) == _flatten(part0) + _flatten(part1)


def test_epoch_sizes_and_wraparound(tmp_path, tokenizer):
    config = _mixture_config(tmp_path)
    sources = load_sources(config, tokenizer)

    batches = SFTBatches(sources, config, tokenizer.pad_id, global_batch_size=4)

    assert batches.steps_per_epoch == [3, 3]  # 10 samples per epoch, 4 per step
    rows = batches.epoch_rows(0)
    assert batches.step_rows(0, 2) == rows[8:10] + rows[0:2]


def test_resume_rejects_other_data(tmp_path, tokenizer):
    config = _mixture_config(tmp_path)
    batches = SFTBatches(load_sources(config, tokenizer), config, tokenizer.pad_id, 4)
    state = batches.state_dict()
    config.seed = 7

    other = SFTBatches(load_sources(config, tokenizer), config, tokenizer.pad_id, 4)

    with pytest.raises(ValueError, match="changed since the checkpoint"):
        other.load_state_dict(state)


def test_config_validation_lists_problems():
    config = SFTDataConfig(
        sources=[SFTSourceConfig(path=None, weight=1.0), SFTSourceConfig(path="x", format="csv")], cutoff_len=1
    )

    problems = config.validate()

    assert "data.sources[0].path is missing" in problems
    assert any("data.sources[1].format" in p for p in problems)
    assert any("weight on every source" in p for p in problems)
    assert "data.cutoff_len must be at least 2" in problems
