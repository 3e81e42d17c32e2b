"""Bad input files, for every reader: what the user sees.

Invariants (DESIGN.md promise 7, ``torchray_loader.io.errors``):

* with the default policy (``on_read_error="raise"``) an unreadable file raises
  :class:`~torchray_loader.errors.ReadError` whose ``path`` is the file (the message starts with
  it, and names the row or line where the format has them);
* with ``on_read_error="skip"`` the file (or only the bad row, for row formats) is dropped and logged,
  the good files' rows all arrive, ``read_skips(ds)`` lists exactly what was dropped, and one item
  more than ``read_error_budget`` raises :class:`~torchray_loader.errors.ErrorBudgetExceeded`
  listing them;
* a file that is valid but empty is not an error where the format allows emptiness (a JSON Lines or
  text file with no lines has no rows); where it does not (CSV without header, parquet, ``.npy``,
  images) a zero-byte file is a bad file like any other.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import pathlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.local import LocalFileSystem
from PIL import Image

import torchray_loader as rd
from torchray_loader.errors import ErrorBudgetExceeded, ReadError
from torchray_loader.io.errors import read_skips

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def inline(fresh_data_context):
    """Reads run in this process unless a test asks for workers: the policy is the same code."""
    fresh_data_context.num_workers = 0
    return fresh_data_context


# ----------------------------------------------------------------------------- good and bad files


def png_bytes(i: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((4, 4, 3), i, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3)).save(buf, "JPEG")
    return buf.getvalue()


def parquet_bytes(i: int) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table({"id": [2 * i, 2 * i + 1], "v": [0.5, 1.5]}), buf)
    return buf.getvalue()


def npy_bytes(i: int) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.arange(2 * i, 2 * i + 2, dtype=np.int64))
    return buf.getvalue()


@dataclass(frozen=True)
class Format:
    read: Any
    good_name: str  # with {i}
    good: Any  # i -> bytes
    rows_per_good: int
    bad: dict[str, bytes]  # file name -> content: each is unreadable as a whole


FORMATS: dict[str, Format] = {
    "images": Format(
        rd.read_images,
        "good{i}.png",
        png_bytes,
        1,
        {
            "corrupt.png": b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20,
            "truncated.jpg": jpeg_bytes()[:300],
            "zero.png": b"",
            "text-named.jpg": b"this is not an image\n",
        },
    ),
    "parquet": Format(
        rd.read_parquet,
        "good{i}.parquet",
        parquet_bytes,
        2,
        {
            "corrupt.parquet": b"PAR1" + os.urandom(64) + b"PAR1",
            "truncated.parquet": parquet_bytes(9)[:-24],
            "zero.parquet": b"",
        },
    ),
    "csv": Format(
        rd.read_csv,
        "good{i}.csv",
        lambda i: f"id,v\n{2 * i},0.5\n{2 * i + 1},1.5\n".encode(),
        2,
        {
            "truncated.csv.gz": gzip.compress(b"id,v\n" + b"1,2\n" * 1000)[:-40],
            "zero.csv": b"",
            "not-gzip.csv.gz": b"id,v\n1,2\n",
        },
    ),
    "json": Format(
        rd.read_json,
        "good{i}.json",
        lambda i: f'{{"id": {2 * i}}}\n{{"id": {2 * i + 1}}}\n'.encode(),
        2,
        {
            "truncated-array.json": b'[{"id": 1}, {"id"',
            "truncated.json.gz": gzip.compress(b'{"id": 1}\n' * 1000)[:-40],
            "binary.json": b"[\x00\x01\x02\xff\xfe]",
        },
    ),
    "numpy": Format(
        rd.read_numpy,
        "good{i}.npy",
        npy_bytes,
        2,
        {
            "corrupt.npy": b"\x93NUMPY\x01\x00" + b"garbage" * 10,
            "truncated.npy": npy_bytes(9)[:-8],
            "zero.npy": b"",
            "pickled-objects.npy": b"",  # filled in below: refused, never unpickled (promise 8)
        },
    ),
    "text": Format(
        rd.read_text,
        "good{i}.txt",
        lambda i: f"line {2 * i}\nline {2 * i + 1}\n".encode(),
        2,
        {"truncated.txt.gz": gzip.compress(b"hello\n" * 1000)[:-40]},
    ),
}


def _pickled_npy() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    return buf.getvalue()


FORMATS["numpy"].bad["pickled-objects.npy"] = _pickled_npy()

BAD_CASES = [(fmt, name) for fmt, f in FORMATS.items() for name in f.bad]


def make_dir(root: pathlib.Path, fmt: str, bad: list[str], n_good: int = 2) -> pathlib.Path:
    f = FORMATS[fmt]
    d = root / fmt
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n_good):
        (d / f.good_name.format(i=i)).write_bytes(f.good(i))
    for name in bad:
        (d / name).write_bytes(f.bad[name])
    return d


# ----------------------------------------------------------------------------- whole files


@pytest.mark.parametrize(("fmt", "name"), BAD_CASES, ids=[f"{f}-{n}" for f, n in BAD_CASES])
def test_an_unreadable_file_raises_read_error_naming_it(tmp_path, fmt, name):
    d = make_dir(tmp_path, fmt, [name])
    with pytest.raises(ReadError) as info:
        FORMATS[fmt].read(str(d)).take_all()
    err = info.value
    assert err.path == str(d / name), str(err)
    assert str(err).startswith(f"{d / name}: ")


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_unreadable_files_are_skipped_within_the_budget_and_reported(tmp_path, fmt, caplog):
    f = FORMATS[fmt]
    bad = list(f.bad)
    d = make_dir(tmp_path, fmt, bad, n_good=3)
    with caplog.at_level(logging.WARNING, logger="torchray_loader"):
        ds = f.read(str(d), on_read_error="skip", read_error_budget=len(bad))
        assert ds.count() == 3 * f.rows_per_good
    assert [(pathlib.Path(s.path).name, s.row) for s in read_skips(ds)] == sorted((n, None) for n in bad)
    assert all(s.reason for s in read_skips(ds))
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert all(f"skipped unreadable {d / n}" in logged for n in bad)

    over = f.read(str(d), on_read_error="skip", read_error_budget=len(bad) - 1)
    with pytest.raises(ErrorBudgetExceeded, match=f"{len(bad)} unreadable items exceed read_error_budget") as info:
        over.take_all()
    assert all(n in str(info.value) for n in bad)


def test_skip_budget_is_shared_by_worker_processes(tmp_path, inline):
    """The budget belongs to the read call, not to a worker: 2 workers, 3 bad files, budget 2."""
    inline.num_workers = 2
    d = make_dir(tmp_path, "parquet", list(FORMATS["parquet"].bad), n_good=6)
    ds = rd.read_parquet(str(d), on_read_error="skip", read_error_budget=3)
    assert sorted(r["id"] for r in ds.take_all()) == list(range(12))
    assert len(read_skips(ds)) == 3
    with pytest.raises(ErrorBudgetExceeded):
        rd.read_parquet(str(d), on_read_error="skip", read_error_budget=2).take_all()


@pytest.mark.parametrize(("fmt", "name"), [("json", "empty.jsonl"), ("text", "empty.txt")])
def test_a_zero_byte_file_of_a_line_format_is_an_empty_file(tmp_path, fmt, name):
    d = make_dir(tmp_path, fmt, [])
    (d / name).write_bytes(b"")
    assert FORMATS[fmt].read(str(d)).count() == 2 * FORMATS[fmt].rows_per_good


# ----------------------------------------------------------------------------- bad rows


@pytest.mark.parametrize(
    ("fmt", "name", "content", "row"),
    [
        ("csv", "ragged.csv", b"id,v\n1,0.5\n2\n3,1.5\n", 3),
        ("json", "bad-line.jsonl", b'{"id": 1}\n{"id": \n{"id": 3}\n', 2),
        ("json", "not-utf8.jsonl", b'{"id": 1}\n{"id": "\xff\xfe"}\n{"id": 3}\n', 2),
        ("text", "not-utf8.txt", b"line 1\n\xff\xfe line 2\nline 3\n", 2),
    ],
)
def test_a_bad_row_names_file_and_line_or_only_that_row_is_skipped(tmp_path, fmt, name, content, row):
    d = tmp_path / fmt
    d.mkdir()
    (d / name).write_bytes(content)
    read = FORMATS[fmt].read
    with pytest.raises(ReadError, match=f"^{d / name}: row {row}: "):
        read(str(d)).take_all()
    ds = read(str(d), on_read_error="skip", read_error_budget=1)
    assert ds.count() == 2  # the two good rows
    assert [(s.path, s.row) for s in read_skips(ds)] == [(str(d / name), row)]


def test_non_utf8_csv_values_come_back_as_bytes_not_as_an_error(tmp_path):
    """pyarrow's CSV reader keeps a column that is not valid UTF-8 as ``binary``: nothing is lost
    and nothing is mis-decoded; the values are ``bytes``."""
    (tmp_path / "latin1.csv").write_bytes("name,n\ncafé,1\n".encode("latin-1"))
    ds = rd.read_csv(str(tmp_path / "latin1.csv"))
    assert ds.take_all() == [{"name": "café".encode("latin-1"), "n": 1}]


# ----------------------------------------------------------------------------- parquet schemas


def test_a_parquet_file_whose_schema_conflicts_with_its_siblings_is_named(tmp_path):
    for i in range(3):
        pq.write_table(pa.table({"id": [i], "label": [i % 2]}), tmp_path / f"part-{i}.parquet")
    pq.write_table(pa.table({"id": ["three"], "label": [1]}), tmp_path / "part-3.parquet")  # id: string
    with pytest.raises(ReadError, match=r"part-3\.parquet: schema conflicts .*part-0\.parquet.*id") as info:
        rd.read_parquet(str(tmp_path)).take_all()
    assert info.value.path == str(tmp_path / "part-3.parquet")
    ds = rd.read_parquet(str(tmp_path), on_read_error="skip", read_error_budget=1)
    assert sorted(r["id"] for r in ds.take_all()) == [0, 1, 2]
    assert [pathlib.Path(s.path).name for s in read_skips(ds)] == ["part-3.parquet"]


def test_parquet_files_with_missing_or_extra_columns_unify_with_nulls(tmp_path):
    pq.write_table(pa.table({"id": [0, 1], "a": [1.0, 2.0]}), tmp_path / "part-0.parquet")
    pq.write_table(pa.table({"id": [2], "b": ["x"]}), tmp_path / "part-1.parquet")
    batch = next(iter(rd.read_parquet(str(tmp_path)).iter_batches(batch_size=3, batch_format="pyarrow")))
    assert batch.column("id").to_pylist() == [0, 1, 2]
    assert batch.column("a").to_pylist() == [1.0, 2.0, None]
    assert batch.column("b").to_pylist() == [None, None, "x"]


# ----------------------------------------------------------------------------- permissions


class LockedFS(LocalFileSystem):
    """The local file system, except that files whose name contains ``locked`` cannot be opened:
    what ``chmod 000`` does for a non-root user (tests run as root in CI, where mode bits do not
    stop reads)."""

    def _check(self, path: Any) -> None:
        if "locked" in os.path.basename(str(path)):
            raise PermissionError(13, "Permission denied", str(path))

    def _open(self, path, *args, **kwargs):
        self._check(path)
        return super()._open(path, *args, **kwargs)

    def cat_file(self, path, *args, **kwargs):
        self._check(path)
        return super().cat_file(path, *args, **kwargs)


@pytest.mark.parametrize("workers", [0, 2])
def test_an_unreadable_file_permission_denied_is_named_or_skipped(tmp_path, inline, workers):
    inline.num_workers = workers
    d = make_dir(tmp_path, "parquet", [], n_good=3)
    (d / "locked.parquet").write_bytes(parquet_bytes(7))
    with pytest.raises(ReadError, match=r"locked\.parquet: .*Permission denied") as info:
        rd.read_parquet(str(d), filesystem=LockedFS()).take_all()
    assert info.value.path == str(d / "locked.parquet")
    ds = rd.read_parquet(str(d), filesystem=LockedFS(), on_read_error="skip", read_error_budget=1)
    assert ds.count() == 6
    assert [pathlib.Path(s.path).name for s in read_skips(ds)] == ["locked.parquet"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode bits (see LockedFS test)")
def test_a_chmod_000_file_is_named(tmp_path):  # pragma: no cover - CI runs as root
    d = make_dir(tmp_path, "csv", [])
    locked = d / "locked.csv"
    locked.write_bytes(b"id,v\n9,9\n")
    locked.chmod(0)
    try:
        with pytest.raises(ReadError, match=r"locked\.csv: .*[Pp]ermission denied"):
            rd.read_csv(str(d)).take_all()
    finally:
        locked.chmod(0o600)


# ----------------------------------------------------------------------------- paths


def test_a_directory_where_a_file_is_expected(tmp_path):
    (tmp_path / "train.csv").mkdir()  # an empty directory named like a file
    with pytest.raises(ReadError, match=r"train\.csv: directory contains no files to read"):
        rd.read_csv(str(tmp_path / "train.csv"))
    # a directory named like a file, holding files: read recursively, like any directory
    nested = tmp_path / "images.png"
    nested.mkdir()
    (nested / "0.png").write_bytes(png_bytes(0))
    assert rd.read_images(str(nested)).count() == 1


def test_a_missing_path_is_a_file_not_found_error_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        rd.read_parquet(str(tmp_path / "nope.parquet"))
