import json
from pathlib import Path

import pytest

from steel.cli import main
from steel.data.tokenize import TokenizeConfig, run_tokenize


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("inspect")
    data = root / "docs.jsonl"
    docs = [{"text": f"第{i}篇：今天天气晴朗。Document {i} is short."} for i in range(6)]
    data.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    output = root / "shards"
    run_tokenize(TokenizeConfig(inputs=[data], output=output, num_workers=1, val_docs=1))
    return output


@pytest.mark.parametrize("value", ["-5", "0"])
def test_inspect_rejects_non_positive_tokens(shard_dir, capsys, value):
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "inspect", str(shard_dir), f"--tokens={value}"])

    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "--tokens" in error
    assert f"must be a positive integer, got {value}" in error


def test_inspect_rejects_non_integer_tokens(shard_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "inspect", str(shard_dir), "--tokens", "ten"])

    assert exit_info.value.code == 2
    assert "invalid integer 'ten'" in capsys.readouterr().err


def test_inspect_rejects_negative_offset(shard_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "inspect", str(shard_dir), "--offset=-3"])

    assert exit_info.value.code == 2
    assert "must be 0 or more, got -3" in capsys.readouterr().err


def test_inspect_rejects_offset_past_end(shard_dir):
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "inspect", str(shard_dir), "--offset", "1000000"])

    assert "past the end" in str(exit_info.value.code)


def test_inspect_decodes_requested_window(shard_dir, capsys):
    assert main(["data", "inspect", str(shard_dir), "--offset", "2", "--tokens", "5"]) == 0

    out = capsys.readouterr().out
    window = json.loads(out.split("---\n", 2)[1].splitlines()[0])
    assert len(window) == 5
    assert "tokens 2..7" in out
