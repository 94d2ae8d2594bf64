"""The command's lines about files stay one line each, whatever the file is called."""

from __future__ import annotations

import re

import numpy as np

from cli_helpers import no_traceback, run_downpool, save
from downpool.messages import fold, one_line


def test_control_characters_are_written_as_escapes():
    assert one_line("a\nb\rc\td\x1b[2Je\x7f\x85f\u2028g") == "a\\nb\\rc\\td\\x1b[2Je\\x7f\\x85f\\u2028g"
    assert one_line("übung 写真 café.png") == "übung 写真 café.png"  # printable text as it is


def test_a_file_name_cannot_print_a_fake_line(tmp_path):
    """A newline in a name, followed by what looks like a summary: the error stays on one
    line, and the only summary is the real one."""
    fake = "x\ndownpool: 5 done, 0 skipped, 0 failed in 0.1 s\n.png"
    (tmp_path / fake).write_bytes(b"not an image")
    save(tmp_path / "ok\x1b[31m.png", np.full((8, 8, 3), 90, np.uint8))
    result = run_downpool("shrink", tmp_path, "-o", tmp_path / "out", "-m", "avg")
    no_traceback(result)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    summaries = [line for line in lines if re.match(r"downpool: \d+ done, ", line)]
    assert len(summaries) == 1 and summaries[0].startswith("downpool: 1 done, 0 skipped, 1 failed")
    [error] = [line for line in lines if line.startswith("downpool: error: ")]
    assert "x\\ndownpool: 5 done, 0 skipped, 0 failed in 0.1 s\\n.png: " in error
    assert "\x1b" not in result.stderr
    assert (tmp_path / "out" / "ok\x1b[31m.png").is_file()  # the name itself is kept


def test_fold_puts_a_failed_files_words_in_its_error():
    error, warnings = fold("corrupt PNG file (its data is damaged)",
                           ["libvips: IDAT: CRC error", "a warning", "a warning"],
                           ["tempfile.tif: Unknown field"])
    assert error == ("corrupt PNG file (its data is damaged; IDAT: CRC error) "
                     "(libtiff: Unknown field)")
    assert warnings == ("a warning",)
    assert fold(None, ["a"], ["tempfile.tif: b"]) == (None, ("a", "libtiff: b"))
