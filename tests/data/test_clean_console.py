"""`steel data clean` keeps datatrove's log messages off the console unless --verbose is given."""

import json

import pytest

from steel.cli import main

PARAGRAPHS = [
    "今天天气很好，我们去公园散步。公园里的花都开了，很多人在拍照，孩子们在草地上放风筝。",
    "图书馆周末开放到晚上九点，借书需要带上读者证。新到的一批科普读物放在二楼的展示架上。",
]
DATATROVE_MARKERS = ("PIPELINE", "Launching pipeline", "Stats: All", "tasks completed")


@pytest.fixture
def inputs(tmp_path):
    paths = []
    for index, text in enumerate(PARAGRAPHS):
        path = tmp_path / f"part-{index}.jsonl"
        path.write_text(json.dumps({"text": text}, ensure_ascii=False) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def _clean(inputs, output, *extra):
    argv = ["data", "clean", "--recipe", "zh-web", *map(str, inputs), "--output", str(output), *extra]
    assert main(argv) == 0


@pytest.mark.parametrize("workers", ["1", "2"])
def test_datatrove_messages_go_to_log_file(inputs, tmp_path, capfd, workers):
    output = tmp_path / "out"
    _clean(inputs, output, "--workers", workers)
    captured = capfd.readouterr()

    for marker in DATATROVE_MARKERS:
        assert marker not in captured.err
        assert marker not in captured.out
    assert "recipe zh-web: 2 documents in, 2 out" in captured.out
    assert "stage clean: 100%" in captured.err
    assert "stage write: 100%" in captured.err

    datatrove_log = (output / "work" / "logs" / "datatrove.log").read_text(encoding="utf-8")
    assert "Stats: All 2 tasks" in datatrove_log
    task_log = (output / "work" / "logs" / "clean" / "logs" / "task_00000.log").read_text(encoding="utf-8")
    assert "Launching pipeline for rank=0" in task_log
    assert "steel: 11_alphanumeric_filter" in task_log


def test_verbose_shows_datatrove_messages(inputs, tmp_path, capfd):
    output = tmp_path / "out"
    _clean(inputs, output, "--workers", "1", "--verbose")
    captured = capfd.readouterr()

    for marker in ("PIPELINE", "Launching pipeline", "Stats: All 2 tasks"):
        assert marker in captured.err
    assert "recipe zh-web: 2 documents in, 2 out" in captured.out
    assert not (output / "work" / "logs" / "datatrove.log").exists()


def test_console_restored_after_clean(inputs, tmp_path, capfd):
    from datatrove.utils.logging import logger

    _clean(inputs, tmp_path / "out", "--workers", "1")
    capfd.readouterr()
    logger.info("datatrove message after the run")
    assert "datatrove message after the run" in capfd.readouterr().err
