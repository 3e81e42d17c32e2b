"""Misuse: things users do that the package must either support or refuse clearly.

Decisions this file pins down (and ``docs/reliability.md`` states):

* Zero-copy numpy batches (``iter_batches``) are read-only, as in Ray: writing raises numpy's
  ``ValueError: assignment destination is read-only``; ``np.array(col)`` gives a writable copy. UDF
  batches (``map_batches``) are writable. Torch batches are writable and private: writing to one never
  changes the dataset or a later epoch.
* Two threads iterating one ``RayStyleLoader``: each ``iter()`` is its own epoch with its own
  workers and delivers every row exactly once; with ``persistent_workers=True`` the shared workers
  serve one thread at a time, and a second thread's iterator raises ``RuntimeError`` saying so.
* A pipeline iterated inside a worker process (nested) runs inline in that worker.
* Zero rows, a ``batch_size`` above the row count, ``num_workers`` above the core count: all work, with
  the obvious results (no batch / one short batch / a warning and correct output).
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import warnings

import numpy as np
import pytest
import torch
from reliability_helpers import PerSampleTensors
from torch.utils.data import DataLoader, IterableDataset

import torchray_loader as rd

pytestmark = pytest.mark.timeout(120)


def ids(batches) -> list[int]:
    out: list[int] = []
    for b in batches:
        col = b["id"] if isinstance(b, dict) else b[0]
        out.extend(int(x) for x in col)
    return out


# ----------------------------------------------------------------------------- zero-copy batches


def test_numpy_batches_are_read_only_with_a_clear_error_and_copies_are_writable():
    batch = next(iter(rd.range(10).iter_batches(batch_size=5)))
    with pytest.raises(ValueError, match="assignment destination is read-only"):
        batch["id"][0] = 99
    mine = np.array(batch["id"])  # the documented way to get a writable copy
    mine[0] = 99
    assert rd.range(10).take(1) == [{"id": 0}]


def test_udf_batches_are_writable():
    def double_in_place(batch):
        batch["id"] *= 2  # would raise on a read-only view
        return batch

    assert ids(rd.range(6).map_batches(double_in_place).iter_batches()) == [0, 2, 4, 6, 8, 10]


@pytest.mark.parametrize("workers", [0, 2])
def test_writing_to_a_torch_batch_never_changes_the_data(fresh_data_context, workers):
    fresh_data_context.num_workers = workers
    ds = rd.from_numpy(np.arange(12, dtype=np.int64)).materialize()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "non-writable NumPy array" warning from torch either
        for epoch in range(2):
            for batch in ds.iter_torch_batches(batch_size=4):
                assert batch["data"].min() >= 0, f"epoch {epoch} sees an earlier epoch's writes"
                batch["data"].fill_(-1)
    assert [r["data"] for r in ds.take_all()] == list(range(12))
    loader = rd.RayStyleLoader(ds, batch_size=4, num_workers=workers)
    for _ in range(2):
        for batch in loader:
            assert batch["data"].min() >= 0
            batch["data"].fill_(-1)


# ----------------------------------------------------------------------------- threads


def run_in_threads(loader, n: int = 2) -> dict[int, object]:
    results: dict[int, object] = {}

    def go(k: int) -> None:
        try:
            results[k] = sorted(ids(loader))
        except Exception as exc:  # noqa: BLE001 - reported to the test
            results[k] = exc

    threads = [threading.Thread(target=go, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    return results


@pytest.mark.parametrize("kind", ["map", "arrow"])
def test_two_threads_iterating_one_loader_each_get_a_whole_epoch(kind):
    data = PerSampleTensors(torch.arange(40)) if kind == "map" else rd.range(40, override_num_blocks=4)
    loader = rd.RayStyleLoader(data, batch_size=4, shuffle=True, num_workers=2)
    results = run_in_threads(loader)
    assert results == {0: list(range(40)), 1: list(range(40))}


def test_persistent_workers_serve_one_thread_at_a_time():
    loader = rd.RayStyleLoader(PerSampleTensors(torch.arange(40)), batch_size=4, num_workers=2, persistent_workers=True)
    first = iter(loader)
    got = ids([next(first)])
    outcome: dict[str, object] = {}

    def other_thread() -> None:
        try:
            outcome["ids"] = ids(loader)
        except RuntimeError as exc:
            outcome["error"] = exc

    t = threading.Thread(target=other_thread)
    t.start()
    t.join(60)
    assert "one thread at a time" in str(outcome.get("error")), outcome
    got += ids(first)  # the first thread's epoch is unharmed
    assert sorted(got) == list(range(40))
    assert sorted(ids(loader)) == list(range(40))  # and the workers serve the next epoch
    t = threading.Thread(target=other_thread)  # or another thread, once this one is done
    t.start()
    t.join(60)
    assert outcome.get("ids") is not None and sorted(outcome["ids"]) == list(range(40))
    loader.close()


# ----------------------------------------------------------------------------- nesting


def test_a_udf_iterating_another_dataset_runs_it_inline_in_the_worker(fresh_data_context):
    fresh_data_context.num_workers = 2

    def lookup(batch):
        table = {r["id"]: r["id"] * 10 for r in rd.range(8).iter_rows()}  # a nested pipeline
        batch["ten"] = np.array([table[i] for i in batch["id"]])
        return batch

    rows = rd.range(8, override_num_blocks=2).map_batches(lookup).take_all()
    assert [r["ten"] for r in rows] == [10 * i for i in range(8)]


def test_a_loader_inside_a_udf_runs_inline_in_the_worker(fresh_data_context):
    fresh_data_context.num_workers = 2

    def inner_loader(batch):
        loader = rd.RayStyleLoader(rd.range(6), batch_size=2, num_workers=2)  # wants workers: runs inline
        batch["n"] = np.full(len(batch["id"]), sum(len(b["id"]) for b in loader))
        return batch

    assert {r["n"] for r in rd.range(4, override_num_blocks=2).map_batches(inner_loader).take_all()} == {6}


def test_a_udf_sends_the_package_module_by_name_not_by_value():
    """dill ships modules outside site-packages (a project, an editable install) by value, whole
    namespace included; the pool sends any imported module by name instead."""
    from torchray_loader.execution.process_pool import _dumps_fn

    def uses_module(batch):
        return rd.range(1)

    assert len(_dumps_fn(uses_module)) < 4096


class Wrapped(IterableDataset):
    """A torch IterableDataset that streams a torchray pipeline (with workers of its own, it thinks)."""

    def __iter__(self):
        ctx = rd.DataContext.get_current()
        ctx.num_workers = 2
        yield from (int(x) for b in rd.range(10, override_num_blocks=2).iter_batches() for x in b["id"])


def test_a_pipeline_inside_a_torch_dataloader_worker_runs_inline():
    assert sorted(int(x) for x in DataLoader(Wrapped(), batch_size=None, num_workers=1)) == list(range(10))


# ----------------------------------------------------------------------------- sizes


@pytest.mark.parametrize("workers", [0, 2])
def test_a_dataset_with_zero_rows(fresh_data_context, workers):
    fresh_data_context.num_workers = workers
    for ds in (rd.range(0), rd.from_items([]), rd.range(10).filter(lambda r: False)):
        assert list(ds.iter_batches(batch_size=4)) == []
        assert list(ds.iter_torch_batches(batch_size=4)) == []
        assert ds.count() == 0 and ds.take_all() == []
    loader = rd.RayStyleLoader(rd.range(0), batch_size=4, num_workers=workers)
    assert list(loader) == [] and len(loader) == 0
    empty = PerSampleTensors(torch.arange(0))
    assert list(rd.RayStyleLoader(empty, batch_size=4, num_workers=workers)) == list(DataLoader(empty, batch_size=4))


@pytest.mark.parametrize("drop_last", [False, True])
def test_a_batch_size_larger_than_the_dataset(fresh_data_context, drop_last):
    fresh_data_context.num_workers = 2
    expected = [] if drop_last else [list(range(7))]
    got = [b["id"].tolist() for b in rd.range(7).iter_batches(batch_size=100, drop_last=drop_last)]
    assert got == expected
    loader = rd.RayStyleLoader(rd.range(7), batch_size=100, drop_last=drop_last, num_workers=2)
    assert [b["id"].tolist() for b in loader] == expected
    assert len(loader) == len(expected)
    data = PerSampleTensors(torch.arange(7))
    mine = [b[0].tolist() for b in rd.RayStyleLoader(data, batch_size=100, drop_last=drop_last, num_workers=2)]
    assert mine == [b[0].tolist() for b in DataLoader(data, batch_size=100, drop_last=drop_last)]


def test_more_workers_than_cores_works_and_warns(fresh_data_context, caplog):
    cores = os.cpu_count() or 1
    fresh_data_context.num_workers = cores + 3
    with caplog.at_level(logging.WARNING, logger="torchray_loader"):
        got = ids(rd.range(300, override_num_blocks=30).map_batches(lambda b: b).iter_batches(batch_size=7))
    assert collections.Counter(got) == collections.Counter(range(300))
    assert any("above the" in r.getMessage() and "CPU cores" in r.getMessage() for r in caplog.records)
    data = PerSampleTensors(torch.arange(30))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DataLoader's own "suggested max number of worker" warning
        loader = rd.RayStyleLoader(data, batch_size=4, num_workers=cores + 3)
    assert [b[0].tolist() for b in loader] == [b[0].tolist() for b in DataLoader(data, batch_size=4)]
