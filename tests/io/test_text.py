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


@pytest.fixture
def streamed(monkeypatch):
    """Files of 1 kB or more are streamed, 1,000 bytes at a time (pieces end mid-line)."""
    from torchray_loader.io import paths

    monkeypatch.setattr(paths, "STREAM_MIN_BYTES", 1024)
    monkeypatch.setattr(paths, "STREAM_CHUNK_BYTES", 1000)


def _long_text() -> str:
    lines = [f"line {i} " + "x" * (i % 13) for i in range(3000)]
    lines[10] = lines[2000] = ""
    lines[11] = "  "
    return "\r\n".join(lines[:50]) + "\r\n" + "\n".join(lines[50:]) + "\n"


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("drop_empty_lines", [True, False])
def test_a_streamed_file_gives_the_lines_of_a_whole_read(tmp_path, monkeypatch, fresh_data_context, num_workers,
                                                         drop_empty_lines):
    from torchray_loader.io import paths

    fresh_data_context.num_workers = num_workers
    (tmp_path / "a.txt").write_bytes(b"\xef\xbb\xbf" + _long_text().encode())
    (tmp_path / "b.txt.bz2").write_bytes(bz2.compress(_long_text().encode()))
    whole = rd.read_text(str(tmp_path), drop_empty_lines=drop_empty_lines).take_all()
    monkeypatch.setattr(paths, "STREAM_MIN_BYTES", 1024)
    monkeypatch.setattr(paths, "STREAM_CHUNK_BYTES", 1000)
    assert rd.read_text(str(tmp_path), drop_empty_lines=drop_empty_lines).take_all() == whole
    assert whole[0] == {"text": "line 0 "} and len(whole) == 2 * (3000 - 3 * drop_empty_lines)


def test_a_streamed_file_names_the_line_that_does_not_decode(tmp_path, streamed):
    data = bytearray(_long_text().encode())
    bad_line = 2500
    at = data.index(f"line {bad_line - 1} ".encode())
    data[at] = 0xFF
    (tmp_path / "a.txt").write_bytes(bytes(data))
    with pytest.raises(ReadError, match=rf"a\.txt: row {bad_line}: cannot decode as utf-8"):
        rd.read_text(str(tmp_path)).take_all()
    ds = rd.read_text(str(tmp_path), on_read_error="skip", read_error_budget=1)
    assert len(ds.take_all()) == 3000 - 3 - 1
    assert [s.row for s in read_skips(ds)] == [bad_line]


def test_a_row_limit_stops_reading_a_streamed_file(tmp_path, streamed):
    """take() reads the first pieces only: a bad byte near the end of the file is never decoded."""
    (tmp_path / "a.txt").write_bytes(_long_text().encode() + b"bad \xff\n")
    assert rd.read_text(str(tmp_path)).take(3) == [{"text": f"line {i} " + "x" * i} for i in range(3)]
    with pytest.raises(ReadError, match="cannot decode"):
        rd.read_text(str(tmp_path)).take_all()


def test_utf16_files_are_not_cut_at_line_feed_bytes(tmp_path, streamed):
    """A 0x0A byte inside a UTF-16 character is no line end: such a file is read whole."""
    text = "\n".join(f"\u0a0a{i}" for i in range(500)) + "\n"
    (tmp_path / "a.txt").write_bytes(text.encode("utf-16"))
    rows = rd.read_text(str(tmp_path), encoding="utf-16").take_all()
    assert [r["text"] for r in rows] == [f"\u0a0a{i}" for i in range(500)]


@pytest.mark.parametrize("stream", [False, True])
def test_lone_carriage_returns_and_a_last_line_without_line_feed(tmp_path, monkeypatch, stream):
    """Old Mac files (lone CR) are cut into pieces too; under skip, a last line ending in another
    line boundary gives no extra empty line."""
    from torchray_loader.io import paths

    if stream:
        monkeypatch.setattr(paths, "STREAM_MIN_BYTES", 16)
        monkeypatch.setattr(paths, "STREAM_CHUNK_BYTES", 7)
    text = "\r".join(f"line {i}" for i in range(200)) + "\r"
    (tmp_path / "a.txt").write_text(text, newline="")
    assert [r["text"] for r in rd.read_text(str(tmp_path)).take_all()] == [f"line {i}" for i in range(200)]
    (tmp_path / "a.txt").write_bytes(b"bad \xff\nok\x0b")
    ds = rd.read_text(str(tmp_path), drop_empty_lines=False, on_read_error="skip", read_error_budget=1)
    assert ds.take_all() == [{"text": "ok"}]


def test_a_decode_error_names_the_encoding_the_caller_gave(tmp_path, streamed):
    (tmp_path / "a.txt").write_bytes(b"\xef\xbb\xbf" + _long_text().encode() + b"bad \xff\n")
    with pytest.raises(ReadError, match="cannot decode as utf-8-sig"):
        rd.read_text(str(tmp_path), encoding="utf-8-sig").take_all()


def test_only_the_file_start_loses_a_bom_when_streamed(tmp_path, monkeypatch):
    """Lines of a lone-CR file that start with U+FEFF keep it, as a whole read keeps them (every
    piece of such a file starts on line 1: counted in line feeds)."""
    from torchray_loader.io import paths

    (tmp_path / "a.txt").write_bytes(("".join(f"\ufeffx{i}\r" for i in range(200))).encode("utf-8"))
    whole = rd.read_text(str(tmp_path)).take_all()
    monkeypatch.setattr(paths, "STREAM_MIN_BYTES", 16)
    monkeypatch.setattr(paths, "STREAM_CHUNK_BYTES", 7)
    assert rd.read_text(str(tmp_path)).take_all() == whole
    assert whole[0] == {"text": "x0"} and whole[1] == {"text": "\ufeffx1"}
