"""Block helpers: row gathers equal Arrow's take, whatever the chunking."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from torchray_loader.blocks import column_from_values, take_rows


def _chunked_table(sizes):
    start, pieces = 0, []
    for n in sizes:
        images = np.arange(start * 6, (start + n) * 6, dtype=np.float32).reshape(n, 2, 3)
        pieces.append(pa.table({"image": column_from_values(images) if n else column_from_values(np.zeros((0, 2, 3), np.float32)),
                                "id": np.arange(start, start + n)}))
        start += n
    return pa.concat_tables(pieces)


@pytest.mark.parametrize("sizes", [[10], [4, 0, 7, 9], [1] * 12])
@pytest.mark.parametrize("fraction", [0.1, 0.4, 1.0])
def test_take_rows_equals_arrow_take(sizes, fraction):
    table = _chunked_table(sizes)
    indices = np.random.default_rng(0).permutation(table.num_rows)[: max(1, int(table.num_rows * fraction))]
    got = take_rows(table, indices)
    want = table.take(indices)
    assert got.schema == want.schema
    assert got.column("id").to_pylist() == want.column("id").to_pylist()
    assert np.array_equal(got.column("image").combine_chunks().to_numpy_ndarray(),
                          want.column("image").combine_chunks().to_numpy_ndarray())
