"""`steel export` rejects output paths it cannot write before it loads the model."""

import pytest

from steel.cli import main


@pytest.mark.parametrize("target,expected", [
    ("file", "file exists and is not a directory"),
    ("file/sub", "file is not a directory, so"),
    ("blocked", "blocked.tmp exists and is not a directory"),
], ids=["file", "inside-file", "tmp-file"])
def test_export_rejects_file_output(tmp_path, target, expected):
    (tmp_path / "file").write_text("not a directory")
    (tmp_path / "blocked.tmp").write_text("not a directory")
    # The source does not exist either: the output path is checked first, so no model loads.
    with pytest.raises(SystemExit) as raised:
        main(["export", str(tmp_path / "absent-run"), str(tmp_path / target)])
    assert expected in str(raised.value)
    assert (tmp_path / "file").read_text() == "not a directory"
