"""Property tests: random datasets through random chains of transforms equal a plain-Python reference."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import torchray_loader as rd


def plus_k(k):
    def fn(row):
        return {"x": row["x"] + k}

    return fn


def keep_mod(m):
    def fn(row):
        return row["x"] % m != 0

    return fn


def dup(n):
    def fn(row):
        return [{"x": row["x"] * 10 + i} for i in range(n)]

    return fn


ops = st.one_of(
    st.tuples(st.just("map"), st.integers(-5, 5)),
    st.tuples(st.just("filter"), st.integers(2, 4)),
    st.tuples(st.just("flat_map"), st.integers(0, 3)),
    st.tuples(st.just("limit"), st.integers(0, 40)),
    st.tuples(st.just("repartition"), st.integers(1, 5)),
    st.tuples(st.just("union"), st.integers(0, 5)),
    st.tuples(st.just("map_batches"), st.integers(1, 7)),
)


def apply(ds, rows, op, arg):
    if op == "map":
        return ds.map(plus_k(arg)), [{"x": r["x"] + arg} for r in rows]
    if op == "filter":
        return ds.filter(keep_mod(arg)), [r for r in rows if r["x"] % arg != 0]
    if op == "flat_map":
        return ds.flat_map(dup(arg)), [{"x": r["x"] * 10 + i} for r in rows for i in range(arg)]
    if op == "limit":
        return ds.limit(arg), rows[:arg]
    if op == "repartition":
        return ds.repartition(arg), rows
    if op == "union":
        extra = [{"x": 1000 + i} for i in range(arg)]
        return ds.union(rd.from_items(extra) if extra else rd.from_items([{"x": 0}]).limit(0)), rows + extra
    if op == "map_batches":
        return ds.map_batches(lambda b: {"x": b["x"] * 2}, batch_size=arg), [{"x": r["x"] * 2} for r in rows]
    raise AssertionError(op)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    values=st.lists(st.integers(-1000, 1000), max_size=60),
    blocks=st.integers(1, 6),
    chain=st.lists(ops, max_size=5),
)
def test_random_chains_match_reference(values, blocks, chain):
    rows = [{"x": v} for v in values]
    ds = rd.from_items(rows, override_num_blocks=blocks) if rows else rd.from_items([{"x": 0}]).limit(0)
    for op, arg in chain:
        ds, rows = apply(ds, rows, op, arg)
    got = [r["x"] for r in ds.take_all()]
    assert got == [r["x"] for r in rows]
    assert ds.count() == len(rows)


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(0, 300),
    batch_size=st.integers(1, 64),
    drop_last=st.booleans(),
    buffer=st.one_of(st.none(), st.integers(1, 100)),
    seed=st.integers(0, 2**31),
)
def test_iter_batches_exactly_once(n, batch_size, drop_last, buffer, seed):
    ds = rd.range(n)
    batches = list(ds.iter_batches(batch_size=batch_size, drop_last=drop_last, local_shuffle_buffer_size=buffer, local_shuffle_seed=seed))
    sizes = [len(b["id"]) for b in batches]
    assert all(s == batch_size for s in sizes[:-1])
    seen = [int(x) for b in batches for x in b["id"]]
    assert len(seen) == len(set(seen))
    if drop_last:
        assert len(seen) == n // batch_size * batch_size
    else:
        assert sorted(seen) == list(range(n))
    if buffer is None:
        assert seen == sorted(seen)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_order_does_not_depend_on_workers(num_workers):
    rd.DataContext.get_current().num_workers = num_workers
    ds = rd.range(500).map(lambda r: {"x": r["id"]}).map(plus_k(1)).randomize_block_order(seed=3)
    got = [int(x) for b in ds.iter_batches(batch_size=7, local_shuffle_buffer_size=50, local_shuffle_seed=9) for x in b["x"]]
    rd.DataContext.get_current().num_workers = 0
    ref = [int(x) for b in ds.iter_batches(batch_size=7, local_shuffle_buffer_size=50, local_shuffle_seed=9) for x in b["x"]]
    assert got == ref
