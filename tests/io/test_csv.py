"""read_csv / write_csv: round trip, pyarrow options, compression, ragged rows, unwritable columns."""

from __future__ import annotations

import gzip
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

import torchray_loader as rd
from torchray_loader.errors import ErrorBudgetExceeded, ReadError
from torchray_loader.io.errors import read_skips
from torchray_loader.io.write import write_blocks

RAGGED = "a,b,c\n1,2,3\n4,5\n7,8,9\n10,11,12,13\n"


def table(start: int, n: int) -> pa.Table:
    ids = np.arange(start, start + n)
    return pa.table({"id": ids, "score": ids / 4.0, "name": [f"n{i}" for i in ids], "flag": ids % 2 == 0})


def test_round_trip(tmp_path):
    blocks = [table(0, 5), table(5, 7)]
    files = write_blocks(blocks, "csv", str(tmp_path))
    assert [os.path.basename(f) for f in files] == ["part-000000.csv", "part-000001.csv"]
    back = rd.read_csv(str(tmp_path))
    assert back.take_all() == pa.concat_tables(blocks).to_pylist()


def test_dataset_write_csv_round_trip(tmp_path):
    ds = rd.from_items([{"x": i, "y": f"s{i}"} for i in range(20)], override_num_blocks=4)
    ds.write_csv(f"local://{tmp_path}")
    assert rd.read_csv(f"file://{tmp_path}").take_all() == ds.take_all()


def test_options_pass_through(tmp_path):
    (tmp_path / "a.csv").write_text("x;y\n1;a\n2;b\n")
    ds = rd.read_csv(
        str(tmp_path),
        parse_options=pacsv.ParseOptions(delimiter=";"),
        convert_options=pacsv.ConvertOptions(column_types={"x": pa.float32()}),
    )
    assert ds.take_all() == [{"x": 1.0, "y": "a"}, {"x": 2.0, "y": "b"}]
    assert str(ds.schema().types[0]) == "float"
    with pytest.raises(TypeError, match="parse_options"):
        rd.read_csv(str(tmp_path), parse_options={"delimiter": ";"})


def test_write_options(tmp_path):
    write_blocks([table(0, 2)], "csv", str(tmp_path), delimiter="|")
    assert (tmp_path / "part-000000.csv").read_text().splitlines()[0] == '"id"|"score"|"name"|"flag"'


def test_gzip_files_are_decompressed(tmp_path):
    with gzip.open(tmp_path / "a.csv.gz", "wt") as f:
        f.write("x\n1\n2\n")
    assert rd.read_csv(str(tmp_path)).take_all() == [{"x": 1}, {"x": 2}]


def test_ragged_row_names_file_and_line(tmp_path):
    (tmp_path / "r.csv").write_text(RAGGED)
    with pytest.raises(ReadError, match=r"r\.csv: row 3: expected 3 columns, got 2: '4,5'"):
        rd.read_csv(str(tmp_path)).take_all()


@pytest.mark.parametrize("text, line", [
    ("id,v\n1,a\n\n\n5\n", 5),  # blank lines are no records but are lines
    ('id,v\n1,"a\nb"\n5\n', 4),  # a quoted value spanning two lines
    ("id,v\r\n1,a\r\n\r\n5\r\n", 4),  # CRLF
    ("id,v\n5\n1,a\n\n5\n", 2),  # the same text twice: the first is the first bad row
])
def test_ragged_rows_are_named_by_their_line(tmp_path, text, line):
    (tmp_path / "r.csv").write_bytes(text.encode())
    parse = pacsv.ParseOptions(newlines_in_values=True)
    with pytest.raises(ReadError, match=rf"r\.csv: row {line}: expected 2 columns, got 1: '5'"):
        rd.read_csv(str(tmp_path), parse_options=parse).take_all()
    ds = rd.read_csv(str(tmp_path), parse_options=parse, on_read_error="skip", read_error_budget=-1)
    ds.take_all()
    assert [s.row for s in read_skips(ds)][:1] == [line]
    if text.count("5\n") == 2:
        assert [s.row for s in read_skips(ds)] == [2, 5]


def test_ragged_rows_are_skipped_within_budget(tmp_path):
    (tmp_path / "r.csv").write_text(RAGGED)
    ds = rd.read_csv(str(tmp_path), on_read_error="skip", read_error_budget=2)
    assert ds.take_all() == [{"a": 1, "b": 2, "c": 3}, {"a": 7, "b": 8, "c": 9}]
    assert [(os.path.basename(s.path), s.row) for s in read_skips(ds)] == [("r.csv", 3), ("r.csv", 5)]
    with pytest.raises(ErrorBudgetExceeded, match="read_error_budget=1"):
        rd.read_csv(str(tmp_path), on_read_error="skip", read_error_budget=1).take_all()


def test_conversion_error_names_the_file(tmp_path):
    (tmp_path / "bad.csv").write_text("x\n1\n2\n")
    with pytest.raises(ReadError, match=r"bad\.csv: .*invalid value 'oops'"):
        (tmp_path / "bad.csv").write_text("x\n1\noops\n")
        rd.read_csv(
            str(tmp_path), convert_options=pacsv.ConvertOptions(column_types={"x": pa.int64()})
        ).take_all()


def test_tensor_column_cannot_be_written(tmp_path):
    ds = rd.from_numpy(np.zeros((2, 3, 3)))
    with pytest.raises(TypeError, match=r"part-000000\.csv: column 'data'.*CSV holds flat values"):
        ds.write_csv(str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_default_extensions_skip_other_files(tmp_path):
    (tmp_path / "a.csv").write_text("x\n1\n")
    (tmp_path / "README.md").write_text("# not data\n")
    assert rd.read_csv(str(tmp_path)).take_all() == [{"x": 1}]


def test_every_file_is_read_whatever_its_name_as_in_ray(tmp_path):
    (tmp_path / "part-00000").write_text("x,y\n1,2\n")
    (tmp_path / "data.txt").write_text("x,y\n3,4\n")
    assert rd.read_csv(str(tmp_path / "part-00000")).take_all() == [{"x": 1, "y": 2}]
    assert sorted(r["x"] for r in rd.read_csv(str(tmp_path)).take_all()) == [1, 3]
    assert rd.read_csv(str(tmp_path), file_extensions=["txt"]).take_all() == [{"x": 3, "y": 4}]


@pytest.fixture
def streamed(monkeypatch):
    """Files of 1 kB or more are parsed as they are read, 1,000 bytes at a time."""
    from torchray_loader.io import paths

    monkeypatch.setattr(paths, "STREAM_MIN_BYTES", 1024)
    monkeypatch.setattr(paths, "STREAM_CHUNK_BYTES", 1000)


def _long_csv(rows: int = 2000) -> str:
    return "id,score,name\n" + "".join(f"{i},{i / 4},n{i}\n" for i in range(rows))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_streamed_file_gives_the_rows_of_a_whole_read(tmp_path, monkeypatch, fresh_data_context, num_workers):
    from torchray_loader.io import paths

    fresh_data_context.num_workers = num_workers
    (tmp_path / "a.csv").write_text(_long_csv())
    with gzip.open(tmp_path / "b.csv.gz", "wt") as f:
        f.write(_long_csv(1500))
    whole = rd.read_csv(str(tmp_path))
    monkeypatch.setattr(paths, "STREAM_MIN_BYTES", 1024)
    monkeypatch.setattr(paths, "STREAM_CHUNK_BYTES", 1000)
    streamed = rd.read_csv(str(tmp_path))
    assert streamed.take_all() == whole.take_all()
    assert streamed.schema() == whole.schema()
    assert len(streamed.take_all()) == 3500


@pytest.mark.parametrize("mode", ["raise", "skip"])
def test_a_ragged_row_of_a_streamed_file_is_named_by_its_line(tmp_path, streamed, mode):
    lines = _long_csv().splitlines()
    lines[1500] = "7,8"
    (tmp_path / "a.csv").write_text("\n".join(lines) + "\n")
    if mode == "raise":
        with pytest.raises(ReadError, match=r"a\.csv: row 1501: expected 3 columns, got 2: '7,8'"):
            rd.read_csv(str(tmp_path)).take_all()
        return
    ds = rd.read_csv(str(tmp_path), on_read_error="skip", read_error_budget=1)
    assert len(ds.take_all()) == 1999
    assert [s.row for s in read_skips(ds)] == [1501]


def test_a_streamed_file_takes_its_types_from_its_first_chunk(tmp_path, streamed):
    """As Ray's open_csv: a later value of another type is an error that says what to do."""
    lines = _long_csv().splitlines()
    lines[1800] = "x,1.0,n"
    (tmp_path / "a.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ReadError, match=r"a\.csv: .*invalid value 'x'.*column_types"):
        rd.read_csv(str(tmp_path)).take_all()
    typed = rd.read_csv(str(tmp_path), convert_options=pacsv.ConvertOptions(column_types={"id": pa.string()}))
    assert typed.take_all()[1799:1801] == [{"id": "x", "score": 1.0, "name": "n"}, {"id": "1800", "score": 450.0, "name": "n1800"}]


def test_a_row_limit_stops_reading_a_streamed_file(tmp_path, streamed):
    (tmp_path / "a.csv").write_text(_long_csv() + "1,2\n")
    assert rd.read_csv(str(tmp_path)).take(2) == [{"id": 0, "score": 0.0, "name": "n0"}, {"id": 1, "score": 0.25, "name": "n1"}]
    with pytest.raises(ReadError, match="expected 3 columns"):
        rd.read_csv(str(tmp_path)).take_all()


def test_a_streamed_header_only_file_has_its_columns(tmp_path, streamed, monkeypatch):
    from torchray_loader.io import paths

    monkeypatch.setattr(paths, "STREAM_CHUNK_BYTES", 4096)  # the header fits in the first chunk
    (tmp_path / "a.csv").write_text("a," + "b" * 2000 + "\n")
    ds = rd.read_csv(str(tmp_path))
    assert ds.take_all() == [] and ds.schema().names == ["a", "b" * 2000]


def test_under_the_skip_policy_a_large_file_is_read_whole(tmp_path, streamed):
    """Skip mode holds a file's rows until its end anyway: a late wider value widens the column
    (as for a small file) instead of skipping the whole file."""
    lines = _long_csv().splitlines()
    lines[1800] = "2.5,1.0,n"
    (tmp_path / "a.csv").write_text("\n".join(lines) + "\n")
    rows = rd.read_csv(str(tmp_path), on_read_error="skip", read_error_budget=1).take_all()
    assert len(rows) == 2000 and rows[1799]["id"] == 2.5 and rows[1800]["id"] == 1800.0


def test_a_streamed_error_says_what_streaming_changes_and_only_then(tmp_path, streamed):
    long_row = "1," + "v" * 3000 + ",n\n"
    (tmp_path / "a.csv").write_text(_long_csv() + long_row)
    with pytest.raises(ReadError, match=r"a\.csv: .*read_options=pyarrow.csv.ReadOptions\(block_size=\.\.\.\)"):
        rd.read_csv(str(tmp_path)).take_all()
    (tmp_path / "a.csv").write_text("id,score,name\nx,1,n\n" + _long_csv()[14:])
    typed = pacsv.ConvertOptions(column_types={"id": pa.int64()})
    with pytest.raises(ReadError, match=r"invalid value 'x'$"):  # no hint: the caller gave the type
        rd.read_csv(str(tmp_path), convert_options=typed).take_all()


def test_a_corrupt_streamed_gzip_file_is_a_read_error(tmp_path, streamed, monkeypatch, fresh_data_context):
    """Garbage rows before the decompressor notices: a ReadError naming the file, and the row
    handler's look-up of the line (which re-reads the file) does not fail inside pyarrow."""
    data = bytearray(gzip.compress(("a,b\n" + "".join(f"{i},q{i}\n" for i in range(20000))).encode()))
    data[len(data) // 2 : len(data) // 2 + 50] = bytes(50)
    (tmp_path / "a.csv.gz").write_bytes(bytes(data))
    from torchray_loader.io import paths

    monkeypatch.setattr(paths, "STREAM_CHUNK_BYTES", 4096)
    fresh_data_context.num_workers = 0  # the hook below sees this process only
    unraisable: list = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)  # pyarrow reports a callback's error so
    with pytest.raises(ReadError, match=r"a\.csv\.gz: "):
        rd.read_csv(str(tmp_path)).take_all()
    assert unraisable == []


@pytest.mark.parametrize("ext, codec", [("zst", "zstd"), ("lz4", "lz4")])
@pytest.mark.parametrize("stream", [False, True])
def test_zstd_and_lz4_files_are_decompressed(tmp_path, monkeypatch, ext, codec, stream):
    """pyarrow's codecs, where fsspec would need the zstandard / lz4 packages."""
    from torchray_loader.io import paths

    if stream:
        monkeypatch.setattr(paths, "STREAM_MIN_BYTES", 1)
    with pa.CompressedOutputStream(str(tmp_path / f"a.csv.{ext}"), codec) as f:
        f.write(_long_csv(50).encode())
    assert rd.read_csv(str(tmp_path)).take(2) == [{"id": 0, "score": 0.0, "name": "n0"}, {"id": 1, "score": 0.25, "name": "n1"}]
    assert rd.read_text(str(tmp_path)).count() == 51
