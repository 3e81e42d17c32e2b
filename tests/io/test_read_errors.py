"""The skip-and-log policy: one helper, a per-read-call budget counted across worker processes."""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import pathlib
import pickle

import pytest

import torchray_loader as rd
from torchray_loader.errors import ErrorBudgetExceeded, ReadError
from torchray_loader.io.errors import ReadErrorPolicy, SkippedItem, read_skips
from torchray_loader.io.paths import plan_read
from torchray_loader.io.text import read_text_unit


def fail() -> list:
    raise ValueError("bad bytes")


def write_text_files(root: pathlib.Path, good: int, bad: int) -> None:
    for i in range(good):
        (root / f"good{i:02d}.txt").write_text(f"line {i}\n")
    for i in range(bad):
        (root / f"bad{i:02d}.txt").write_bytes(b"\xff\xfe\xfa\n")  # not utf-8


def run_task(task) -> int:
    try:
        return sum(t.num_rows for t in task())
    except ErrorBudgetExceeded:
        return -1


def test_raise_mode_names_the_file():
    policy = ReadErrorPolicy()
    with pytest.raises(ReadError, match=r"^x\.bin: ValueError: bad bytes$"):
        list(policy.run_unit("x.bin", fail))
    with pytest.raises(ReadError, match=r"^x\.csv: row 4: ragged$"):
        policy.bad_row("x.csv", 4, "ragged")


def test_skip_mode_logs_counts_and_enforces_the_budget(caplog):
    policy = ReadErrorPolicy("skip", budget=2)
    with caplog.at_level(logging.WARNING, logger="torchray_loader"):
        assert list(policy.run_unit("a.bin", fail)) == []
        policy.bad_row("b.csv", 3, "ragged")
    assert [r.getMessage() for r in caplog.records] == [
        "skipped unreadable a.bin: ValueError: bad bytes (1 skipped, budget 2)",
        "skipped unreadable b.csv row 3: ragged (2 skipped, budget 2)",
    ]
    with pytest.raises(
        ErrorBudgetExceeded, match=r"3 unreadable items exceed read_error_budget=2.*a\.bin.*b\.csv row 3"
    ):
        policy.bad_row("c.csv", 1, "ragged")
    assert policy.skipped() == [
        SkippedItem("a.bin", None, "ValueError: bad bytes"),
        SkippedItem("b.csv", 3, "ragged"),
        SkippedItem("c.csv", 1, "ragged"),
    ]


def test_the_same_item_is_counted_once():
    policy = ReadErrorPolicy("skip", budget=1)
    for _ in range(3):  # e.g. three epochs over the same bad file
        assert list(policy.run_unit("a.bin", fail)) == []
    assert len(policy.skipped()) == 1


def test_negative_budget_is_unlimited():
    policy = ReadErrorPolicy("skip", budget=-1)
    for i in range(50):
        policy.bad_row("a.csv", i, "bad")
    assert len(policy.skipped()) == 50


def test_a_unit_failing_part_way_yields_nothing_under_skip():
    def half():
        yield 1
        raise OSError("truncated")

    assert list(ReadErrorPolicy("skip", budget=1).run_unit("f", half)) == []
    with pytest.raises(ReadError, match="f: truncated"):
        list(ReadErrorPolicy().run_unit("f", half))


def test_setup_errors_are_never_skipped():
    def missing_extra():
        raise ImportError("no torchvision")

    with pytest.raises(ImportError):
        list(ReadErrorPolicy("skip", budget=5).run_unit("f", missing_extra))


class EndpointConnectionError(Exception):
    """Named as botocore's: a client's connection error that is no builtin ConnectionError."""


@pytest.mark.parametrize("exc", [ConnectionRefusedError(111, "Connection refused"), TimeoutError("timed out"),
                                 EndpointConnectionError("Could not connect to the endpoint URL")])
def test_unreachable_storage_is_never_skipped(exc):
    """A file the storage could not serve may be fine: skipping it would drop its rows silently."""
    def unreachable():
        raise exc

    policy = ReadErrorPolicy("skip", budget=5)
    with pytest.raises(ReadError, match=r"s3://b/k\.csv: .*not skipped: the storage could not be reached"):
        list(policy.run_unit("s3://b/k.csv", unreachable))
    assert policy.skipped() == []
    with pytest.raises(ReadError, match=r"s3://b/k\.csv: "):
        list(ReadErrorPolicy().run_unit("s3://b/k.csv", unreachable))


def test_a_bare_missing_key_reads_as_missing():
    """s3fs raises FileNotFoundError(key) for an object deleted after listing: the reason says so."""
    def gone():
        raise FileNotFoundError("bkt/d/b.csv")

    with pytest.raises(ReadError, match=r"s3://bkt/d/b\.csv: no such file or directory: bkt/d/b\.csv$"):
        list(ReadErrorPolicy().run_unit("s3://bkt/d/b.csv", gone))


def test_bad_policy_arguments():
    with pytest.raises(ValueError, match="on_read_error"):
        ReadErrorPolicy("ignore")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="read_error_budget"):
        ReadErrorPolicy("skip", budget=1.5)  # type: ignore[arg-type]


def test_ledger_is_created_lazily_and_removed_with_the_policy():
    policy = ReadErrorPolicy("skip", budget=3)
    ledger = policy.ledger
    assert ledger is not None and not os.path.exists(ledger)
    policy.bad_row("a", 1, "x")
    assert os.path.exists(ledger)
    clone = pickle.loads(pickle.dumps(policy))
    assert clone.ledger == ledger and clone.skipped() == policy.skipped()
    del clone
    gc.collect()
    assert os.path.exists(ledger)  # copies never own the ledger
    del policy
    gc.collect()
    assert not os.path.exists(ledger)


def test_budget_is_shared_by_tasks_in_worker_processes(tmp_path):
    write_text_files(tmp_path, good=4, bad=4)
    for budget, expect_exceeded in ((4, False), (2, True)):
        tasks = plan_read(
            str(tmp_path),
            read_text_unit,
            override_num_blocks=8,
            on_read_error="skip",
            read_error_budget=budget,
        )
        with multiprocessing.get_context("fork").Pool(2) as pool:
            results = pool.map(run_task, tasks)
        policy = tasks[0].read_fn.keywords["policy"]
        if expect_exceeded:
            assert -1 in results  # some task saw the shared count go past the budget
        else:
            assert results == [0, 0, 0, 0, 1, 1, 1, 1]
            assert sorted(pathlib.Path(s.path).name for s in policy.skipped()) == [
                f"bad{i:02d}.txt" for i in range(4)
            ]
            assert all(s.row == 1 for s in policy.skipped())


def test_dataset_level_skip_and_report(tmp_path):
    write_text_files(tmp_path, good=3, bad=2)
    with pytest.raises(ReadError, match=r"bad00\.txt: row 1: cannot decode as utf-8"):
        rd.read_text(str(tmp_path)).take_all()
    ds = rd.read_text(str(tmp_path), on_read_error="skip", read_error_budget=5)
    assert [r["text"] for r in ds.take_all()] == ["line 0", "line 1", "line 2"]
    assert [(pathlib.Path(s.path).name, s.row) for s in read_skips(ds)] == [
        ("bad00.txt", 1),
        ("bad01.txt", 1),
    ]
    assert read_skips(ds.map(lambda r: r)) == read_skips(ds)


def test_context_sets_the_policy(tmp_path):
    write_text_files(tmp_path, good=1, bad=2)
    ctx = rd.DataContext.get_current()
    ctx.on_read_error = "skip"
    ctx.read_error_budget = 1
    with pytest.raises(ErrorBudgetExceeded, match="read_error_budget=1"):
        rd.read_text(str(tmp_path)).take_all()
    ctx.read_error_budget = 2
    assert rd.read_text(str(tmp_path)).take_all() == [{"text": "line 0"}]
