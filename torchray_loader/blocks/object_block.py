"""``ObjectBlock``: rows of one object column still held as the Python objects a read made.

A read whose objects go straight into a row or batch UDF of the same task (``from_torch(ds).map(...)``,
``.map_batches(...)``) would otherwise pickle every object into an Arrow column and unpickle it again
for the UDF. An ``ObjectBlock`` skips that round trip: the UDF gets the objects themselves.

Invariants:

* Only objects the reading code created itself go into one (a gathered batch's fresh tensors), never
  objects a dataset stores and returns again: a UDF may change its input in place, and must not be
  able to change the source.
* Everything that is not a row or batch UDF sees the Arrow block (:func:`as_table`), which is equal
  to what the read would have produced without this shortcut; a task's output blocks are always
  Arrow tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from .tensors import _object_column, uniform_object_column

__all__ = ["ObjectBlock", "as_table", "as_tables"]


@dataclass(frozen=True)
class ObjectBlock:
    """One column ``column`` of Python objects ``values``, not yet pickled into Arrow.

    Example:
        >>> block = ObjectBlock("item", [(1, "a"), (2, "b")])
        >>> block.to_batch()["item"][1]
        (2, 'b')
        >>> as_table(block).num_rows
        2
    """

    column: str
    values: list[Any]

    @property
    def num_rows(self) -> int:
        return len(self.values)

    @property
    def num_columns(self) -> int:
        return 1

    def slice(self, offset: int = 0, length: int | None = None) -> ObjectBlock:
        """Rows ``offset`` to ``offset + length``, like ``pa.Table.slice``."""
        stop = None if length is None else offset + length
        return ObjectBlock(self.column, self.values[offset:stop])

    def to_table(self) -> pa.Table:
        """The Arrow block: an object column (each value pickled; values of one layout in bulk)."""
        column = uniform_object_column(self.values)
        return pa.table({self.column: column if column is not None else _object_column(self.values)})

    def to_batch(self) -> dict[str, np.ndarray]:
        """The ``numpy`` batch: a 1-D object array of the values themselves."""
        out = np.empty(len(self.values), dtype=object)
        for i, value in enumerate(self.values):  # element-wise: a tuple value must stay one element
            out[i] = value
        return {self.column: out}

    def to_rows(self) -> Iterator[dict[str, Any]]:
        """Row dicts holding the values themselves."""
        name = self.column
        return ({name: value} for value in self.values)


def as_table(block: Any) -> pa.Table:
    """``block`` as an Arrow table (an ``ObjectBlock`` is converted, a table returned as is).

    Example:
        >>> as_table(pa.table({"a": [1]})).num_rows
        1
    """
    return block.to_table() if isinstance(block, ObjectBlock) else block


def as_tables(blocks: Iterable[Any]) -> Iterator[pa.Table]:
    """:func:`as_table` of each block.

    Example:
        >>> [t.num_rows for t in as_tables([ObjectBlock("x", [1, 2])])]
        [2]
    """
    for block in blocks:
        yield as_table(block)
