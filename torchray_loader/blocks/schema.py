"""``Schema``: column names and types, printed as Ray Data prints them."""

from __future__ import annotations

import pyarrow as pa

from .tensors import type_display_name

__all__ = ["Schema"]


class Schema:
    """The schema of a Dataset.

    ``print(schema)`` gives the ``Column  Type`` table of the Ray Data docs.

    Example:
        >>> import pyarrow as pa
        >>> print(Schema(pa.schema([("id", pa.int64())])))
        Column  Type
        ------  ----
        id      int64
    """

    def __init__(self, base_schema: pa.Schema) -> None:
        self.base_schema = base_schema

    @property
    def names(self) -> list[str]:
        """Column names, in order."""
        return list(self.base_schema.names)

    @property
    def types(self) -> list[pa.DataType]:
        """Arrow types of the columns, in order."""
        return list(self.base_schema.types)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schema) and self.base_schema.equals(other.base_schema)

    def __hash__(self) -> int:
        return hash(tuple(self.names))

    def __str__(self) -> str:
        names = ["Column", "------", *self.names]
        types = ["Type", "----", *(type_display_name(t) for t in self.types)]
        width = max(len(n) for n in names)
        return "\n".join(f"{n:<{width}}  {t}" for n, t in zip(names, types, strict=True))

    def __repr__(self) -> str:
        return str(self)
