"""Arrow blocks: tensor and object column types, batch formats, schema printing."""

from .block import (
    BATCH_FORMATS,
    Block,
    block_from_batch,
    block_from_rows,
    block_to_batch,
    block_to_rows,
    check_batch_format,
    columnless_table,
    concat_blocks,
    empty_block,
    take_rows,
)
from .object_block import ObjectBlock, as_table, as_tables
from .schema import Schema
from .tensors import PythonObjectType, VariableShapeTensorType, column_from_values, column_to_numpy

__all__ = [
    "BATCH_FORMATS",
    "Block",
    "ObjectBlock",
    "PythonObjectType",
    "Schema",
    "VariableShapeTensorType",
    "as_table",
    "as_tables",
    "block_from_batch",
    "block_from_rows",
    "block_to_batch",
    "block_to_rows",
    "check_batch_format",
    "column_from_values",
    "column_to_numpy",
    "columnless_table",
    "concat_blocks",
    "empty_block",
    "take_rows",
]
