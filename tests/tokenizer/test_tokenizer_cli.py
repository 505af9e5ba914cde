import json
import subprocess
import sys

from steel.cli import main


def test_encode_prints_json_ids(capsys):
    assert main(["tokenizer", "encode", "--tokenizer", "qwen", "你好，世界"]) == 0
    ids = json.loads(capsys.readouterr().out)
    assert ids == [108386, 3837, 99489]


def test_encode_special_only_when_allowed(capsys):
    main(["tokenizer", "encode", "<|im_end|>"])
    assert 151645 not in json.loads(capsys.readouterr().out)
    main(["tokenizer", "encode", "--allow-special", "<|im_end|>"])
    assert json.loads(capsys.readouterr().out) == [151645]


def test_decode_prints_text(capsys):
    assert main(["tokenizer", "decode", "--tokenizer", "qwen", "108386", "3837", "99489"]) == 0
    assert capsys.readouterr().out == "你好，世界\n"
    assert main(["tokenizer", "decode", "[108386, 3837]"]) == 0
    assert capsys.readouterr().out == "你好，\n"


def test_decode_rejects_bad_ids():
    result = subprocess.run(
        [sys.executable, "-m", "steel", "tokenizer", "decode", "12", "abc"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "invalid token ids" in result.stderr
    assert "Traceback" not in result.stderr


def test_decode_rejects_ids_outside_vocabulary():
    result = subprocess.run(
        [sys.executable, "-m", "steel", "tokenizer", "decode", "--tokenizer", "qwen", "12", "999999999"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert "999999999 outside the vocabulary" in result.stderr
    assert "Traceback" not in result.stderr


def test_export_writes_hf_directory(tmp_path, capsys):
    assert main(["tokenizer", "export", "qwen", str(tmp_path / "qwen")]) == 0
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json"):
        assert (tmp_path / "qwen" / name).is_file(), name
    config = json.loads((tmp_path / "qwen" / "tokenizer_config.json").read_text())
    assert config["eos_token"] == "<|im_end|>"
    assert config["pad_token"] == "<|endoftext|>"


def test_encode_rejects_gbk_input(monkeypatch, capsys):
    import io

    gbk = "你好".encode("gbk")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(gbk), encoding="utf-8", errors="surrogateescape"))
    assert main(["tokenizer", "encode"]) == 2
    assert "standard input is not valid UTF-8 (byte 0xc4 at character 0)" in capsys.readouterr().err

    # A command-line argument carries the same bytes as surrogates.
    assert main(["tokenizer", "encode", gbk.decode("utf-8", "surrogateescape")]) == 2
    assert "the text argument is not valid UTF-8" in capsys.readouterr().err


def test_train_reads_convert_output_directory(tmp_path, capsys):
    import pytest

    converted = tmp_path / "converted"
    converted.mkdir()
    lines = [json.dumps({"text": f"第{i}条：北京今天天气晴朗，人工智能正在快速发展。"}, ensure_ascii=False) for i in range(200)]
    (converted / "news-00000-0000.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (converted / "summary.json").write_text('{"records": 200}', encoding="utf-8")
    assert main(["tokenizer", "train", str(converted), "--vocab-size", "300", "--output", str(tmp_path / "tok")]) == 0
    assert "wrote" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="input file not found"):
        main(["tokenizer", "train", str(tmp_path / "nope.jsonl"), "--vocab-size", "300", "--output", str(tmp_path / "t2")])
