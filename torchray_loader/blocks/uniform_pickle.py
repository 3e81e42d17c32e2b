"""Object-column pickles of many samples of one layout, written and read in bulk.

A torch dataset's samples usually share one *layout*: the same nesting of tuples, lists and dicts
(same lengths, same keys in the same order) around leaves of one kind per position: tensors or
ndarrays of one dtype and shape, Python ints, Python floats (``(tensor[32], label)``,
``{"x": tensor, "y": tensor}``). Pickled one by one, such samples cost a pickler call and a rebuild
per tensor, several times ``__getitem__`` itself. Here a layout is one pickle *template*: fixed opcodes
with a fixed-width slot per leaf. Writing fills every sample's slots at once (one ``stack`` per leaf
position); reading recognises the template and rebuilds every sample's leaves at once (one copy and
one ``unbind`` per leaf position).

Invariants:

* Each piece ``dumps_uniform`` writes is a complete pickle that plain ``pickle.loads`` reads as a
  value equal to the sample (type, value, dtype, shape, C-contiguous strides, writable), exactly as
  :func:`.object_pickle.dumps_objects`'s piece is read: an object column never depends on which of the
  two wrote it.
* ``loads_uniform`` returns what ``pickle.loads`` of each piece returns, except that the tensors
  (ndarrays) of one leaf position are disjoint views of one fresh buffer per call instead of one
  buffer each. It reads a column only where every piece has the length, the header and all
  non-slot bytes of the template its header names; anything else is left to ``pickle.loads``.
"""

from __future__ import annotations

import functools
import json
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["dumps_uniform", "loads_uniform"]

#: Layout node: ``["tuple"|"list", children]``, ``["dict", keys, children]``, ``["int"]``,
#: ``["float"]``, ``["tensor"|"ndarray", dtype str, shape]``.
Node = list[Any]

#: Dtype kinds a tensor or ndarray leaf may have (raw bytes; no complex: conjugate-view bits).
_LEAF_KINDS = frozenset("biuf")
#: Starts every piece's header: a no-op pushing the layout description, then popping it.
_TAG = b"torchray-uniform-pickle-1 "

_PROTO_5 = b"\x80\x05"
_BINBYTES8, _POP, _STOP = b"\x8e", b"0", b"."
_MARK, _TUPLE, _EMPTY_LIST, _APPENDS, _EMPTY_DICT, _SETITEMS = b"(", b"t", b"]", b"e", b"}", b"u"
_LONG1_8, _BINFLOAT, _BYTEARRAY8 = b"\x8a\x08", b"G", b"\x96"
_BINUNICODE8, _STACK_GLOBAL, _REDUCE = b"\x8d", b"\x93", b"R"
#: Header bytes before the description: PROTO 5, BINBYTES8 and its length.
_HEADER_SIZE = len(_PROTO_5) + len(_BINBYTES8) + 8

#: Rebuild functions named in a tensor or ndarray leaf's opcodes (those ``dumps_objects`` uses).
_REBUILD = {"tensor": "_tensor_from_bytes", "ndarray": "_array_from_bytes"}
_REBUILD_MODULE = "torchray_loader.blocks.object_pickle"


@dataclass(frozen=True)
class _Layout:
    """A layout's pickle template: ``slots[k]`` is the ``(offset, width)`` of the ``k``-th leaf
    (depth first); every other byte of a piece equals ``template``'s."""

    tree: Node
    template: np.ndarray
    slots: tuple[tuple[int, int], ...]

    def fixed_spans(self) -> Iterator[tuple[int, int]]:
        """The ``(start, stop)`` ranges between slots."""
        start = 0
        for offset, width in self.slots:
            yield start, offset
            start = offset + width
        yield start, len(self.template)


# ----------------------------------------------------------------------------- templates


def _text(value: str) -> bytes:
    raw = value.encode()
    return _BINUNICODE8 + struct.pack("<Q", len(raw)) + raw


def _long(value: int) -> bytes:
    return _LONG1_8 + struct.pack("<q", value)


class _TemplateWriter:
    """Appends a layout's opcodes, recording each leaf's slot."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.slots: list[tuple[int, int]] = []

    def slot(self, width: int) -> None:
        self.slots.append((len(self.out), width))
        self.out += bytes(width)

    def node(self, node: Node) -> None:
        kind = node[0]
        if kind in ("tuple", "list"):
            self.sequence(kind, node[1])
        elif kind == "dict":
            self.mapping(node[1], node[2])
        elif kind == "int":
            self.out += _LONG1_8
            self.slot(8)
        elif kind == "float":
            self.out += _BINFLOAT
            self.slot(8)
        else:
            self.array(kind, node[1], node[2])

    def sequence(self, kind: str, children: list[Node]) -> None:
        if kind == "list":
            self.out += _EMPTY_LIST
        if children:
            self.out += _MARK
            for child in children:
                self.node(child)
            self.out += _TUPLE if kind == "tuple" else _APPENDS
        elif kind == "tuple":
            self.out += _MARK + _TUPLE

    def mapping(self, keys: list[str], children: list[Node]) -> None:
        self.out += _EMPTY_DICT
        if children:
            self.out += _MARK
            for key, child in zip(keys, children, strict=True):
                self.out += _text(key)
                self.node(child)
            self.out += _SETITEMS

    def array(self, kind: str, dtype: str, shape: list[int]) -> None:
        nbytes = np.dtype(dtype).itemsize * int(np.prod(shape, dtype=np.int64))
        self.out += _text(_REBUILD_MODULE) + _text(_REBUILD[kind]) + _STACK_GLOBAL + _MARK
        self.out += _BYTEARRAY8 + struct.pack("<Q", nbytes)
        self.slot(nbytes)
        self.out += _text(dtype) + _MARK + b"".join(_long(d) for d in shape) + _TUPLE + _TUPLE + _REDUCE


def _description(tree: Node) -> bytes:
    return _TAG + json.dumps(tree, separators=(",", ":")).encode()


@functools.lru_cache(maxsize=64)
def _layout(description: bytes) -> _Layout:
    """The template of the layout ``description`` names (a ``ValueError`` where it names none)."""
    if not description.startswith(_TAG):
        raise ValueError("not a uniform-pickle layout")
    tree = json.loads(description[len(_TAG) :])
    writer = _TemplateWriter()
    writer.out += _PROTO_5 + _BINBYTES8 + struct.pack("<Q", len(description)) + description + _POP
    try:
        writer.node(tree)
    except (IndexError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed uniform-pickle layout: {exc}") from exc
    writer.out += _STOP
    template = np.frombuffer(bytes(writer.out), dtype=np.uint8)
    return _Layout(tree, template, tuple(writer.slots))


# ----------------------------------------------------------------------------- writing


class _NotUniform(Exception):
    """The samples have no common layout."""


def _common_type(column: Sequence[Any]) -> type:
    types = set(map(type, column))
    if len(types) != 1:
        raise _NotUniform
    return types.pop()


def _flatten(column: Sequence[Any], leaves: list[np.ndarray]) -> Node:
    """The layout of ``column``'s values; appends each leaf position's ``(n, width)`` uint8 bytes."""
    cls = _common_type(column)
    if cls is tuple or cls is list:
        if len(set(map(len, column))) != 1:
            raise _NotUniform
        return [cls.__name__, [_flatten(part, leaves) for part in zip(*column, strict=True)]]
    if cls is dict:
        keys = tuple(column[0])
        if not all(type(k) is str for k in keys) or any(tuple(d) != keys for d in column):
            raise _NotUniform
        return ["dict", list(keys), [_flatten([d[k] for d in column], leaves) for k in keys]]
    if cls is int:
        leaves.append(_rows_as_bytes(np.array(column, dtype="<i8")))  # OverflowError: not int64
        return ["int"]
    if cls is float:
        leaves.append(_rows_as_bytes(np.array(column, dtype=">f8")))  # BINFLOAT: big-endian
        return ["float"]
    if cls is np.ndarray:
        stacked = _stack_arrays(column)
        leaves.append(_rows_as_bytes(stacked))
        return ["ndarray", stacked.dtype.str, list(stacked.shape[1:])]
    if cls.__module__ == "torch" and cls.__name__ == "Tensor":
        stacked = _stack_tensors(column)
        leaves.append(_rows_as_bytes(stacked))
        return ["tensor", stacked.dtype.str, list(stacked.shape[1:])]
    raise _NotUniform


def _rows_as_bytes(stacked: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(stacked).view(np.uint8).reshape(len(stacked), -1)


def _check_leaf_dtype(dtype: np.dtype) -> None:
    if dtype.kind not in _LEAF_KINDS or not dtype.isnative:
        raise _NotUniform


def _stack_arrays(column: Sequence[np.ndarray]) -> np.ndarray:
    """C-contiguous writable arrays of one dtype and shape (ndim >= 1), stacked."""
    dtypes = {a.dtype for a in column}
    if len(dtypes) != 1 or len({a.shape for a in column}) != 1 or column[0].ndim == 0:
        raise _NotUniform
    _check_leaf_dtype(dtypes.pop())
    if not all(a.flags.c_contiguous and a.flags.writeable for a in column):
        raise _NotUniform  # another layout or a read-only array: its own pickle keeps that
    return np.stack(column)


def _stack_tensors(column: Sequence[Any]) -> np.ndarray:
    """Dense CPU tensors of one dtype, C-contiguous and without grad, stacked (as numpy)."""
    import torch

    if len({t.dtype for t in column}) != 1 or not all(t.is_contiguous() for t in column):
        raise _NotUniform
    try:
        stacked = torch.stack(list(column))
    except (RuntimeError, TypeError) as exc:  # shapes, devices or layouts differ
        raise _NotUniform from exc
    if stacked.device.type != "cpu" or stacked.layout is not torch.strided or stacked.requires_grad:
        raise _NotUniform
    try:
        array = stacked.numpy()
    except TypeError as exc:  # a dtype numpy lacks (bfloat16, ...)
        raise _NotUniform from exc
    _check_leaf_dtype(array.dtype)
    return array


def dumps_uniform(values: Sequence[Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """``values`` as pickles of one length, written from a template (``(data, offsets)`` as
    :func:`.object_pickle.dumps_objects` returns them), or None where the values have no common
    layout.

    Example:
        >>> import pickle
        >>> data, offsets = dumps_uniform([(np.arange(3.0), 1), (np.ones(3), -2)])
        >>> pickle.loads(data[offsets[1]:offsets[2]])
        (array([1., 1., 1.]), -2)
    """
    if not values:
        return None
    leaves: list[np.ndarray] = []
    try:
        tree = _flatten(values, leaves)
        layout = _layout(_description(tree))  # a key JSON/UTF-8 cannot hold (a lone surrogate): ValueError
    except (_NotUniform, OverflowError, TypeError, ValueError):
        return None
    rows = np.empty((len(values), len(layout.template)), dtype=np.uint8)
    rows[:] = layout.template
    for (offset, width), leaf in zip(layout.slots, leaves, strict=True):
        rows[:, offset : offset + width] = leaf
    offsets = np.arange(len(values) + 1, dtype=np.int64) * len(layout.template)
    return rows.reshape(-1), offsets


# ----------------------------------------------------------------------------- reading


def _header_layout(first: np.ndarray) -> _Layout | None:
    """The layout the piece ``first`` names in its header, or None."""
    if len(first) < _HEADER_SIZE + len(_TAG) or bytes(first[: len(_PROTO_5) + 1]) != _PROTO_5 + _BINBYTES8:
        return None
    size = int.from_bytes(bytes(first[3:_HEADER_SIZE]), "little")
    description = bytes(first[_HEADER_SIZE : _HEADER_SIZE + size])
    if not description.startswith(_TAG):
        return None
    try:
        return _layout(description)
    except ValueError:
        return None


def _leaf_values(node: Node, cells: np.ndarray) -> list[Any]:
    """A leaf position's values from its slot bytes ``cells`` (``n`` rows)."""
    kind = node[0]
    if kind == "int":
        return np.ascontiguousarray(cells).view("<i8").ravel().tolist()
    if kind == "float":
        return np.ascontiguousarray(cells).view(">f8").ravel().tolist()
    arrays = np.array(cells, copy=True).view(np.dtype(node[1])).reshape(len(cells), *node[2])
    if kind == "ndarray":
        return list(arrays)
    import torch

    return list(torch.from_numpy(arrays).unbind(0))


def _build(node: Node, leaves: Iterator[list[Any]], n: int) -> list[Any]:
    """The ``n`` values of ``node``, from the leaf values in depth-first order."""
    kind = node[0]
    if kind == "tuple":
        parts = [_build(child, leaves, n) for child in node[1]]
        return list(zip(*parts, strict=True)) if parts else [() for _ in range(n)]
    if kind == "list":
        parts = [_build(child, leaves, n) for child in node[1]]
        return [list(p) for p in zip(*parts, strict=True)] if parts else [[] for _ in range(n)]
    if kind == "dict":
        keys = node[1]
        parts = [_build(child, leaves, n) for child in node[2]]
        return [dict(zip(keys, p, strict=True)) for p in zip(*parts, strict=True)] if parts else [{} for _ in range(n)]
    return next(leaves)


def loads_uniform(data: memoryview, offsets: np.ndarray) -> list[Any] | None:
    """The values of the pieces ``data[offsets[i]:offsets[i + 1]]`` where all are pieces of one
    layout's template (as ``dumps_uniform`` writes them), else None.

    Example:
        >>> data, offsets = dumps_uniform([{"a": 1.5}, {"a": 2.0}])
        >>> loads_uniform(memoryview(data), offsets)
        [{'a': 1.5}, {'a': 2.0}]
    """
    n = len(offsets) - 1
    if n < 1:
        return None
    start, width = int(offsets[0]), int(offsets[1] - offsets[0])
    if width < _HEADER_SIZE or bytes(data[start : start + len(_PROTO_5)]) != _PROTO_5:
        return None
    if n > 1 and np.any(np.diff(offsets) != width):
        return None
    rows = np.frombuffer(data, dtype=np.uint8, count=n * width, offset=start).reshape(n, width)
    layout = _header_layout(rows[0])
    if layout is None or len(layout.template) != width:
        return None
    template = layout.template
    if not all(np.array_equal(rows[:, a:b], np.broadcast_to(template[a:b], (n, b - a))) for a, b in layout.fixed_spans()):
        return None
    leaf_nodes = _leaf_nodes(layout.tree)
    cells = (rows[:, offset : offset + size] for offset, size in layout.slots)
    leaf_values = (_leaf_values(node, c) for node, c in zip(leaf_nodes, cells, strict=True))
    return _build(layout.tree, leaf_values, n)


def _leaf_nodes(node: Node) -> list[Node]:
    """The leaves of ``node``, depth first (the order of the template's slots)."""
    kind = node[0]
    if kind in ("tuple", "list"):
        return [leaf for child in node[1] for leaf in _leaf_nodes(child)]
    if kind == "dict":
        return [leaf for child in node[2] for leaf in _leaf_nodes(child)]
    return [node]
