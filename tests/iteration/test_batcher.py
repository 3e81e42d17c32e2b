"""The batcher: exact batch sizes across block boundaries, the seeded shuffle window, skipping."""

from __future__ import annotations

import pyarrow as pa
import pytest

from torchray_loader.iteration import iter_batch_runs, prefetch
from torchray_loader.iteration.batcher import numpy_permutations
from torchray_loader.pytorch.sampling import randperm_permutations


def batch_tables(blocks, batch_size, **kw):
    """The batches of ``iter_batch_runs``, one at a time."""
    for run in iter_batch_runs(blocks, batch_size, **kw):
        yield from run.batches()


def blocks_of(sizes):
    out, start = [], 0
    for s in sizes:
        out.append(pa.table({"x": list(range(start, start + s))}))
        start += s
    return out


def flat(batches):
    return [v for b in batches for v in b.table["x"].to_pylist()]


@pytest.mark.parametrize("sizes", [[5, 0, 3, 9], [1] * 10, [20], []])
@pytest.mark.parametrize("batch_size", [1, 3, 4, 25])
def test_sequential_exact_sizes(sizes, batch_size):
    batches = list(batch_tables(blocks_of(sizes), batch_size))
    assert flat(batches) == list(range(sum(sizes)))
    assert all(b.table.num_rows == batch_size for b in batches[:-1])


@pytest.mark.parametrize("buffer", [1, 7, 100])
def test_shuffle_window_is_seeded_permutation(buffer):
    a = flat(batch_tables(blocks_of([10, 10, 10]), 4, shuffle_buffer_size=buffer, seed=1))
    b = flat(batch_tables(blocks_of([10, 10, 10]), 4, shuffle_buffer_size=buffer, seed=1))
    c = flat(batch_tables(blocks_of([10, 10, 10]), 4, shuffle_buffer_size=buffer, seed=2))
    assert a == b and sorted(a) == list(range(30))
    if buffer > 1:
        assert a != c


@pytest.mark.parametrize("shuffle", [None, 8])
def test_skip_batches_resumes_exactly(shuffle):
    full = [b.table["x"].to_pylist() for b in batch_tables(blocks_of([7, 7, 7]), 3, shuffle_buffer_size=shuffle, seed=4)]
    for k in range(len(full) + 1):
        rest = [b.table["x"].to_pylist() for b in batch_tables(blocks_of([7, 7, 7]), 3, shuffle_buffer_size=shuffle, seed=4, skip_batches=k)]
        assert rest == full[k:]


@pytest.mark.parametrize("shuffle", [None, 8, 100])
@pytest.mark.parametrize("skip", [0, 1, 4])
def test_runs_are_grids_of_one_parent_and_flatten_to_the_batches(shuffle, skip):
    kw = dict(shuffle_buffer_size=shuffle, seed=3, skip_batches=skip)
    runs = list(iter_batch_runs(blocks_of([7, 2, 12, 5]), 3, **kw))
    for run in runs:
        assert run.count >= 1 and run.offset + run.count * run.num_rows <= run.parent.num_rows
    flattened = [b.table["x"].to_pylist() for run in runs for b in run.batches()]
    # The skipped batches are the first ones of the unskipped stream, and the rest are all rows once.
    whole = [b.table["x"].to_pylist() for b in batch_tables(blocks_of([7, 2, 12, 5]), 3, shuffle_buffer_size=shuffle, seed=3)]
    assert flattened == whole[skip:] and sorted(v for b in whole for v in b) == list(range(26))
    assert all(len(b) == 3 for b in flattened[:-1])
    # A run covers several batches of one parent: fewer runs than batches.
    assert len(runs) < len(flattened)


@pytest.mark.parametrize("batch_size", [None, 4])
def test_runs_of_private_blocks_are_fresh_and_others_are_not(batch_size):
    blocks = blocks_of([8, 8])
    private = {id(blocks[0])}
    runs = list(iter_batch_runs(blocks, batch_size, is_private=lambda b: id(b) in private))
    assert [(r.parent is blocks[0], r.fresh) for r in runs] == [(True, True), (False, False)]
    assert not any(r.fresh for r in iter_batch_runs(blocks_of([8, 8]), batch_size))


@pytest.mark.parametrize("private", [False, True])
def test_a_block_of_big_chunks_is_batched_chunk_by_chunk_and_one_of_small_chunks_whole(private):
    big = pa.concat_tables(blocks_of([10, 9, 11]))  # three chunks, rows 0..29
    small = pa.concat_tables(blocks_of([1] * 12))  # twelve one-row chunks
    for block, per_chunk in [(big, True), (small, False)]:
        runs = list(iter_batch_runs([block], 4, is_private=lambda b, block=block: private and b is block))
        assert [v for r in runs for b in r.batches() for v in b.table["x"].to_pylist()] == list(range(block.num_rows))
        grid_parents = {id(r.parent) for r in runs if r.count > 1 or r.parent.num_rows > 4}
        if per_chunk:
            # Each chunk is a parent of its own, with one chunk per column (converts without a copy);
            # batches across chunk boundaries are small fresh concatenations.
            assert len(grid_parents) == 3
            assert all(r.parent.column("x").num_chunks == 1 for r in runs)
            assert all(r.fresh == private for r in runs if r.parent.num_rows > 4)
        else:
            assert [r.parent for r in runs] == [block] * len(runs)


def test_run_pieces_cover_the_run_in_order():
    run = next(iter_batch_runs(blocks_of([23]), 2))
    assert run.count == 11
    pieces = list(run.pieces(4))
    assert [p.count for p in pieces] == [4, 4, 3]
    assert [b.offset for p in pieces for b in p.batches()] == [b.offset for b in run.batches()]


def test_batch_size_none_yields_blocks_and_validation():
    assert [b.table.num_rows for b in batch_tables(blocks_of([2, 0, 3]), None)] == [2, 3]
    with pytest.raises(ValueError, match="batch_size"):
        list(batch_tables(blocks_of([2]), 0))
    with pytest.raises(ValueError, match="local_shuffle_buffer_size"):
        list(batch_tables(blocks_of([2]), 2, shuffle_buffer_size=0))


def failing_source():
    yield 1
    raise KeyError("boom")


def test_prefetch_forwards_errors_and_stops():
    it = prefetch(failing_source, depth=2)
    assert next(it) == 1
    with pytest.raises(KeyError):
        next(it)
    gen = prefetch(lambda: iter(range(10**9)), depth=4)
    assert next(gen) == 0
    gen.close()  # must not hang


@pytest.mark.parametrize("permutations", [numpy_permutations, randperm_permutations])
def test_windows_are_ordered_by_the_permutation_source(permutations):
    """Each window's order is the source's next permutation: a pure function of the seed."""
    runs = list(iter_batch_runs(blocks_of([6, 6]), 3, shuffle_buffer_size=6, seed=9, permutations=permutations))
    permute = permutations(9)
    expected = [int(i) for i in permute(6)] + [6 + int(i) for i in permute(6)]
    assert [x for run in runs for b in run.batches() for x in b.table["x"].to_pylist()] == expected


def test_randperm_permutations_take_any_numpy_seed():
    assert sorted(randperm_permutations(None)(50).tolist()) == list(range(50))
    assert randperm_permutations([1, 2])(20).tolist() == randperm_permutations([1, 2])(20).tolist()
    assert randperm_permutations(2**70)(20).tolist() != randperm_permutations(3)(20).tolist()
    with pytest.raises(ValueError):
        randperm_permutations(-1)


def test_each_window_is_gathered_once_with_its_leftover_tail(monkeypatch):
    from torchray_loader.iteration import batcher

    calls = []
    take = batcher.take_rows
    monkeypatch.setattr(batcher, "take_rows", lambda table, idx: calls.append(len(idx)) or take(table, idx))
    batches = [b.table["x"].to_pylist() for b in batch_tables(blocks_of([10, 10, 10]), 4, shuffle_buffer_size=10, seed=1)]
    # windows of 10 rows: 8 in batches, 2 carried into the next window; the last has 6 rows
    assert calls == [10, 10, 10, 6]
    assert [len(b) for b in batches] == [4] * 7 + [2] and sorted(sum(batches, [])) == list(range(30))
