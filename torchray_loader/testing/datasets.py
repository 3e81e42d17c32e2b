"""A tiny map-style torch Dataset for unit tests (imports torch; loaded lazily by the package)."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

__all__ = ["TinyDataset"]


class TinyDataset(Dataset[Any]):
    """``n`` samples; sample ``i`` is ``{"id": i, "x": float32 tensor [i, i, ...] (dim), "y": i % 2}``.

    The values are a pure function of ``i``, so any batch tells which samples it holds
    (``batch["id"]``) and two loaders can be compared element by element. With ``as_tuple=True``
    a sample is ``(x, y)`` instead, like most image datasets.

    Example:
        >>> from torch.utils.data import DataLoader
        >>> ds = TinyDataset(6, dim=2)
        >>> next(iter(DataLoader(ds, batch_size=4)))["id"]
        tensor([0, 1, 2, 3])
        >>> TinyDataset(3, as_tuple=True)[2]
        (tensor([2., 2., 2., 2.]), 0)
    """

    def __init__(self, n: int = 32, *, dim: int = 4, as_tuple: bool = False) -> None:
        if n < 0 or dim < 1:
            raise ValueError(f"TinyDataset needs n >= 0 and dim >= 1, got n={n}, dim={dim}")
        self.n = n
        self.dim = dim
        self.as_tuple = as_tuple

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Any:
        if not -self.n <= index < self.n:
            raise IndexError(f"index {index} out of range for TinyDataset of length {self.n}")
        i = index % self.n if self.n else index
        x = torch.full((self.dim,), float(i), dtype=torch.float32)
        if self.as_tuple:
            return x, i % 2
        return {"id": i, "x": x, "y": i % 2}

    def __repr__(self) -> str:
        return f"TinyDataset(n={self.n}, dim={self.dim}, as_tuple={self.as_tuple})"
