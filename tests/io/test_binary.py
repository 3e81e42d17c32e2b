"""read_binary_files: bytes per file, paths, partitions."""

from __future__ import annotations

import pytest

import torchray_loader as rd
from torchray_loader.errors import ReadError


def test_bytes_and_paths(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"\x00\x01\x02")
    (tmp_path / "b.dat").write_bytes(b"")
    ds = rd.read_binary_files(str(tmp_path), include_paths=True)
    assert ds.take_all() == [
        {"bytes": b"\x00\x01\x02", "path": f"{tmp_path}/a.bin"},
        {"bytes": b"", "path": f"{tmp_path}/b.dat"},
    ]
    assert str(ds.schema()) == "Column  Type\n------  ----\nbytes   binary\npath    string"


def test_partitioning_and_extensions(tmp_path):
    for label in ("cat", "dog"):
        (tmp_path / f"label={label}").mkdir()
        (tmp_path / f"label={label}" / "x.bin").write_bytes(label.encode())
        (tmp_path / f"label={label}" / "x.txt").write_bytes(b"skip me")
    ds = rd.read_binary_files(str(tmp_path), partitioning="hive", file_extensions=["bin"])
    assert ds.take_all() == [{"bytes": b"cat", "label": "cat"}, {"bytes": b"dog", "label": "dog"}]


def test_unknown_argument_is_an_error(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"x")
    with pytest.raises(TypeError, match="unexpected keyword arguments: \\['bogus'\\]"):
        rd.read_binary_files(str(tmp_path), bogus=1)
    # Ray-only arguments are accepted and ignored; parallelism maps to override_num_blocks.
    assert rd.read_binary_files(str(tmp_path), ray_remote_args={"num_cpus": 1}, parallelism=4).count() == 1


def test_missing_file(tmp_path):
    with pytest.raises(ReadError, match="nope"):
        rd.read_binary_files(str(tmp_path / "nope"))
