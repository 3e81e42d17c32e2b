"""Helpers for testing code that uses torchray_loader (or any DataLoader), without the network.

* :func:`assert_exactly_once`: iterate a loader and check every key arrives exactly once.
* Generated data on disk: :func:`make_image_folder`, :func:`make_parquet_dir`, :func:`make_mnist`,
  :func:`make_cifar10` (+ :func:`relaxed_cifar10_checks`), and :class:`TinyDataset` in memory.
* A pytest plugin (``torchray_loader.testing.plugin``, registered through the ``pytest11`` entry
  point, so installing the package is enough) turns these into fixtures: ``trl_image_folder``,
  ``trl_parquet_dir``, ``trl_mnist_root``, ``trl_cifar10_root``, ``trl_tiny_dataset``.

Importing this module does not import torch; :class:`TinyDataset` loads it on first use.

Example:
    >>> import torchray_loader as rd
    >>> from torchray_loader.testing import assert_exactly_once
    >>> keys = assert_exactly_once(rd.range(10).iter_batches(batch_size=4), key="id", expected=10)
    >>> len(keys)
    10
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .data import (
    CIFAR10_CLASSES,
    make_cifar10,
    make_image_folder,
    make_mnist,
    make_parquet_dir,
    relaxed_cifar10_checks,
)

if TYPE_CHECKING:
    from .datasets import TinyDataset

__all__ = [
    "CIFAR10_CLASSES",
    "TinyDataset",
    "assert_exactly_once",
    "make_cifar10",
    "make_image_folder",
    "make_mnist",
    "make_parquet_dir",
    "relaxed_cifar10_checks",
]

#: How many keys a failure message lists per category before it summarises the rest.
_SHOW = 20


def __getattr__(name: str) -> Any:
    # TinyDataset subclasses torch.utils.data.Dataset: load torch only when it is asked for.
    if name == "TinyDataset":
        from .datasets import TinyDataset

        return TinyDataset
    raise AttributeError(f"module 'torchray_loader.testing' has no attribute {name!r}")


def _hashable(value: Any) -> Hashable:
    # Nested lists (a key column of shape (B, k)) become tuples so they can be counted.
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    return value  # type: ignore[no-any-return]


def _keys_of(batch: Any, key: str | int | Callable[[Any], Any]) -> list[Hashable]:
    if callable(key):
        values = key(batch)
    elif isinstance(batch, Mapping):
        if key not in batch:
            raise KeyError(f"assert_exactly_once: batch has no key {key!r}; it has {sorted(map(str, batch))}")
        values = batch[key]
    elif isinstance(batch, (tuple, list)) and isinstance(key, int):
        values = batch[key]
    else:
        raise TypeError(
            f"assert_exactly_once: cannot take key {key!r} from a {type(batch).__name__} batch; "
            "pass key=<column name> for dict batches, key=<index> for tuple batches, or a callable"
        )
    if hasattr(values, "tolist"):  # torch.Tensor, numpy.ndarray, numpy scalar
        values = values.tolist()
    if isinstance(values, (list, tuple)):
        return [_hashable(v) for v in values]
    return [_hashable(values)]  # one row, e.g. iterating a Dataset's rows


def _listing(items: list[Any]) -> str:
    shown = ", ".join(repr(k) for k in items[:_SHOW])
    more = f", ... and {len(items) - _SHOW} more" if len(items) > _SHOW else ""
    return f"[{shown}{more}]"


def _sorted(keys: Iterable[Any]) -> list[Any]:
    items = list(keys)
    try:
        return sorted(items)
    except TypeError:  # mixed, unorderable key types: keep first-seen order
        return items


def assert_exactly_once(
    batches: Iterable[Any],
    key: str | int | Callable[[Any], Any] = "id",
    *,
    expected: int | Iterable[Hashable] | None = None,
) -> list[Hashable]:
    """Iterate ``batches`` and assert that every key value is delivered exactly once.

    ``batches`` is anything iterable: a ``RayStyleLoader``, a ``DataLoader``, the iterator of
    ``ds.iter_torch_batches()`` / ``iter_batches()``, or a Dataset (its rows). ``key`` picks the
    key values out of each batch: a column name (dict batches), an index (tuple batches), or a
    callable ``batch -> values``. Tensors and arrays are converted with ``tolist()``.

    ``expected`` is what should arrive: an int ``n`` means ``range(n)``, or give the keys. Without
    it only duplicates are checked. On failure the :class:`AssertionError` lists the missing,
    duplicated and unexpected keys (the first 20 of each). Returns the keys in delivery order.

    Example:
        >>> import torchray_loader as rd
        >>> assert_exactly_once(rd.range(4).iter_batches(batch_size=3), "id", expected=4)
        [0, 1, 2, 3]
        >>> assert_exactly_once([{"id": [0, 1]}, {"id": [1]}], "id", expected=3)
        Traceback (most recent call last):
        ...
        AssertionError: assert_exactly_once(key='id'): 3 keys delivered in 2 batches, 2 distinct; expected 3
          missing (1): [2]
          duplicated (1): [1 (2 times)]
    """
    seen: list[Hashable] = []
    num_batches = 0
    for batch in batches:
        num_batches += 1
        seen.extend(_keys_of(batch, key))

    counts = Counter(seen)
    duplicated = {k: c for k, c in counts.items() if c > 1}
    missing: list[Any] = []
    unexpected: list[Any] = []
    want: set[Hashable] | None = None
    if expected is not None:
        want = set(range(expected)) if isinstance(expected, int) else {_hashable(k) for k in expected}
        missing = _sorted(want - counts.keys())
        unexpected = _sorted(counts.keys() - want)

    if duplicated or missing or unexpected:
        name = getattr(key, "__name__", None) if callable(key) else None
        lines = [
            f"assert_exactly_once(key={name or key!r}): {len(seen)} keys delivered in {num_batches} batches, "
            f"{len(counts)} distinct" + (f"; expected {len(want)}" if want is not None else "")
        ]
        if missing:
            lines.append(f"  missing ({len(missing)}): {_listing(missing)}")
        if duplicated:
            dup = [f"{k!r} ({c} times)" for k, c in ((k, duplicated[k]) for k in _sorted(duplicated))]
            shown = ", ".join(dup[:_SHOW]) + (f", ... and {len(dup) - _SHOW} more" if len(dup) > _SHOW else "")
            lines.append(f"  duplicated ({len(duplicated)}): [{shown}]")
        if unexpected:
            lines.append(f"  unexpected ({len(unexpected)}): {_listing(unexpected)}")
        raise AssertionError("\n".join(lines))
    return seen
