"""Path resolution, listing, partitions, file shuffling and grouping into read tasks."""

from __future__ import annotations

import multiprocessing
import pathlib
import pickle

import fsspec
import pyarrow as pa
import pyarrow.fs as pafs
import pytest

import torchray_loader as rd
from torchray_loader.errors import ReadError
from torchray_loader.io.binary import read_binary_unit
from torchray_loader.io.errors import MissingPathError
from torchray_loader.io.paths import (
    MIN_READ_TASKS,
    RAMP_UP_TASKS,
    FileShuffleConfig,
    Partitioning,
    _find_local,
    expand_paths,
    parse_partitions,
    plan_read,
    resolve_filesystem,
)


def make_tree(root: pathlib.Path, names: list[str]) -> None:
    for name in names:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(name.encode())


def names(files, root: pathlib.Path) -> list[str]:
    return [str(pathlib.PurePosixPath(f.path).relative_to(root.as_posix())) for f in files]


def run_tasks(tasks) -> list[pa.Table]:
    return [t for task in tasks for t in task()]


def run_task_in_child(task) -> list[dict]:
    return [t.to_pydict() for t in task()]


# ------------------------------------------------------------------ resolve_filesystem


@pytest.mark.parametrize("prefix", ["", "file://", "local://"])
def test_local_prefixes_resolve_to_local_disk(tmp_path, prefix):
    fs, p = resolve_filesystem(f"{prefix}{tmp_path}/x")
    assert type(fs).__name__ == "LocalFileSystem"
    assert p == f"{tmp_path}/x"


def test_relative_local_path_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_filesystem("a/b")[1] == f"{tmp_path}/a/b"


def test_memory_url_uses_fsspec_memory_filesystem():
    fs, p = resolve_filesystem("memory://bucket/x.txt")
    assert type(fs).__name__ == "MemoryFileSystem" and p.endswith("bucket/x.txt")


def test_s3_anonymous_and_endpoint_from_environment(monkeypatch):
    pytest.importorskip("s3fs")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    fs, p = resolve_filesystem("s3://anonymous@my-bucket/dir/a.csv")
    assert p == "my-bucket/dir/a.csv"
    assert fs.anon is True
    assert (
        fs.client_kwargs.get("endpoint_url") == "http://127.0.0.1:9"
        or fs.endpoint_url == "http://127.0.0.1:9"
    )
    fs2, p2 = resolve_filesystem("s3://my-bucket/dir/")
    assert fs2.anon is False and p2 == "my-bucket/dir"


def test_pyarrow_filesystem_is_wrapped(tmp_path):
    (tmp_path / "a.txt").write_text("hello\n")
    ds = rd.read_text(str(tmp_path), filesystem=pafs.LocalFileSystem())
    assert ds.take_all() == [{"text": "hello"}]


def test_explicit_fsspec_filesystem(tmp_path):
    fs = fsspec.filesystem("memory")
    with fs.open("/trl-explicit/a.txt", "wb") as f:
        f.write(b"one\ntwo\n")
    rd.DataContext.get_current().num_workers = 0
    assert [r["text"] for r in rd.read_text("/trl-explicit", filesystem=fs).take_all()] == ["one", "two"]
    fs.rm("/trl-explicit", recursive=True)


def test_bad_path_types():
    with pytest.raises(TypeError, match="paths"):
        expand_paths(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one"):
        expand_paths([])
    with pytest.raises(TypeError, match="filesystem"):
        resolve_filesystem("/x", filesystem=object())


# ------------------------------------------------------------------ listing


def test_directory_listing_is_recursive_sorted_and_skips_hidden(tmp_path):
    make_tree(
        tmp_path, ["b.txt", "a.txt", "sub/c.txt", ".hidden.txt", "_SUCCESS", "_tmp/d.txt", ".part-0.tmp"]
    )
    fs, files = expand_paths(str(tmp_path))
    assert names(files, tmp_path) == ["a.txt", "b.txt", "sub/c.txt"]
    assert [f.size for f in files] == [5, 5, 9]


def test_local_listing_equals_fsspec_find_for_plain_trees(tmp_path):
    make_tree(tmp_path, ["b.txt", "sub/deeper/c.bin", "sub/.hidden", "x/y/z/w.txt", "empty/.keep"])
    (tmp_path / "dangling").symlink_to(tmp_path / "nothing-here")
    (tmp_path / "linked.txt").symlink_to(tmp_path / "b.txt")
    found = fsspec.filesystem("file").find(str(tmp_path), withdirs=False, detail=True)
    assert sorted(_find_local(str(tmp_path))) == sorted((p, info["size"]) for p, info in found.items())


def test_linked_directories_are_read_and_cycles_end(tmp_path):
    make_tree(tmp_path, ["data/a.txt", "elsewhere/b.txt"])
    (tmp_path / "data" / "more").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "data" / "loop").symlink_to(tmp_path / "data", target_is_directory=True)
    fs, files = expand_paths(str(tmp_path / "data"))
    assert names(files, tmp_path / "data") == ["a.txt", "more/b.txt"]
    assert sorted(r["text"] for r in rd.read_text(str(tmp_path / "data")).iter_rows()) == ["data/a.txt", "elsewhere/b.txt"]


def test_list_order_is_kept_and_globs_expand(tmp_path):
    make_tree(tmp_path, ["x/2.csv", "x/1.csv", "y/3.csv", "y/3.txt"])
    _, files = expand_paths([str(tmp_path / "y"), f"{tmp_path}/x/*.csv"])
    assert names(files, tmp_path) == ["y/3.csv", "y/3.txt", "x/1.csv", "x/2.csv"]


def test_explicit_hidden_file_is_read(tmp_path):
    make_tree(tmp_path, [".keep"])
    _, files = expand_paths(str(tmp_path / ".keep"))
    assert len(files) == 1


def test_file_extensions_filter_case_insensitively(tmp_path):
    make_tree(tmp_path, ["a.JPG", "b.png", "c.txt", "d.csv.gz"])
    _, files = expand_paths(str(tmp_path), file_extensions=["jpg", ".png", "csv.gz"])
    assert names(files, tmp_path) == ["a.JPG", "b.png", "d.csv.gz"]
    with pytest.raises(TypeError, match="file_extensions"):
        expand_paths(str(tmp_path), file_extensions="jpg")


def test_missing_path_names_the_path(tmp_path):
    missing = str(tmp_path / "nope.csv")
    with pytest.raises(MissingPathError, match="nope.csv") as info:
        rd.read_csv(missing)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ReadError)


def test_ignore_missing_paths(tmp_path):
    make_tree(tmp_path, ["a.txt"])
    _, files = expand_paths([str(tmp_path / "gone"), str(tmp_path / "a.txt")], ignore_missing_paths=True)
    assert names(files, tmp_path) == ["a.txt"]
    with pytest.raises(ReadError, match="no input files"):
        expand_paths([str(tmp_path / "gone")], ignore_missing_paths=True)


def test_empty_directory_names_the_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReadError, match="empty.*no files"):
        rd.read_parquet(str(tmp_path / "empty"))


def test_no_file_with_the_extensions(tmp_path):
    make_tree(tmp_path, ["a.txt"])
    with pytest.raises(ReadError, match=r"no input files found.*\['csv'"):
        expand_paths(str(tmp_path), file_extensions=["csv"])


def test_glob_without_match_is_missing(tmp_path):
    with pytest.raises(MissingPathError):
        expand_paths(f"{tmp_path}/*.csv")


# ------------------------------------------------------------------ partitions


def test_hive_partitions_parse():
    assert parse_partitions("/d/year=2024/m%3Dx=a%20b/f.csv", Partitioning("hive")) == (
        ("year", "2024"),
        ("m=x", "a b"),
    )
    assert parse_partitions("/d/year=2024/f.csv", None) == ()
    assert parse_partitions("/top=1/d/year=2024/f.csv", Partitioning("hive", base_dir="/top=1/d")) == (
        ("year", "2024"),
    )


def test_dir_partitions_parse():
    p = Partitioning("dir", base_dir="/data", field_names=("year", "country"))
    assert parse_partitions("/data/2024/fr/f.csv", p) == (("year", "2024"), ("country", "fr"))
    with pytest.raises(ValueError, match="expects 2 directories"):
        parse_partitions("/data/2024/f.csv", p)
    with pytest.raises(ValueError, match="base_dir"):
        Partitioning("dir")


def test_hive_partition_columns_are_added(tmp_path):
    for year, rows in (("2023", "1\n2\n"), ("2024", "3\n")):
        d = tmp_path / f"year={year}"
        d.mkdir()
        (d / "part.csv").write_text("x\n" + rows)
    rows = rd.read_csv(str(tmp_path)).take_all()
    assert rows == [{"x": 1, "year": "2023"}, {"x": 2, "year": "2023"}, {"x": 3, "year": "2024"}]
    assert rd.read_csv(str(tmp_path), partitioning=None).take_all()[0] == {"x": 1}


# ------------------------------------------------------------------ shuffle and tasks


def test_file_shuffle_is_a_seeded_permutation(tmp_path):
    make_tree(tmp_path, [f"{i:03d}.bin" for i in range(40)])
    _, plain = expand_paths(str(tmp_path))
    _, a = expand_paths(str(tmp_path), shuffle=FileShuffleConfig(seed=7))
    _, b = expand_paths(str(tmp_path), shuffle=FileShuffleConfig(seed=7))
    _, c = expand_paths(str(tmp_path), shuffle=FileShuffleConfig(seed=8))
    _, unseeded = expand_paths(str(tmp_path), shuffle="files")
    assert a == b and a != c and a != plain
    assert sorted(f.path for f in a) == sorted(f.path for f in plain) == sorted(f.path for f in unseeded)
    with pytest.raises(ValueError, match="shuffle"):
        expand_paths(str(tmp_path), shuffle="rows")


def test_read_with_file_shuffle_keeps_every_row_once(tmp_path):
    make_tree(tmp_path, [f"{i:03d}.bin" for i in range(20)])
    ds = rd.read_binary_files(str(tmp_path), shuffle=rd.FileShuffleConfig(seed=1))
    got = [r["bytes"] for r in ds.take_all()]
    assert sorted(got) == sorted(f"{i:03d}.bin".encode() for i in range(20)) and got != sorted(got)


def test_files_are_grouped_into_tasks_in_order(tmp_path):
    make_tree(tmp_path, [f"{i:03d}.bin" for i in range(100)])
    tasks = plan_read(str(tmp_path), read_binary_unit)
    assert MIN_READ_TASKS <= len(tasks) < 100
    flat = [p for t in tasks for p in t.paths]
    assert flat == sorted(flat) and len(flat) == 100
    assert all(t.num_rows is None for t in tasks)  # skip policy may drop rows: never promised
    assert [len(plan_read(str(tmp_path), read_binary_unit, override_num_blocks=k)) for k in (1, 3, 500)] == [
        1,
        3,
        100,
    ]
    rows = [
        b
        for t in run_tasks(plan_read(str(tmp_path), read_binary_unit))
        for b in t.column("bytes").to_pylist()
    ]
    assert rows == [f"{i:03d}.bin".encode() for i in range(100)]


def test_first_tasks_are_half_size_whatever_the_workers(tmp_path):
    make_tree(tmp_path, [f"{i:04d}.bin" for i in range(1000)])
    for nw in (0, 2):
        rd.DataContext.get_current().num_workers = nw
        tasks = plan_read(str(tmp_path), read_binary_unit)
        assert [len(t.paths) for t in tasks] == [32] * RAMP_UP_TASKS + [64] * 14 + [1000 - 64 * 15]


def test_small_tables_of_one_task_are_coalesced_into_one_block(tmp_path):
    make_tree(tmp_path, [f"{i:03d}.bin" for i in range(16)])
    tasks = plan_read(str(tmp_path), read_binary_unit, override_num_blocks=2)
    assert [[b.num_rows for b in task()] for task in tasks] == [[8], [8]]


def test_tasks_pickle_and_run_in_another_process(tmp_path):
    make_tree(tmp_path, ["a.bin", "b.bin"])
    tasks = plan_read(str(tmp_path), read_binary_unit, include_paths=True)
    clone = pickle.loads(pickle.dumps(tasks))
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        remote = pool.map(run_task_in_child, clone)
    local = [[t.to_pydict() for t in task()] for task in tasks]
    assert remote == local
    assert local[0][0]["path"] == [f"{tmp_path}/a.bin"]


def test_task_units_cross_processes_as_flat_tuples(tmp_path):
    """A task's units pickle as four flat tuples (the transfer pickler's C fast path), not as three
    objects a unit, and come back equal: paths, sizes, partitions and parts."""
    import dataclasses

    from torchray_loader.execution import shm
    from torchray_loader.io.paths import FileInfo, ReadUnit, ReadUnits

    # ReadUnits packs exactly these fields: one added here must be packed there too.
    assert [f.name for f in dataclasses.fields(FileInfo)] == ["path", "size", "partitions"]
    assert [f.name for f in dataclasses.fields(ReadUnit)] == ["file", "part"]
    make_tree(tmp_path, ["k=1/a.bin", "k=2/b.bin"])
    (task,) = plan_read(str(tmp_path), read_binary_unit, partitioning="hive", override_num_blocks=1)
    units = task.read_fn.args[0]
    assert isinstance(units, ReadUnits) and [u.file.partitions for u in units] == [(("k", "1"),), (("k", "2"),)]
    fn, flat = units.__reduce__()
    assert all(type(column) is tuple for column in flat)
    parted = ReadUnits([ReadUnit(FileInfo("x.parquet", 5), (0, 2)), ReadUnit(FileInfo("y.parquet"), None)])
    for original in (units, parted):
        clone = shm.loads_from_shm(shm.dumps_to_shm(original))
        assert clone == original and isinstance(clone, ReadUnits)
    assert [t.to_pydict() for t in pickle.loads(shm.dumps(task))()] == [t.to_pydict() for t in task()]


def test_read_task_error_names_the_task_paths(tmp_path):
    make_tree(tmp_path, ["a.bin"])
    tasks = plan_read(str(tmp_path), read_binary_unit)
    (tmp_path / "a.bin").unlink()  # vanished between listing and reading
    with pytest.raises(ReadError, match="a.bin"):
        run_tasks(tasks)


def test_tasks_are_sized_by_bytes(tmp_path):
    for i in range(20):
        (tmp_path / f"{i:02d}.bin").write_bytes(b"x" * 1000)
    rd.DataContext.get_current().target_max_block_size = 3000
    tasks = plan_read(str(tmp_path), read_binary_unit)
    # budget min(3000, 20000 / 8) bytes per task; half of it for the first RAMP_UP_TASKS tasks
    assert [len(t.paths) for t in tasks] == [1] * RAMP_UP_TASKS + [2] * 9
    assert [t.size_bytes for t in tasks] == [1000] * RAMP_UP_TASKS + [2000] * 9
    tasks = plan_read(str(tmp_path), read_binary_unit, size_ratio=3.0)  # 3000 in-memory bytes per file
    assert [len(t.paths) for t in tasks] == [1] * 20


def test_decorate_rows_gives_each_row_its_files_values():
    import pyarrow as pa

    from torchray_loader.io.paths import FileInfo, decorate_rows

    files = [
        FileInfo("y=1/a", partitions=(("y", "1"),)),
        FileInfo("b", partitions=()),
        FileInfo("y=2/z=q/c", partitions=(("y", "2"), ("z", "q"), ("x", "shadowed"))),
    ]
    table = pa.table({"x": [1, 2, 3]})
    out = decorate_rows(table, files, ["s3://b/y=1/a", "s3://b/b", "s3://b/y=2/z=q/c"], include_paths=True)
    assert out.to_pydict() == {
        "x": [1, 2, 3],  # a file column wins over a partition key of the same name
        "y": ["1", None, "2"],
        "z": [None, None, "q"],
        "path": ["s3://b/y=1/a", "s3://b/b", "s3://b/y=2/z=q/c"],
    }
    assert decorate_rows(table, files, ["a", "b", "c"], include_paths=False).column_names == ["x", "y", "z"]


# ------------------------------------------------------------------ paths as Ray reads them


def test_a_path_with_glob_characters_that_exists_is_read_as_written(tmp_path):
    for name, x in (("img[1]", 1), ("img1", 2)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "a.csv").write_text(f"x\n{x}\n")
    rows = rd.read_csv(str(tmp_path / "img[1]"), include_paths=True).take_all()
    assert rows == [{"x": 1, "path": str(tmp_path / "img[1]" / "a.csv")}]
    assert [r["x"] for r in rd.read_csv(str(tmp_path / "img[0-9]")).take_all()] == [2]  # no such path: a glob


def test_partition_field_types_and_rays_partitioning_object(tmp_path):
    import types

    (tmp_path / "year=2024" / "ok=true").mkdir(parents=True)
    (tmp_path / "year=2024" / "ok=true" / "a.csv").write_text("x\n1\n")
    typed = Partitioning("hive", field_types={"year": int, "ok": bool})
    assert rd.read_csv(str(tmp_path), partitioning=typed).take_all() == [{"x": 1, "year": 2024, "ok": True}]
    # ray.data.datasource.Partitioning has the same fields; its style is a str enum
    ray_like = types.SimpleNamespace(style="hive", base_dir="", field_names=None, field_types={"year": float})
    assert rd.read_csv(str(tmp_path), partitioning=ray_like).take_all() == [{"x": 1, "year": 2024.0, "ok": "true"}]
    with pytest.raises(TypeError, match="field_types values"):
        Partitioning("hive", field_types={"year": list})
    with pytest.raises(ValueError, match="partition ok='true' is not a int"):
        rd.read_csv(str(tmp_path), partitioning=Partitioning("hive", field_types={"ok": int})).take_all()


def test_a_directory_that_cannot_be_listed_is_a_read_error_naming_it(tmp_path, monkeypatch):
    """Under any policy: its files cannot be skipped one by one without being listed."""
    import os

    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "a.csv").write_text("x\n1\n")
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "b.csv").write_text("x\n2\n")
    scandir = os.scandir

    def refusing(path):
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    for policy in ("raise", "skip"):
        with pytest.raises(ReadError, match=rf"{tmp_path}/locked: cannot list this directory: Permission denied"):
            rd.read_csv(str(tmp_path), on_read_error=policy)


# ------------------------------------------------------------------------- partition_filter


def _year_2024(values):
    return values.get("year") == "2024"


def _partitioned_csvs(root: pathlib.Path) -> None:
    for year, month in [("2023", "12"), ("2024", "01"), ("2024", "02")]:
        d = root / f"year={year}" / f"month={month}"
        d.mkdir(parents=True)
        (d / "part.csv").write_text(f"x\n{year}{month}\n")
    (root / "loose.csv").write_text("x\n0\n")


def test_partition_filter_reads_only_the_partitions_it_keeps(tmp_path):
    _partitioned_csvs(tmp_path)
    keep = rd.PathPartitionFilter.of(_year_2024)
    ds = rd.read_csv(str(tmp_path), partition_filter=keep)
    assert sorted(r["x"] for r in ds.take_all()) == [202401, 202402]
    assert {r["year"] for r in ds.take_all()} == {"2024"}  # values reach filter_fn as strings
    # The unpartitioned file gets {}: a filter can keep or drop it.
    only_loose = rd.PathPartitionFilter.of(lambda d: not d)
    assert rd.read_csv(str(tmp_path), partition_filter=only_loose).take_all() == [{"x": 0}]
    # Any callable from paths to the paths to read (Ray's own filter object is one).
    newest = rd.read_csv(str(tmp_path), partition_filter=lambda paths: [p for p in paths if "month=02" in p])
    assert [r["x"] for r in newest.take_all()] == [202402]


def test_partition_filter_dir_style_and_errors(tmp_path):
    for label in ["cat", "dog"]:
        (tmp_path / label).mkdir()
        (tmp_path / label / "a.txt").write_text(label)
    (tmp_path / "top.txt").write_text("top")
    dogs = rd.PathPartitionFilter.of(lambda d: d.get("label") == "dog", style="dir", base_dir=str(tmp_path),
                                     field_names=["label"])
    assert rd.read_text(str(tmp_path), partition_filter=dogs).take_all() == [{"text": "dog"}]
    with pytest.raises(ReadError, match="partition_filter rejected them all"):
        rd.read_text(str(tmp_path), partition_filter=rd.PathPartitionFilter.of(lambda d: False))
    with pytest.raises(TypeError, match="list of paths"):
        rd.read_text(str(tmp_path), partition_filter=lambda paths: None)
    with pytest.raises(TypeError, match="partition_filter must be"):
        rd.read_text(str(tmp_path), partition_filter="year=2024")


def test_partition_filter_with_every_reader(tmp_path):
    import numpy as np
    import pyarrow.parquet as pq
    from PIL import Image

    for year in ["2023", "2024"]:
        d = tmp_path / f"year={year}"
        d.mkdir()
        pq.write_table(pa.table({"v": [int(year)]}), d / "a.parquet")
        (d / "a.json").write_text(f'{{"v": {year}}}\n')
        np.save(d / "a.npy", np.array([int(year)]))
        Image.new("L", (2, 2), color=int(year) % 256).save(d / "a.png")
    keep = rd.PathPartitionFilter.of(_year_2024)
    assert rd.read_parquet(str(tmp_path), partition_filter=keep).take_all() == [{"v": 2024, "year": "2024"}]
    assert rd.read_json(str(tmp_path), file_extensions=["json"], partition_filter=keep).take_all()[0]["v"] == 2024
    assert rd.read_numpy(str(tmp_path), partition_filter=keep).count() == 1
    images = rd.read_images(str(tmp_path), partition_filter=keep, include_paths=True).take_all()
    assert [pathlib.Path(r["path"]).parent.name for r in images] == ["year=2024"]
    binary = rd.read_binary_files(str(tmp_path), partition_filter=keep, include_paths=True).take_all()
    assert {pathlib.Path(r["path"]).parent.name for r in binary} == {"year=2024"}


def test_rays_own_partition_filter_is_accepted(tmp_path):
    datasource = pytest.importorskip("ray.data.datasource")
    _partitioned_csvs(tmp_path)
    keep = datasource.PathPartitionFilter.of(_year_2024)
    assert sorted(r["x"] for r in rd.read_csv(str(tmp_path), partition_filter=keep).take_all()) == [202401, 202402]


def test_partition_filter_types_values_and_matches_base_dirs_with_a_scheme(tmp_path):
    import fsspec

    _partitioned_csvs(tmp_path)
    after_2023 = rd.PathPartitionFilter.of(lambda d: d.get("year", 0) > 2023, field_types={"year": int})
    assert sorted(r["x"] for r in rd.read_csv(str(tmp_path), partition_filter=after_2023).take_all()) == [202401, 202402]
    mem = fsspec.filesystem("memory")
    for label in ["cat", "dog"]:
        mem.pipe(f"/trl-pf/data/{label}/a.txt", label.encode())
    try:
        for base in ["/trl-pf/data", "memory://trl-pf/data", "memory:///trl-pf/data/"]:
            dogs = rd.PathPartitionFilter.of(lambda d: d.get("label") == "dog", style="dir", base_dir=base,
                                             field_names=["label"])
            assert rd.read_text("memory://trl-pf/data", partition_filter=dogs).take_all() == [{"text": "dog"}], base
    finally:
        mem.rm("/trl-pf", recursive=True)


def test_hive_directory_with_two_equals_signs_is_not_a_partition(tmp_path):
    """As in Ray, a hive directory holds exactly one ``=`` (a written value's ``=`` is ``%3D``):
    ``k=a=b`` is an ordinary directory."""
    assert parse_partitions("/d/k=a=b/j=c%3Dd/f.csv", Partitioning("hive")) == (("j", "c=d"),)
    make_tree(tmp_path, ["k=a=b/f.bin"])
    assert rd.read_binary_files(str(tmp_path), partitioning="hive").columns() == ["bytes"]
    keep_all = rd.PathPartitionFilter.of(record_partition_values)
    assert keep_all([f"{tmp_path}/k=a=b/f.bin"]) == [f"{tmp_path}/k=a=b/f.bin"]


def record_partition_values(values: dict) -> bool:
    return values == {}


def test_hive_field_names_must_be_the_directory_keys(tmp_path):
    """As in Ray: with ``field_names``, a file's ``key=value`` directories must name those keys, in
    order (a file with none is unpartitioned); otherwise a ValueError, which here names the file."""
    part = Partitioning("hive", field_names=("year", "month"))
    assert parse_partitions("/d/year=2024/month=05/f.csv", part) == (("year", "2024"), ("month", "05"))
    assert parse_partitions("/d/plain/f.csv", part) == ()
    with pytest.raises(ValueError, match=r"/d/month=05/year=2024/f\.csv: .*\['year', 'month'\].*\['month', 'year'\]"):
        parse_partitions("/d/month=05/year=2024/f.csv", part)
    with pytest.raises(ValueError, match=r"/d/year=2024/f\.csv: .*found \['year'\]"):
        parse_partitions("/d/year=2024/f.csv", part)
    make_tree(tmp_path, ["year=2024/f.bin"])
    with pytest.raises(ValueError, match=r"year=2024/f\.bin: hive partitioning expects the keys \['month'\]"):
        rd.read_binary_files(str(tmp_path), partitioning=Partitioning("hive", field_names=("month",)))
    ds = rd.read_binary_files(str(tmp_path), partitioning=Partitioning("hive", field_names=("year",)))
    assert ds.take_all()[0]["year"] == "2024"
    wrong = rd.PathPartitionFilter.of(bool, field_names=["month"])
    with pytest.raises(ValueError, match=r"year=2024/f\.bin: "):
        wrong([f"{tmp_path}/year=2024/f.bin"])
