import subprocess
import sys

from steel.cli import COMMANDS, main


def test_overview_lists_every_command(capsys):
    assert main(["--help"]) == 0
    output = capsys.readouterr().out
    for words, _, _ in COMMANDS:
        assert " ".join(words) in output


def test_unknown_command_fails(capsys):
    assert main(["nonsense"]) == 2
    assert "unknown command 'nonsense'" in capsys.readouterr().err


def test_group_without_command_lists_group(capsys):
    assert main(["data"]) == 0
    output = capsys.readouterr().out
    assert "data convert" in output
    assert "pretrain" not in output


def test_every_command_has_parser_and_entry():
    # Every table entry must resolve to a real `<name>_parser` / `<name>` pair.
    for words, target, _ in COMMANDS:
        result = subprocess.run(
            [sys.executable, "-m", "steel", *words, "--help"], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, f"steel {' '.join(words)} --help failed:\n{result.stderr}"
        assert "usage: steel " + " ".join(words) in result.stdout


def test_options_may_precede_positional_overrides(capsys):
    # `steel pretrain RECIPE --print-config key=value`: an option between the recipe and the overrides.
    from steel.resources import recipe_path

    assert main(["pretrain", str(recipe_path("pretrain-tiny.yaml")), "--print-config", "optimizer.lr=0.00123"]) == 0
    assert "lr: 0.00123" in capsys.readouterr().out
