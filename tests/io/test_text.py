"""read_text: lines, blank lines, line ends, compression, decode errors."""

from __future__ import annotations

import bz2

import pytest

import torchray_loader as rd
from torchray_loader.errors import ReadError
from torchray_loader.io.errors import read_skips


def test_one_row_per_line_in_file_order(tmp_path):
    (tmp_path / "a.txt").write_text("first\nsecond\n\nthird")
    (tmp_path / "b.txt").write_bytes(b"crlf one\r\ncrlf two\r\n")
    ds = rd.read_text(str(tmp_path))
    assert [r["text"] for r in ds.take_all()] == ["first", "second", "third", "crlf one", "crlf two"]
    assert str(ds.schema()) == "Column  Type\n------  ----\ntext    string"


def test_keep_empty_lines_and_encoding(tmp_path):
    (tmp_path / "a.txt").write_bytes("é\n\nü\n".encode("latin-1"))
    ds = rd.read_text(str(tmp_path), encoding="latin-1", drop_empty_lines=False)
    assert [r["text"] for r in ds.take_all()] == ["é", "", "ü"]
    with pytest.raises(LookupError):
        rd.read_text(str(tmp_path), encoding="no-such-codec")


def test_compressed_and_include_paths(tmp_path):
    (tmp_path / "a.txt.bz2").write_bytes(bz2.compress(b"x\ny\n"))
    rows = rd.read_text(str(tmp_path), include_paths=True).take_all()
    assert rows == [
        {"text": "x", "path": f"{tmp_path}/a.txt.bz2"},
        {"text": "y", "path": f"{tmp_path}/a.txt.bz2"},
    ]


def test_undecodable_line_names_file_and_line(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"ok\nstill ok\nbad \xff\nfine\n")
    with pytest.raises(ReadError, match=r"a\.txt: row 3: cannot decode as utf-8"):
        rd.read_text(str(tmp_path)).take_all()
    ds = rd.read_text(str(tmp_path), on_read_error="skip", read_error_budget=1)
    assert [r["text"] for r in ds.take_all()] == ["ok", "still ok", "fine"]
    assert [s.row for s in read_skips(ds)] == [3]


def test_utf8_bom_is_dropped(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"\xef\xbb\xbfhello\n")
    assert rd.read_text(str(tmp_path)).take_all() == [{"text": "hello"}]


def test_lines_are_cut_as_str_splitlines_cuts_them(tmp_path):
    """As Ray: a lone \\r (old Mac files) and the Unicode line boundaries end lines too."""
    (tmp_path / "a.txt").write_text("a\rb\r\nc\u2028d\n\ne", newline="")
    rows = rd.read_text(str(tmp_path), drop_empty_lines=False).take_all()
    assert [r["text"] for r in rows] == ["a", "b", "c", "d", "", "e"]
