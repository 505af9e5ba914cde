import json
import random

import pytest

from steel.cli import main
from steel.tokenizer import load_tokenizer

CORPUS = [
    "北京是中华人民共和国的首都，也是全国的政治中心和文化中心。",
    "上海是中国最大的经济中心城市之一，位于长江入海口。",
    "The capital of France is Paris, a city on the Seine.",
    "def add(a, b):\n    return a + b\n",
    "机器学习是人工智能的一个分支，研究计算机如何从数据中学习。",
    "Language models predict the next token given the previous ones.",
]


def _random_unicode(rng: random.Random, length: int) -> str:
    ranges = [(0x20, 0x7E), (0x4E00, 0x9FFF), (0x1F300, 0x1FAFF), (0x0300, 0x036F), (0xF900, 0xFAFF),
              (0x20000, 0x2A6DF), (0x00, 0x1F), (0xAC00, 0xD7A3), (0x0400, 0x04FF), (0xE000, 0xF8FF)]
    chars = []
    for _ in range(length):
        low, high = rng.choice(ranges)
        chars.append(chr(rng.randint(low, high)))
    return "".join(chars)


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("bpe")
    corpus = root / "corpus.jsonl"
    with open(corpus, "w", encoding="utf-8") as f:
        for i in range(300):
            f.write(json.dumps({"text": CORPUS[i % len(CORPUS)] + f" 第{i}段 paragraph {i}"}, ensure_ascii=False) + "\n")
        f.write('{"no_text": 1}\n')
    output = root / "tokenizer"
    assert main(["tokenizer", "train", str(corpus), "--vocab-size", "600", "--output", str(output)]) == 0
    return output


def test_trained_directory_loads_in_transformers(trained_dir):
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(str(trained_dir))
    steel = load_tokenizer(trained_dir)
    assert hf.chat_template == steel.chat_template
    assert "You are a helpful assistant." in hf.chat_template
    assert hf.eos_token == "<|im_end|>"
    assert hf.encode("北京 Paris", add_special_tokens=False) == steel.encode("北京 Paris")


def test_trained_vocab_and_special_tokens(trained_dir):
    tokenizer = load_tokenizer(trained_dir)
    assert tokenizer.vocab_size <= 600
    assert tokenizer.vocab_size > 259
    assert tokenizer.special_ids == {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2}
    assert tokenizer.eos_id == 2
    assert tokenizer.pad_id == 0
    # Merges were learned: a frequent Chinese phrase takes fewer tokens than its UTF-8 bytes.
    assert len(tokenizer.encode("中华人民共和国")) < len("中华人民共和国".encode())


def test_trained_round_trip_any_unicode(trained_dir):
    tokenizer = load_tokenizer(trained_dir)
    rng = random.Random(0)
    texts = [_random_unicode(rng, rng.randint(0, 60)) for _ in range(300)]
    texts += ["e\u0301 decomposed", "\uf900\ufa0e", "\r\n\t  ", "<|endoftext|><|im_start|>", "\x00\x01"]
    for text in texts:
        assert tokenizer.decode(tokenizer.encode(text)) == text
    assert [tokenizer.decode(ids) for ids in tokenizer.encode_batch(texts)] == texts


def test_trained_special_text_is_ordinary(trained_dir):
    tokenizer = load_tokenizer(trained_dir)
    text = "x <|endoftext|> y <|im_start|>user\n<|im_end|>"
    assert not set(tokenizer.encode(text)) & {0, 1, 2}
    assert not set(tokenizer.encode_batch([text])[0]) & {0, 1, 2}
    assert tokenizer.encode(text, allow_special=True).count(0) == 1
    assert tokenizer.encode(text, allow_special=True).count(2) == 1


def test_train_rejects_tiny_vocab(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"text": "abc"}\n')
    with pytest.raises(SystemExit, match="at least 259"):
        main(["tokenizer", "train", str(corpus), "--vocab-size", "100", "--output", str(tmp_path / "t")])


def test_train_without_text_fails(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"content": "abc"}\n')
    with pytest.raises(SystemExit, match="no documents with a 'text' field"):
        main(["tokenizer", "train", str(corpus), "--vocab-size", "300", "--output", str(tmp_path / "t")])


def test_directory_name_is_absolute(trained_dir, monkeypatch):
    monkeypatch.chdir(trained_dir.parent)
    tokenizer = load_tokenizer(trained_dir.name)
    assert tokenizer.name == str(trained_dir.resolve())
    assert tokenizer.identity()["name"] == tokenizer.name
    assert load_tokenizer(tokenizer.name).identity() == tokenizer.identity()


def test_other_special_tokens_are_exposed(trained_dir, tmp_path):
    from tokenizers import AddedToken, Tokenizer

    backend = Tokenizer.from_file(str(trained_dir / "tokenizer.json"))
    backend.add_special_tokens([AddedToken("</s>", special=True, normalized=False)])
    directory = tmp_path / "with-eos"
    directory.mkdir()
    backend.save(str(directory / "tokenizer.json"))

    tokenizer = load_tokenizer(directory)
    eos = tokenizer.special_ids["</s>"]
    assert eos == backend.token_to_id("</s>")
    assert eos not in tokenizer.encode("a </s> b")
    assert tokenizer.encode("a</s>", allow_special=True)[-1] == eos


def test_train_records_vocab_sizes(trained_dir):
    training = json.loads((trained_dir / "steel_tokenizer.json").read_text())["training"]
    tokenizer = load_tokenizer(trained_dir)

    assert training["requested_vocab_size"] == 600
    assert training["trained_vocab_size"] == tokenizer.vocab_size
    assert training["documents"] == 300
    assert training["min_frequency"] == 2


def test_train_warns_when_corpus_too_small(tmp_path, caplog, capsys):
    corpus = tmp_path / "tiny.jsonl"
    corpus.write_text('{"text": "你好，世界"}\n{"text": "hello world"}\n', encoding="utf-8")
    output = tmp_path / "tokenizer"

    with caplog.at_level("WARNING", logger="steel.tokenizer.train"):
        assert main(["tokenizer", "train", str(corpus), "--vocab-size", "5000", "--output", str(output)]) == 0

    trained = load_tokenizer(output).vocab_size
    assert trained < 5000
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == 1
    assert f"only {trained} of the 5000 requested tokens" in warnings[0]
    assert "Train on more text" in warnings[0]
    assert f"--vocab-size {trained} or less" in warnings[0]
    assert "fewer than the requested 5000" in capsys.readouterr().out

    training = json.loads((output / "steel_tokenizer.json").read_text())["training"]
    assert training["requested_vocab_size"] == 5000
    assert training["trained_vocab_size"] == trained
    assert training["documents"] == 2
    assert training["characters"] == len("你好，世界") + len("hello world")


def test_train_reaching_vocab_does_not_warn(tmp_path, caplog):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": text}, ensure_ascii=False) + "\n" for text in CORPUS * 5), encoding="utf-8")

    with caplog.at_level("WARNING", logger="steel.tokenizer.train"):
        assert main(["tokenizer", "train", str(corpus), "--vocab-size", "270", "--output", str(tmp_path / "t")]) == 0

    assert load_tokenizer(tmp_path / "t").vocab_size == 270
    assert not [record for record in caplog.records if record.levelname == "WARNING"]


def test_lone_surrogate_raises_value_error(trained_dir):
    tokenizer = load_tokenizer(trained_dir)
    # Python decodes the GBK bytes of 你好 as UTF-8 with surrogateescape to these characters.
    text = b"\xc4\xe3\xba\xc3".decode("utf-8", "surrogateescape")
    with pytest.raises(ValueError, match=r"character 0 \('\\udcc4'\).*not valid UTF-8"):
        tokenizer.encode(text)
    with pytest.raises(ValueError, match=r"text 1, character 2"):
        tokenizer.encode_batch(["ok", "ab\udcff"])


def test_find_lone_surrogate_positions():
    from steel.tokenizer import find_lone_surrogate

    assert find_lone_surrogate("你好 hello") is None
    assert find_lone_surrogate("") is None
    assert find_lone_surrogate("ab\udcffc") == 2
    assert find_lone_surrogate("\ud83d") == 0
