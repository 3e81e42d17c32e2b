"""``to_ray`` / ``from_ray`` / the RayStyleLoader hook against a local Ray runtime (``ray.init(num_cpus=2)``).

For each pipeline the rows Ray produces from ``to_ray()`` must equal the local rows: exactly (in
order) when the Ray dataset is asked to preserve order, as multisets where Ray may reorder (shuffles,
Ray's default execution).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
torch = pytest.importorskip("torch")

import torchray_loader as rd  # noqa: E402
from torchray_loader.blocks.tensors import PythonObjectType, VariableShapeTensorType  # noqa: E402
from torchray_loader.integrations.ray import (  # noqa: E402
    from_ray,
    is_ray_dataset,
    ray_iterable_to_batches,
    to_ray,
)
from torchray_loader.plan import MapStage  # noqa: E402
from torchray_loader.plan.compute import ActorPoolStrategy, TaskPoolStrategy  # noqa: E402
from torchray_loader.plan.transforms import BlockTransform  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")]


@pytest.fixture(scope="module", autouse=True)
def _ray(ray_runtime: Any) -> Any:
    """The module's Ray runtime; this module's functions travel to Ray workers by value (the
    workers cannot import a pytest test module)."""
    module = sys.modules[__name__]
    ray_runtime.cloudpickle.register_pickle_by_value(module)
    yield ray_runtime
    ray_runtime.cloudpickle.unregister_pickle_by_value(module)


@pytest.fixture(autouse=True)
def _inline_local_execution(fresh_data_context: rd.DataContext) -> None:
    # The local reference runs inline: no fork of a process that holds Ray's threads. (Results do not
    # depend on num_workers: promise 2.)
    fresh_data_context.num_workers = 0


# ------------------------------------------------------------------------------ row comparison


def _value(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        if v.dtype == object:
            return ("obj", tuple(_value(x) for x in v))
        return ("nd", v.dtype.str, v.shape, tuple(v.ravel().tolist()))
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (list, tuple)):
        return tuple(_value(x) for x in v)
    return v


def _row(row: Any) -> tuple:
    return tuple(sorted((k, _value(v)) for k, v in dict(row).items()))


def _rows(rows: list[Any]) -> list[tuple]:
    return [_row(r) for r in rows]


def _multiset(rows: list[Any]) -> list[tuple]:
    return sorted(_rows(rows), key=repr)


# ------------------------------------------------------------------------------ UDFs


def first_of_item(row: dict) -> dict:
    return {"x": int(row["item"][0])}


def add_square(row: dict) -> dict:
    return {"id": row["id"], "sq": row["id"] ** 2}


def not_div3(row: dict) -> bool:
    return row["id"] % 3 != 0


def double_batch(batch: dict) -> dict:
    return {"id": batch["id"], "x2": batch["id"] * 2}


def pandas_batch(df: Any) -> Any:
    df["label"] = df["name"].str.upper()
    return df


def arrow_batch(table: pa.Table) -> pa.Table:
    import pyarrow.compute as pc

    return table.append_column("neg", pc.negate(table.column("id")))


def scale(row: dict, factor: int, *, offset: int) -> dict:
    return {"id": row["id"] * factor + offset}


def repeat_n(row: dict) -> list[dict]:
    return [{"n": row["n"], "k": k} for k in range(row["n"])]


def ragged(batch: dict) -> dict:
    data = batch["data"]
    return {"data": data * 2, "rag": [np.arange(int(v[0, 0]) % 3 + 1, dtype=np.float32) for v in data]}


class AddOffset:
    """A callable class: constructed once per actor with its constructor arguments."""

    def __init__(self, offset: int) -> None:
        self.offset = offset

    def __call__(self, batch: dict) -> dict:
        return {"id": batch["id"], "shifted": batch["id"] + self.offset}


CALLS: list[int] = []


def record_call(row: dict) -> dict:
    CALLS.append(row["id"])
    return row


# ------------------------------------------------------------------------------ pipelines


def _parquet(tmp_path: Any) -> rd.Dataset:
    rd.range(24, override_num_blocks=3).map(add_square).write_parquet(str(tmp_path / "pq"))
    return rd.read_parquet(str(tmp_path / "pq")).filter(not_div3)


def _csv(tmp_path: Any) -> rd.Dataset:
    rd.from_items([{"a": i, "b": float(i) / 2} for i in range(15)], override_num_blocks=3).write_csv(str(tmp_path / "csv"))
    return rd.read_csv(str(tmp_path / "csv")).map_batches(lambda b: {"s": b["a"] + b["b"]}, batch_size=4)


#: name -> builder(tmp_path). Every pipeline keeps a defined order locally, so with
#: ``preserve_order=True`` Ray must give exactly the same rows in the same order.
ORDERED: dict[str, Callable[[Any], rd.Dataset]] = {
    "map_filter": lambda _: rd.range(40, override_num_blocks=4).map(add_square).filter(not_div3),
    "map_batches_numpy": lambda _: rd.range(30, override_num_blocks=3).map_batches(double_batch, batch_size=7),
    "map_batches_pandas": lambda _: rd.from_items(
        [{"name": f"n{i}"} for i in range(12)], override_num_blocks=2
    ).map_batches(pandas_batch, batch_format="pandas", batch_size=5),
    "map_batches_pyarrow_whole_blocks": lambda _: rd.range(9, override_num_blocks=3).map_batches(
        arrow_batch, batch_format="pyarrow", batch_size=None
    ),
    "actor_pool_class": lambda _: rd.range(20, override_num_blocks=4).map_batches(
        AddOffset, fn_constructor_args=(100,), compute=rd.ActorPoolStrategy(size=1), batch_size=4
    ),
    "fn_args_kwargs": lambda _: rd.range(10, override_num_blocks=2).map(scale, fn_args=(3,), fn_kwargs={"offset": 1}),
    "task_pool_size": lambda _: rd.range(10, override_num_blocks=2).map(add_square, concurrency=1),
    "flat_map": lambda _: rd.from_items([{"n": i} for i in range(6)], override_num_blocks=2).flat_map(repeat_n),
    "column_ops": lambda _: rd.range(10, override_num_blocks=2)
    .add_column("double", lambda df: df["id"] * 2)
    .rename_columns({"id": "x"})
    .select_columns(["double", "x"])
    .drop_columns(["x"]),
    "limit": lambda _: rd.range(100, override_num_blocks=5).map(add_square).limit(17),
    "repartition": lambda _: rd.range(20, override_num_blocks=2).map(add_square).repartition(5),
    "tensor_columns": lambda _: rd.range_tensor(12, shape=(2, 3), override_num_blocks=3).map_batches(ragged, batch_size=5),
    "from_numpy_tensor": lambda _: rd.from_numpy(np.arange(24, dtype=np.float32).reshape(6, 2, 2)),
    "object_column": lambda _: rd.from_items([{"i": i, "o": Fraction(i, 7)} for i in range(5)]),
    "read_parquet": _parquet,
    "read_csv": _csv,
    # a Read whose tasks reach the dataset through Read.shared (it travels with each Ray task)
    "from_torch": lambda _: rd.from_torch(
        __import__("torch").utils.data.TensorDataset(__import__("torch").arange(2500))
    ).map(first_of_item),
}


@pytest.mark.parametrize("name", sorted(ORDERED))
def test_to_ray_rows_equal_local_rows_in_order(name: str, tmp_path: Any) -> None:
    ds = ORDERED[name](tmp_path)
    local = ds.take_all()
    ray_rows = to_ray(ds, preserve_order=True).take_all()
    assert _rows(ray_rows) == _rows(local)
    assert len(local) > 0


@pytest.mark.parametrize("name", ["map_filter", "tensor_columns"])
def test_to_ray_default_order_gives_the_same_multiset(name: str, tmp_path: Any) -> None:
    ds = ORDERED[name](tmp_path)
    assert _multiset(ds.to_ray().take_all()) == _multiset(ds.take_all())


def test_to_ray_union_gives_the_same_multiset() -> None:
    # Ray's union interleaves its inputs block by block (round-robin, deterministic under
    # preserve_order) where this package concatenates them: same rows, different order.
    ds = rd.range(5, override_num_blocks=2).union(rd.from_items([{"id": 100 + i} for i in range(3)]), rd.range(2))
    a = to_ray(ds, preserve_order=True).take_all()
    assert _multiset(a) == _multiset(ds.take_all())
    assert _rows(a) == _rows(to_ray(ds, preserve_order=True).take_all())


@pytest.mark.parametrize(
    "build",
    [
        lambda: rd.range(60, override_num_blocks=6).map(add_square).random_shuffle(seed=3),
        lambda: rd.range(60, override_num_blocks=6).randomize_block_order(seed=3).filter(not_div3),
        lambda: rd.range(30, override_num_blocks=3).repartition(4, shuffle=True),
    ],
    ids=["random_shuffle", "randomize_block_order", "repartition_shuffle"],
)
def test_to_ray_shuffles_give_the_same_multiset(build: Callable[[], rd.Dataset]) -> None:
    ds = build()
    ray_ds = to_ray(ds, preserve_order=True)
    first = ray_ds.take_all()
    assert _multiset(first) == _multiset(ds.take_all())


def test_seeded_shuffle_is_reproducible_on_ray() -> None:
    ds = rd.range(50, override_num_blocks=5).random_shuffle(seed=7)
    a = to_ray(ds, preserve_order=True).take_all()
    b = to_ray(ds, preserve_order=True).take_all()
    assert _rows(a) == _rows(b)
    assert _rows(a) != _rows(rd.range(50).take_all())


def test_to_ray_builds_a_plan_not_a_copy() -> None:
    CALLS.clear()
    ds = rd.range(12, override_num_blocks=3).map(record_call).filter(not_div3)
    ray_ds = ds.to_ray()
    text = repr(ray_ds)
    assert "Map(record_call)" in text and "Filter(not_div3)" in text
    assert CALLS == []  # nothing ran here: converting executes nothing locally
    assert sorted(r["id"] for r in ray_ds.take_all()) == [1, 2, 4, 5, 7, 8, 10, 11]
    assert CALLS == []  # the map ran in Ray workers, not in this process


def test_to_ray_read_keeps_file_metadata(tmp_path: Any) -> None:
    ds = _parquet(tmp_path)
    ray_ds = ds.to_ray()
    assert sorted(ray_ds.input_files()) == ds.input_files()
    stats_plan = repr(ray_ds)
    assert "ReadParquet" in stats_plan or "Filter(not_div3)" in stats_plan


def _context_probe() -> list[pa.Table]:
    ctx = rd.DataContext.get_current()
    return [pa.table({"budget": [ctx.read_error_budget], "policy": [ctx.on_read_error]})]


def test_to_ray_read_tasks_run_under_the_drivers_data_context(fresh_data_context: rd.DataContext) -> None:
    from torchray_loader.io.read_task import ReadTask
    from torchray_loader.plan import Read

    fresh_data_context.on_read_error = "skip"
    fresh_data_context.read_error_budget = 7
    ds = rd.Dataset(Read((ReadTask(_context_probe, num_rows=1),), "ReadProbe"))
    assert ds.to_ray().take_all() == [{"budget": 7, "policy": "skip"}]


@dataclass(frozen=True)
class AddOneTransform(BlockTransform):
    """A transform with no Ray method of its own: to_ray runs it inside Ray's map_batches."""

    @property
    def name(self) -> str:
        return "AddOne"

    def __call__(self, blocks: Any) -> Any:
        for block in blocks:
            yield block.set_column(0, "id", pc.add(block.column("id"), 1))


@pytest.mark.parametrize("compute", [TaskPoolStrategy(), ActorPoolStrategy(size=1)], ids=["tasks", "actors"])
def test_to_ray_runs_other_transforms_as_they_run_locally(compute: Any) -> None:
    ds = rd.range(10, override_num_blocks=2)
    ds = rd.Dataset(MapStage(ds._plan, (AddOneTransform(),), compute))
    assert _rows(to_ray(ds, preserve_order=True).take_all()) == _rows(ds.take_all()) == _rows(
        [{"id": i + 1} for i in range(10)]
    )


def test_to_ray_repartition_gives_the_block_count() -> None:
    ray_ds = rd.range(20, override_num_blocks=2).repartition(5).to_ray()
    assert ray_ds.materialize().num_blocks() == 5


def test_to_ray_tensor_columns_become_ray_tensor_types() -> None:
    ds = ORDERED["tensor_columns"](None)
    ray_ds = to_ray(ds, preserve_order=True)
    names = {f.name: f.type for f in ray_ds.schema().base_schema}
    assert "tensor" in type(names["data"]).__name__.lower()
    assert "variableshaped" in type(names["rag"]).__name__.lower()
    batch = next(iter(ray_ds.select_columns(["data"]).iter_torch_batches(batch_size=4)))
    assert batch["data"].shape == (4, 2, 3)
    local = next(iter(ds.iter_torch_batches(batch_size=4)))
    assert torch.equal(batch["data"], local["data"])


def test_preserve_order_stays_on_the_converted_dataset() -> None:
    global_ctx = ray.data.DataContext.get_current()
    before = global_ctx.execution_options.preserve_order
    ray_ds = to_ray(rd.range(4), preserve_order=not before)
    assert ray_ds.context.execution_options.preserve_order is (not before)
    assert ray.data.DataContext.get_current().execution_options.preserve_order is before


def test_to_ray_rejects_what_ray_cannot_express() -> None:
    shard = rd.range(10).random_shuffle(seed=1).streaming_split(2)[0]
    with pytest.raises(NotImplementedError, match="streaming_split"):
        to_ray(shard._dataset)
    with pytest.raises(TypeError, match="Dataset"):
        to_ray([1, 2])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="preserve_order"):
        to_ray(rd.range(2), preserve_order="yes")  # type: ignore[arg-type]


def test_empty_sources_convert() -> None:
    assert rd.range(0).to_ray().count() == 0
    assert rd.range(10).filter(lambda r: False).to_ray().take_all() == []


# ------------------------------------------------------------------------------ from_ray


def test_from_ray_streams_rows_into_a_local_pipeline() -> None:
    ray_ds = ray.data.range(20, override_num_blocks=4).map(add_square)
    ds = from_ray(ray_ds)
    assert isinstance(ds, rd.Dataset)
    assert ds.map(lambda r: {"v": r["sq"] + 1}).take(3) == [{"v": 1}, {"v": 2}, {"v": 5}]
    assert ds.count() == 20
    assert _multiset(ds.take_all()) == _multiset(ray_ds.take_all())


def test_from_ray_is_exposed_at_the_package_root() -> None:
    assert rd.from_ray is from_ray


def test_from_ray_tensor_columns_come_back_as_package_types() -> None:
    ray_ds = ray.data.range_tensor(6, shape=(2, 2), override_num_blocks=2).map_batches(
        lambda b: {"data": b["data"], "rag": [np.ones(i % 3 + 1) for i in range(len(b["data"]))], "o": [Fraction(1, 3)] * len(b["data"])}
    )
    ds = from_ray(ray_ds)
    types = dict(zip(ds.schema().names, ds.schema().types, strict=True))
    assert isinstance(types["data"], pa.FixedShapeTensorType)
    assert isinstance(types["rag"], VariableShapeTensorType)
    assert isinstance(types["o"], PythonObjectType)
    assert "numpy.ndarray(shape=(2, 2), dtype=int64)" in str(ds.schema())
    batch = next(iter(ds.iter_torch_batches(batch_size=3)))
    assert batch["data"].shape == (3, 2, 2)
    assert ds.take(1)[0]["o"] == Fraction(1, 3)


def test_round_trip_local_ray_local() -> None:
    ds = ORDERED["tensor_columns"](None)
    back = from_ray(to_ray(ds, preserve_order=True))
    assert _rows(back.take_all()) == _rows(ds.take_all())
    assert back.schema().types == ds.schema().types


def test_from_ray_rejects_other_objects() -> None:
    with pytest.raises(TypeError, match="ray.data.Dataset"):
        from_ray(rd.range(3))
    with pytest.raises(TypeError, match="DataIterator"):
        from_ray(ray.data.range(3).iterator())


# ------------------------------------------------------------------------------ loader hook


def test_is_ray_dataset() -> None:
    ray_ds = ray.data.range(4)
    assert is_ray_dataset(ray_ds)
    assert is_ray_dataset(ray_ds.materialize())
    assert is_ray_dataset(ray_ds.iterator())
    assert not is_ray_dataset(rd.range(4))
    assert not is_ray_dataset(rd.range(4).streaming_split(2)[0])
    assert not is_ray_dataset(object())


def _ids(batches: Any) -> list[list[int]]:
    return [b["id"].tolist() for b in batches]


def test_ray_iterable_to_batches_matches_local_batches() -> None:
    ds = rd.range(23, override_num_blocks=3)
    ray_ds = to_ray(ds, preserve_order=True)
    local = _ids(ds.iter_torch_batches(batch_size=5))
    assert _ids(ray_iterable_to_batches(ray_ds, batch_size=5)) == local
    assert _ids(ray_iterable_to_batches(ray_ds.iterator(), batch_size=5)) == local
    dropped = _ids(ray_iterable_to_batches(ray_ds, batch_size=5, drop_last=True))
    assert dropped == local[:-1]
    assert _ids(ray_iterable_to_batches(ray_ds, batch_size=5, skip_batches=2)) == local[2:]
    batch = next(ray_iterable_to_batches(ray_ds, batch_size=4, dtypes=torch.float32))
    assert batch["id"].dtype == torch.float32 and batch["id"].device.type == "cpu"


def test_ray_iterable_to_batches_keeps_the_local_batch_structure() -> None:
    # Ragged tensors and strings: Ray's own iter_torch_batches raises; the hook gives what the
    # local loader gives (lists), so one training function serves both.
    ds = ORDERED["tensor_columns"](None).add_column(
        "name", lambda b: np.array([f"r{v[0, 0]}" for v in b["data"]]), batch_format="numpy"
    )
    ray_ds = to_ray(ds, preserve_order=True)
    local = list(ds.iter_torch_batches(batch_size=5, dtypes={"data": torch.float64}))
    remote = list(ray_iterable_to_batches(ray_ds, batch_size=5, dtypes={"data": torch.float64}))
    assert len(local) == len(remote) == 3
    for a, b in zip(local, remote, strict=True):
        assert a.keys() == b.keys()
        assert a["data"].dtype == b["data"].dtype == torch.float64 and torch.equal(a["data"], b["data"])
        assert isinstance(b["rag"], list) and all(torch.equal(x, y) for x, y in zip(a["rag"], b["rag"], strict=True))
        assert a["name"] == b["name"] and isinstance(b["name"], list)
    b0 = remote[0]["data"]
    b0 += 1  # writable, as local batches are


def test_ray_iterable_to_batches_shuffle_is_seeded_per_epoch() -> None:
    ray_ds = to_ray(rd.range(200, override_num_blocks=8), preserve_order=True)

    def epoch(e: int, seed: int | None = 5) -> list[int]:
        batches = ray_iterable_to_batches(ray_ds, batch_size=16, shuffle=True, seed=seed, epoch=e, local_shuffle_buffer_size=64)
        return [i for ids in _ids(batches) for i in ids]

    e0, e0_again, e1 = epoch(0), epoch(0), epoch(1)
    assert sorted(e0) == list(range(200)) and sorted(e1) == list(range(200))  # exactly once
    assert e0 == e0_again  # same (seed, epoch): same order
    assert e0 != e1  # new epoch: new order
    assert e0 != list(range(200))
    resumed = ray_iterable_to_batches(ray_ds, batch_size=16, shuffle=True, seed=5, epoch=0, local_shuffle_buffer_size=64, skip_batches=3)
    assert [i for ids in _ids(resumed) for i in ids] == e0[48:]  # seeded + ordered: an exact resume
    # A DataIterator (a Ray Train shard) shuffles through the buffer only.
    shard = [i for ids in _ids(ray_iterable_to_batches(ray_ds.iterator(), batch_size=16, shuffle=True, seed=1)) for i in ids]
    assert sorted(shard) == list(range(200))


def test_ray_iterable_to_batches_collate_fn_and_errors() -> None:
    ray_ds = to_ray(rd.range(8, override_num_blocks=2), preserve_order=True)
    out = list(ray_iterable_to_batches(ray_ds, batch_size=4, collate_fn=lambda b: torch.from_numpy(b["id"]).sum()))
    assert [int(x) for x in out] == [6, 22]
    with pytest.raises(ValueError, match="collate_fn"):
        ray_iterable_to_batches(ray_ds, batch_size=4, collate_fn=lambda b: b, dtypes=torch.float32)
    with pytest.raises(TypeError, match="ray.data.Dataset"):
        ray_iterable_to_batches(rd.range(3), batch_size=4)
    with pytest.raises(ValueError, match="local_shuffle_buffer_size"):
        ray_iterable_to_batches(ray_ds, batch_size=4, local_shuffle_buffer_size=0)


def test_raystyleloader_accepts_a_ray_dataset_and_resumes() -> None:
    ray_ds = rd.range(100).to_ray()
    loader = rd.RayStyleLoader(ray_ds, batch_size=16, shuffle=True, seed=1)
    epoch0 = [int(x) for b in loader for x in b["id"]]
    assert sorted(epoch0) == list(range(100)) and epoch0 != list(range(100))
    with pytest.raises(TypeError, match="len"):
        len(loader)
    loader = rd.RayStyleLoader(ray_ds, batch_size=16, shuffle=True, seed=1)
    it = iter(loader)
    head = [next(it)["id"].tolist() for _ in range(2)]
    state = loader.state_dict()
    rest = [b["id"].tolist() for b in it]
    resumed = rd.RayStyleLoader(ray_ds, batch_size=16, shuffle=True, seed=1)
    resumed.load_state_dict(state)
    assert [b["id"].tolist() for b in resumed] == rest
    assert sorted(sum(head + rest, [])) == list(range(100))
    with pytest.raises(ValueError, match="sampler"):
        rd.RayStyleLoader(ray_ds, sampler=[0, 1])
