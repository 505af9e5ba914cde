import json
import pickle
import unicodedata

import pytest

from steel.tokenizer import ENDOFTEXT, IM_END, IM_START, load_tokenizer
from steel.tokenizer.qwen import QWEN_CHAT_TEMPLATE, QWEN_SPECIAL_IDS, QWEN_VOCAB_SIZE

HARD_TEXTS = [
    "",
    "Hello, world! The quick brown fox jumps over the lazy dog.",
    "我爱北京天安门，天安门上太阳升。",
    "中文English混合mixed文本123，包含标点符号！？。",
    "def fibonacci(n: int) -> int:\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "#include <stdio.h>\nint main() {\n\tprintf(\"%d\\n\", 42);\n\treturn 0;\n}\r\n",
    "emoji 😀👍🏽👨‍👩‍👧‍👦🇨🇳 and 🤖",
    "rare CJK: 𠀀𠀁𪚥𰻞𰻝 龘 靐 齉",
    "".join(chr(c) for c in range(0xF900, 0xFA00)),
    "".join(chr(c) for c in range(0xFA00, 0xFB00)),
    "compatibility 豈更車賈滑串句龜 in a sentence 樂",
    "decomposed: e\u0301 a\u0300 o\u0308 n\u0303 Ame\u0301lie cafe\u0301",
    unicodedata.normalize("NFD", "한국어 텍스트 Ångström Café naïve"),
    "\u1100\u1161\u11a8 jamo sequence",
    "I'm sure they'll say we've done what you'd've DON'T IT'S",
    "numbers 1234567890 3.1415926 1,000,000 ２０２４年",
    "   leading spaces\n\n\n\ttabs\t\t and trailing   ",
    "\r\n\r\nwindows\r\nline ends\r\n",
    "full-width：“引号”、《书名号》…… ——破折号",
    "日本語のテキストとカタカナ",
    "Русский текст и العربية",
    "x" * 3000,
    "中" * 500,
]


@pytest.fixture(scope="module")
def qwen():
    return load_tokenizer("qwen")


@pytest.fixture(scope="module")
def exported_dir(qwen, tmp_path_factory):
    return qwen.save_pretrained(tmp_path_factory.mktemp("qwen-export"))


@pytest.fixture(scope="module")
def reference_hf(shared_dir):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(shared_dir / "tokenizers" / "qwen1.5"))


def _sample_texts(shared_dir, per_file=40):
    from steel.data.io import iter_records

    texts = []
    samples = shared_dir / "data" / "steel-samples"
    for path in sorted(samples.glob("*")):
        count = 0
        for _, record in iter_records(path, on_bad=lambda bad: None):
            for value in record.values():
                if isinstance(value, str) and value.strip():
                    texts.append(value[:4000])
            count += 1
            if count >= per_file:
                break
    return texts


def test_qwen_ids_match_hf_reference(qwen, reference_hf, shared_dir):
    texts = HARD_TEXTS + _sample_texts(shared_dir)
    assert len(texts) > 200
    for text in texts:
        expected = reference_hf.encode(text, add_special_tokens=False)
        assert qwen.encode(text) == expected, text[:80]


def test_qwen_batch_matches_single(qwen):
    assert qwen.encode_batch(HARD_TEXTS) == [qwen.encode(text) for text in HARD_TEXTS]


def test_qwen_special_ids_and_sizes(qwen):
    assert qwen.special_ids == {ENDOFTEXT: 151643, IM_START: 151644, IM_END: 151645}
    assert qwen.vocab_size == QWEN_VOCAB_SIZE == 151936
    assert qwen.eos_id == 151645
    assert qwen.pad_id == 151643
    assert qwen.name == "qwen"


def test_special_text_is_ordinary_text(qwen):
    text = "before <|endoftext|> middle <|im_start|>system\nyou<|im_end|> after"
    ids = qwen.encode(text)
    assert not set(ids) & set(QWEN_SPECIAL_IDS.values())
    assert qwen.decode(ids) == text
    assert not set(qwen.encode_batch([text])[0]) & set(QWEN_SPECIAL_IDS.values())


def test_allow_special_gives_special_ids(qwen):
    ids = qwen.encode("a<|endoftext|>b<|im_start|>c<|im_end|>", allow_special=True)
    assert ids.count(151643) == 1
    assert ids.count(151644) == 1
    assert ids.count(151645) == 1


def test_decode_round_trip_and_padding_ids(qwen):
    for text in HARD_TEXTS:
        assert qwen.decode(qwen.encode(text)) == unicodedata.normalize("NFC", text)
    ids = qwen.encode("你好")
    assert qwen.decode(ids + [151700, 151935]) == "你好"


def test_nfc_applied_before_bpe(qwen):
    assert qwen.encode("cafe\u0301") == qwen.encode("café")
    assert qwen.encode("\uf900") == qwen.encode(unicodedata.normalize("NFC", "\uf900"))


def test_identity_is_stable(qwen):
    identity = qwen.identity()
    assert identity["name"] == "qwen"
    assert len(identity["sha256"]) == 64
    assert load_tokenizer("qwen").identity() == identity


def test_qwen_pickles_for_worker_processes(qwen):
    copy = pickle.loads(pickle.dumps(qwen))
    assert copy.encode("你好 world") == qwen.encode("你好 world")


def test_chat_template_renders_like_reference(shared_dir, reference_hf):
    reference_config = json.loads((shared_dir / "tokenizers" / "qwen1.5" / "tokenizer_config.json").read_text())
    reference = reference_hf
    conversations = [
        [{"role": "user", "content": "你好"}],
        [{"role": "system", "content": "你是助手。"}, {"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}],
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "<|im_end|>"}],
    ]
    for messages in conversations:
        for add_generation_prompt in (False, True):
            expected = reference.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add_generation_prompt
            )
            actual = reference.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add_generation_prompt, chat_template=QWEN_CHAT_TEMPLATE
            )
            assert actual == expected
    assert "You are a helpful assistant." in QWEN_CHAT_TEMPLATE
    assert QWEN_CHAT_TEMPLATE == reference_config["chat_template"]


def test_export_matches_reference_files(exported_dir, shared_dir):
    tmp_path = exported_dir
    reference = shared_dir / "tokenizers" / "qwen1.5"
    assert json.loads((tmp_path / "vocab.json").read_text()) == json.loads((reference / "vocab.json").read_text())

    def merge_lines(path):
        return [line for line in path.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]

    assert merge_lines(tmp_path / "merges.txt") == merge_lines(reference / "merges.txt")


def test_export_loads_in_transformers(qwen, exported_dir):
    transformers = pytest.importorskip("transformers")
    tmp_path = exported_dir
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["chat_template"] == QWEN_CHAT_TEMPLATE
    assert config["eos_token"] == IM_END
    assert config["pad_token"] == ENDOFTEXT

    exported = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert exported.eos_token_id == 151645
    assert exported.pad_token_id == 151643
    for text in HARD_TEXTS:
        assert exported.encode(text, add_special_tokens=False) == qwen.encode(text)

    reloaded = load_tokenizer(tmp_path)
    assert reloaded.identity() == qwen.identity()
    assert reloaded.vocab_size == QWEN_VOCAB_SIZE
    assert reloaded.encode("a <|im_end|> b") == qwen.encode("a <|im_end|> b")
    assert reloaded.encode("a <|im_end|> b", allow_special=True) == qwen.encode("a <|im_end|> b", allow_special=True)


def test_to_hf_matches_tiktoken(qwen):
    hf = qwen.to_hf()
    assert hf.chat_template == QWEN_CHAT_TEMPLATE
    assert hf.eos_token_id == qwen.eos_id
    for text in HARD_TEXTS:
        assert hf.encode(text, add_special_tokens=False) == qwen.encode(text)


def test_hf_directory_without_tokenizer_json(shared_dir, qwen):
    directory = load_tokenizer(shared_dir / "tokenizers" / "qwen1.5")
    assert directory.special_ids == qwen.special_ids
    assert directory.eos_id == 151645
    for text in HARD_TEXTS[:12]:
        assert directory.encode(text) == qwen.encode(text)


def test_unknown_spec_raises():
    with pytest.raises(ValueError, match="unknown tokenizer"):
        load_tokenizer("no-such-tokenizer")


def test_qwen_matches_hf_on_random_unicode(qwen, reference_hf):
    import random

    rng = random.Random(1234)
    pieces = [
        (0x20, 0x7E), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x0300, 0x036F), (0x1100, 0x11FF),
        (0xAC00, 0xD7A3), (0x1F300, 0x1FAFF), (0x20000, 0x2A6DF), (0x3000, 0x303F), (0xFF00, 0xFFEF),
        (0x0400, 0x04FF), (0x0600, 0x06FF), (0x2000, 0x206F), (0x09, 0x0D), (0x30, 0x39),
    ]
    for _ in range(400):
        chars = []
        for _ in range(rng.randint(1, 40)):
            low, high = rng.choice(pieces)
            chars.append(chr(rng.randint(low, high)) * rng.choice([1, 1, 1, 3]))
        text = "".join(chars)
        assert qwen.encode(text) == reference_hf.encode(text, add_special_tokens=False), repr(text)
