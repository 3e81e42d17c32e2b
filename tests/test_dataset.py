"""Unit tests for every Dataset method (issue 2), run inline and on worker processes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

import torchray_loader as rd
from torchray_loader.pytorch.sampling import randperm_permutations


@pytest.fixture(params=[0, 2], ids=["inline", "workers2"])
def num_workers(request):
    rd.DataContext.get_current().num_workers = request.param
    return request.param


def add_one(row):
    return {"id": row["id"] + 1}


def double_batch(batch):
    return {"id": batch["id"] * 2}


def is_even(row):
    return row["id"] % 2 == 0


def repeat_twice(row):
    return [row, row]


def batch_generator(batch):
    yield {"id": batch["id"]}
    yield {"id": batch["id"] + 1000}


class AddConstant:
    def __init__(self, c, *, scale=1):
        self.c = c
        self.scale = scale

    def __call__(self, batch):
        return {"id": batch["id"] * self.scale + self.c}


def ids(ds):
    return [r["id"] for r in ds.take_all()]


# ---------------------------------------------------------------------------- sources


def test_range_and_repr():
    ds = rd.range(10)
    assert repr(ds) == "Dataset(num_rows=10, schema={id: int64})"
    assert ids(ds) == list(range(10))
    assert rd.range(0).count() == 0 and rd.range(0).take_all() == []


def test_range_tensor():
    ds = rd.range_tensor(4, shape=(2, 3))
    rows = ds.take_all()
    assert rows[3]["data"].shape == (2, 3) and (rows[3]["data"] == 3).all()
    assert "numpy.ndarray(shape=(2, 3), dtype=int64)" in str(ds.schema())


def test_from_items_dicts_and_scalars():
    assert rd.from_items([{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]).take_all() == [
        {"a": 1, "b": "x"},
        {"a": 2, "b": "y"},
    ]
    assert rd.from_items([1, 2, 3]).take_all() == [{"item": 1}, {"item": 2}, {"item": 3}]
    with pytest.raises(TypeError, match="items"):
        rd.from_items("abc")


def test_from_numpy_list_and_errors():
    ds = rd.from_numpy([np.arange(3), np.arange(3, 5)])
    assert [r["data"] for r in ds.take_all()] == [0, 1, 2, 3, 4]
    with pytest.raises(TypeError):
        rd.from_numpy([[1, 2]])
    with pytest.raises(ValueError, match="dimension"):
        rd.from_numpy(np.array(3))


def test_from_pandas_and_arrow():
    df = pd.DataFrame({"a": [1, 2], "b": [0.5, 1.5]})
    assert rd.from_pandas(df).to_pandas().equals(df)
    t = pa.table({"a": [1, 2, 3]})
    assert rd.from_arrow(t).count() == 3
    assert rd.from_arrow([t, t]).count() == 6


# ---------------------------------------------------------------------------- transforms


def test_map_filter_flat_map(num_workers):
    ds = rd.range(20).map(add_one).filter(is_even).flat_map(repeat_twice)
    expected = [x for i in range(20) if (i + 1) % 2 == 0 for x in (i + 1, i + 1)]
    assert ids(ds) == expected


def test_map_batches_formats(num_workers):
    for fmt in ("default", "numpy", "pandas", "pyarrow"):
        def ident(batch, fmt=fmt):
            if fmt == "pandas":
                assert isinstance(batch, pd.DataFrame)
            elif fmt == "pyarrow":
                assert isinstance(batch, pa.Table)
            else:
                assert isinstance(batch, dict)
            return batch

        assert ids(rd.range(7).map_batches(ident, batch_format=fmt, batch_size=3)) == list(range(7))


def test_map_batches_batch_size_none_and_generator(num_workers):
    ds = rd.range(6, override_num_blocks=2).map_batches(batch_generator, batch_size=None)
    out = ids(ds)
    assert sorted(out) == sorted(list(range(6)) + [i + 1000 for i in range(6)])
    assert out[:3] == [0, 1, 2]  # first block's first yield


def test_map_batches_returns_torch_and_lists(num_workers):
    def to_torch(batch):
        return {"t": torch.as_tensor(batch["id"]).float(), "l": [str(i) for i in batch["id"]]}

    rows = rd.range(3).map_batches(to_torch).take_all()
    assert rows == [{"t": 0.0, "l": "0"}, {"t": 1.0, "l": "1"}, {"t": 2.0, "l": "2"}]


def test_callable_class_with_constructor_args(num_workers):
    ds = rd.range(5).map_batches(
        AddConstant, fn_constructor_args=(10,), fn_constructor_kwargs={"scale": 2}, concurrency=2
    )
    assert ids(ds) == [10, 12, 14, 16, 18]
    ds = rd.range(3).map_batches(AddConstant, fn_constructor_args=(1,), compute=rd.ActorPoolStrategy(min_size=1, max_size=2))
    assert ids(ds) == [1, 2, 3]


def test_fn_args_kwargs():
    def add(row, a, *, b):
        return {"id": row["id"] + a + b}

    assert ids(rd.range(2).map(add, fn_args=(1,), fn_kwargs={"b": 10})) == [11, 12]


def test_columns_ops():
    ds = rd.from_items([{"a": 1, "b": 2, "c": 3}])
    assert ds.drop_columns(["b"]).take_all() == [{"a": 1, "c": 3}]
    assert ds.select_columns(["c", "a"]).take_all() == [{"c": 3, "a": 1}]
    assert ds.rename_columns({"a": "x"}).take_all() == [{"x": 1, "b": 2, "c": 3}]
    assert ds.add_column("d", lambda df: df["a"] + df["c"]).take_all() == [{"a": 1, "b": 2, "c": 3, "d": 4}]
    with pytest.raises(ValueError, match="no column"):
        ds.select_columns(["zzz"]).take_all()
    with pytest.raises(TypeError):
        ds.drop_columns(3)


def test_limit_union(num_workers):
    assert ids(rd.range(100).limit(5)) == [0, 1, 2, 3, 4]
    assert rd.range(10).limit(0).take_all() == []
    assert rd.range(3).limit(10).count() == 3
    assert ids(rd.range(2).union(rd.range(3), rd.range(1))) == [0, 1, 0, 1, 2, 0]
    with pytest.raises(ValueError, match="limit"):
        rd.range(3).limit(-1)


def test_shuffles_are_permutations_and_seeded(num_workers):
    ds = rd.range(100)
    a = ids(ds.random_shuffle(seed=1))
    assert sorted(a) == list(range(100)) and a != list(range(100))
    assert a == ids(ds.random_shuffle(seed=1))
    b = ids(ds.randomize_block_order(seed=3))
    assert sorted(b) == list(range(100)) and b == ids(ds.randomize_block_order(seed=3))
    unseeded = ds.random_shuffle()
    assert ids(unseeded) != ids(unseeded)  # each execution reshuffles (1 in 100! chance of a false fail)


def test_repartition():
    ds = rd.range(10).repartition(3).materialize()
    assert ds.num_blocks() == 3 and ids(ds) == list(range(10))
    with pytest.raises(ValueError, match="num_blocks"):
        rd.range(3).repartition(0)


def test_split_and_streaming_split():
    parts = rd.range(10).split(3)
    assert [p.count() for p in parts] == [4, 3, 3]
    assert sum((ids(p) for p in parts), []) == list(range(10))
    assert [p.count() for p in rd.range(10).split(3, equal=True)] == [3, 3, 3]
    with pytest.raises(ValueError, match="n"):
        rd.range(10).split(0)
    its = rd.range(40).streaming_split(3)
    seen = sorted(r["id"] for it in its for r in it.iter_rows())
    assert seen == list(range(40))
    its = rd.range(10).streaming_split(3, equal=True)
    assert [sum(1 for _ in it.iter_rows()) for it in its] == [3, 3, 3]


def test_train_test_split():
    train, test = rd.range(10).train_test_split(0.3)
    assert ids(train) == list(range(7)) and ids(test) == [7, 8, 9]
    train, test = rd.range(10).train_test_split(2, shuffle=True, seed=0)
    assert sorted(ids(train) + ids(test)) == list(range(10)) and test.count() == 2


def test_materialize_reuses_blocks():
    calls = []

    def record(batch):
        calls.append(1)
        return batch

    m = rd.range(10).map_batches(record).materialize()
    n = len(calls)
    assert ids(m) == list(range(10)) and ids(m) == list(range(10))
    assert len(calls) == n


# ---------------------------------------------------------------------------- consumption


def test_iter_batches_formats_and_drop_last(num_workers):
    ds = rd.range(10)
    assert [len(b["id"]) for b in ds.iter_batches(batch_size=4)] == [4, 4, 2]
    assert [len(b["id"]) for b in ds.iter_batches(batch_size=4, drop_last=True)] == [4, 4]
    assert all(isinstance(b, pd.DataFrame) for b in ds.iter_batches(batch_size=4, batch_format="pandas"))
    assert all(isinstance(b, pa.Table) for b in ds.iter_batches(batch_size=4, batch_format="pyarrow"))
    assert [len(b["id"]) for b in ds.iter_batches(batch_size=100)] == [10]
    assert list(rd.range(0).iter_batches(batch_size=4)) == []


def test_iter_batches_local_shuffle_is_seeded_permutation(num_workers):
    ds = rd.range(1000)
    a = np.concatenate([b["id"] for b in ds.iter_batches(batch_size=32, local_shuffle_buffer_size=100, local_shuffle_seed=5)])
    b = np.concatenate([b["id"] for b in ds.iter_batches(batch_size=32, local_shuffle_buffer_size=100, local_shuffle_seed=5)])
    assert (a == b).all() and sorted(a) == list(range(1000)) and (a != np.arange(1000)).any()


def test_local_shuffle_orders_are_the_same_for_every_batch_format(num_workers):
    ds = rd.range(500)
    kw = {"batch_size": 16, "local_shuffle_buffer_size": 64, "local_shuffle_seed": 11}
    numpy_order = np.concatenate([b["id"] for b in ds.iter_batches(**kw)])
    torch_order = torch.cat([b["id"] for b in ds.iter_torch_batches(**kw)]).numpy()
    arrow_order = np.concatenate([b["id"].to_numpy() for b in ds.iter_batches(batch_format="pyarrow", **kw)])
    assert (numpy_order == torch_order).all() and (numpy_order == arrow_order).all()
    assert sorted(numpy_order) == list(range(500)) and (numpy_order != np.arange(500)).any()
    # the first window (rows 0-63) in the order of torch's randperm for that seed
    assert numpy_order[:64].tolist() == randperm_permutations(11)(64).tolist()


def test_iter_torch_batches_dtypes_and_collate(num_workers):
    ds = rd.from_items([{"x": i, "y": float(i), "s": str(i)} for i in range(5)])
    b = next(iter(ds.iter_torch_batches(batch_size=5, dtypes=torch.float32)))
    assert b["x"].dtype == torch.float32 and b["s"] == ["0", "1", "2", "3", "4"]
    b = next(iter(ds.iter_torch_batches(batch_size=5, dtypes={"x": torch.int32})))
    assert b["x"].dtype == torch.int32 and b["y"].dtype == torch.float64
    out = list(ds.iter_torch_batches(batch_size=2, collate_fn=lambda batch: torch.as_tensor(batch["x"]) * 2))
    assert [t.tolist() for t in out] == [[0, 2], [4, 6], [8]]
    with pytest.raises(TypeError, match="dtypes"):
        next(iter(ds.iter_torch_batches(dtypes="float")))


def test_iter_torch_batches_ragged_and_strings():
    ds = rd.from_items([{"r": np.arange(i + 1), "s": "a" * i} for i in range(4)])
    b = next(iter(ds.iter_torch_batches(batch_size=4)))
    assert [t.tolist() for t in b["r"]] == [[0], [0, 1], [0, 1, 2], [0, 1, 2, 3]]
    assert b["s"] == ["", "a", "aa", "aaa"]


def test_iter_torch_batches_mutation_never_corrupts_source():
    arr = np.arange(12, dtype=np.float32).reshape(6, 2)
    ds = rd.from_numpy(arr)
    for batch in ds.iter_torch_batches(batch_size=2):
        batch["data"] += 100
    assert (arr == np.arange(12, dtype=np.float32).reshape(6, 2)).all()
    assert ds.take_batch(6)["data"].tolist() == arr.tolist()


def identity_table(table):
    return table


@pytest.mark.parametrize("materialize", [False, True])
def test_iter_torch_batches_mutation_never_corrupts_mapped_or_materialized_blocks(num_workers, materialize):
    original = np.arange(4000, dtype=np.float32).reshape(1000, 4)
    arr = original.copy()
    ds = rd.from_numpy(arr).map_batches(identity_table, batch_format="pyarrow")
    if materialize:
        ds = ds.materialize()
    for batch in ds.iter_torch_batches(batch_size=64):
        batch["data"] += 1000
    assert (arr == original).all()
    assert ds.take_batch(1000)["data"].tolist() == original.tolist()


def count_copies(monkeypatch) -> list[int]:
    """A list that grows by one for each column ``iter_torch_batches`` copies into a tensor."""
    from torchray_loader.pytorch import convert

    copies: list[int] = []
    real = convert.numpy_to_torch_value
    monkeypatch.setattr(convert, "numpy_to_torch_value", lambda *a, **k: copies.append(1) or real(*a, **k))
    return copies


def test_iter_torch_batches_hands_out_worker_blocks_without_a_copy(monkeypatch):
    copies = count_copies(monkeypatch)
    rd.DataContext.get_current().num_workers = 2
    assert sum(len(b["id"]) for b in rd.range(1000, override_num_blocks=4).iter_torch_batches(batch_size=100)) == 1000
    assert copies == []  # worker results are this iteration's own memory


@pytest.mark.parametrize("source", ["range", "parquet"])
def test_inline_reads_are_handed_out_without_a_copy(monkeypatch, tmp_path, source):
    rd.DataContext.get_current().num_workers = 0
    if source == "parquet":
        rd.range(1000, override_num_blocks=4).write_parquet(str(tmp_path))
        ds = rd.read_parquet(str(tmp_path))
    else:
        ds = rd.range(1000, override_num_blocks=4)
    copies = count_copies(monkeypatch)
    batches = list(ds.iter_torch_batches(batch_size=100))
    assert sorted(int(x) for b in batches for x in b["id"]) == list(range(1000))
    assert copies == []  # a block a read decoded in this process is nobody else's


def double_ids(batch):
    return {"id": batch["id"] * 2}  # new arrays nobody else holds


KEPT_IDS = np.arange(100)


def kept_ids(batch):
    return {"id": KEPT_IDS}  # the function's own array: the batch must not alias it


def test_a_materialized_udf_result_passed_through_later_is_copied(monkeypatch):
    rd.DataContext.get_current().num_workers = 0
    cached = rd.range(100, override_num_blocks=1).map_batches(double_ids).materialize()  # fresh in its task
    ds = cached.map_batches(identity_table, batch_format="pyarrow")  # hands the cached block back as it is
    copies = count_copies(monkeypatch)
    for batch in ds.iter_torch_batches(batch_size=100):
        batch["id"].fill_(-1)
    assert copies
    assert [r["id"] for r in cached.take_all()] == list(range(0, 200, 2))


def test_inline_udf_results_the_function_did_not_keep_are_handed_out_without_a_copy(monkeypatch):
    rd.DataContext.get_current().num_workers = 0
    ds = rd.range(1000, override_num_blocks=4).map_batches(double_ids, batch_size=100)
    copies = count_copies(monkeypatch)
    assert sorted(int(x) for b in ds.iter_torch_batches(batch_size=100) for x in b["id"]) == list(range(0, 2000, 2))
    assert copies == []


@pytest.mark.parametrize("source", ["from_numpy", "kept_by_udf"])
def test_inline_blocks_that_may_be_shared_are_copied(monkeypatch, source):
    rd.DataContext.get_current().num_workers = 0
    if source == "from_numpy":
        ds = rd.from_numpy(np.arange(1000)).rename_columns({"data": "id"})
    else:
        ds = rd.range(1000, override_num_blocks=10).map_batches(kept_ids, batch_size=100)
    copies = count_copies(monkeypatch)
    for batch in ds.iter_torch_batches(batch_size=100):
        batch["id"].fill_(-1)  # a training loop writing to its batch
    assert copies
    assert KEPT_IDS.tolist() == list(range(100))


def test_iter_batches_numpy_is_read_only_zero_copy():
    ds = rd.from_numpy(np.arange(10))
    batch = next(iter(ds.iter_batches(batch_size=5)))
    with pytest.raises(ValueError, match="read-only"):
        batch["data"][0] = 1


def test_take_take_batch_show_count_schema(capsys):
    ds = rd.range(30)
    assert ds.take(3) == [{"id": 0}, {"id": 1}, {"id": 2}]
    assert ds.take_batch(4)["id"].tolist() == [0, 1, 2, 3]
    assert isinstance(ds.take_batch(4, batch_format="pandas"), pd.DataFrame)
    ds.limit(2).show()
    assert capsys.readouterr().out == "{'id': 0}\n{'id': 1}\n"
    assert ds.filter(is_even).count() == 15
    assert ds.map(add_one).schema().names == ["id"]
    with pytest.raises(ValueError, match="empty"):
        rd.range(0).take_batch(2)
    with pytest.raises(ValueError, match="limit"):
        rd.range(5).take_all(limit=3)


def test_stats_reports_operators():
    ds = rd.range(100).map_batches(double_batch)
    list(ds.iter_batches(batch_size=10))
    text = ds.stats()
    assert "ReadRange->MapBatches(double_batch)" in text and "100 rows" in text
    assert ds.stats_dict()["iteration"]["batches"] == 10


def test_to_pandas_and_iter():
    assert list(rd.range(3).to_pandas()["id"]) == [0, 1, 2]
    assert [r["id"] for r in rd.range(3)] == [0, 1, 2]


# ---------------------------------------------------------------------------- bad input


def not_a_dict(row):
    return 42


def unequal_columns(batch):
    return {"a": [1, 2], "b": [1]}


def test_udf_returning_non_dict_row_names_the_operator():
    with pytest.raises(TypeError, match="dict"):
        rd.range(3).map(not_a_dict).take_all()


def test_unequal_column_lengths():
    with pytest.raises(ValueError, match="unequal lengths"):
        rd.range(3).map_batches(unequal_columns).take_all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="batch_format"):
        rd.range(3).map_batches(double_batch, batch_format="arrow")
    with pytest.raises(ValueError, match="batch_size"):
        rd.range(3).map_batches(double_batch, batch_size=0)
    with pytest.raises(ValueError, match="batch_size"):
        next(iter(rd.range(3).iter_batches(batch_size=0)))
    with pytest.raises(TypeError, match="fn"):
        rd.range(3).map(3)
    with pytest.raises(ValueError, match="concurrency"):
        rd.range(3).map(add_one, concurrency=0)
    with pytest.raises(ValueError, match="fn_constructor_args"):
        rd.range(3).map(add_one, fn_constructor_args=(1,))


class Boom(Exception):
    pass


def explode(row):
    if row["id"] == 7:
        raise Boom("row 7 is bad")
    return row


def test_user_exception_keeps_type_and_names_operator(num_workers):
    with pytest.raises(Boom, match="row 7") as info:
        rd.range(10).map(explode).take_all()
    cause = info.value.__cause__
    assert isinstance(cause, rd.UserCodeError)
    assert "Map(explode)" in str(cause) and "row 7 is bad" in cause.worker_traceback


#: First ids of the blocks a pipeline has read (inline: the UDF runs in this process).
READ_BLOCKS: list[int] = []


def _record_block(batch):
    READ_BLOCKS.append(int(batch["id"][0]))
    return batch


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("torch_batches", [False, True])
def test_first_batch_waits_only_for_its_own_window(shuffle, torch_batches, fresh_data_context):
    """A batch is handed over as soon as its block or shuffle window has no further batch, not
    when the next window has been read too (that doubled the time to first batch)."""
    fresh_data_context.num_workers = 0
    READ_BLOCKS.clear()
    ds = rd.range(10_000, override_num_blocks=20).map_batches(_record_block, batch_size=None)
    kw = {"local_shuffle_buffer_size": 1_000} if shuffle else {}
    iterate = ds.iter_torch_batches if torch_batches else ds.iter_batches
    it = iter(iterate(batch_size=100, prefetch_batches=0, **kw))
    assert len(next(it)["id"]) == 100
    assert len(READ_BLOCKS) == (2 if shuffle else 1)  # 500-row blocks: a 1,000-row window is two
    rest = sum(len(b["id"]) for b in it)
    assert rest == 9_900 and len(READ_BLOCKS) == 20


def _prefetch_threads() -> int:
    import threading

    return sum(t.name == "torchray-prefetch" for t in threading.enumerate())


@pytest.mark.parametrize("shuffle", [None, 8])
def test_an_in_memory_dataset_makes_batches_in_the_callers_thread_and_a_read_one_ahead(shuffle):
    kw = dict(batch_size=4, local_shuffle_buffer_size=shuffle, local_shuffle_seed=0)
    in_memory = rd.from_numpy(np.arange(4000, dtype=np.float32))  # more batches than a chunk
    it = in_memory.iter_torch_batches(prefetch_batches=2, **kw)
    first = next(it)
    assert _prefetch_threads() == 0
    rows = sorted(v for b in [first, *it] for v in b["data"].tolist())
    assert rows == list(range(4000))

    read = rd.range(4000)
    it = read.iter_torch_batches(prefetch_batches=2, **kw)
    next(it)
    assert _prefetch_threads() == 1
    it.close()
    assert _prefetch_threads() == 0


# ------------------------------------------------------------------ argument checks, as Ray makes them


def test_rename_columns_takes_a_list_of_new_names():
    ds = rd.from_items([{"a": 1, "b": 2}])
    assert ds.rename_columns(["x", "y"]).take_all() == [{"x": 1, "y": 2}]
    with pytest.raises(ValueError, match="2 columns"):
        ds.rename_columns(["x"])


def test_collate_fn_with_dtypes_is_refused():
    with pytest.raises(ValueError, match="collate_fn cannot be used with dtypes"):
        rd.range(4).iter_torch_batches(batch_size=2, collate_fn=lambda b: b, dtypes=torch.float32)


@pytest.mark.parametrize("method", ["map", "map_batches", "flat_map", "filter"])
def test_misspelled_keywords_are_refused_and_ray_options_accepted(method):
    fn = {"map": lambda r: r, "map_batches": lambda b: b, "flat_map": lambda r: [r], "filter": lambda r: True}[method]
    with pytest.raises(TypeError, match=r"\['batchsize'\]"):
        getattr(rd.range(4), method)(fn, batchsize=2)
    assert getattr(rd.range(4), method)(fn, num_cpus=1, memory=1 << 20).count() == 4  # Ray's options: ignored here


@pytest.mark.parametrize("value", [5, "x", None, np.float32(1.0), np.array(3)])
def test_a_column_given_as_one_value_names_the_column(value):
    with pytest.raises(TypeError, match="column 'x' as a single"):
        rd.range(2).map_batches(lambda b: {"x": value}).take_all()


@pytest.mark.parametrize("seed", ["a", 1.5, -1, True])
def test_bad_seeds_are_refused_naming_the_argument(seed):
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        rd.range(4).random_shuffle(seed=seed)
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        rd.range(4).randomize_block_order(seed=seed)
    with pytest.raises(ValueError, match="local_shuffle_seed must be an int >= 0"):
        list(rd.range(4).iter_batches(local_shuffle_buffer_size=2, local_shuffle_seed=seed))


def test_a_bad_device_names_the_argument():
    with pytest.raises(ValueError, match="device must be"):
        list(rd.range(4).iter_torch_batches(device="nope"))
