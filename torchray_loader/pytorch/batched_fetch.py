"""Vectorised batch fetches for well-known map-style datasets, equal to DataLoader's per-sample path.

DataLoader builds a batch as ``default_collate([dataset[i] for i in indices])``: one Python call,
one small tensor and, for torchvision's in-memory datasets, one PIL image per sample. For datasets
whose ``__getitem__`` is known code over in-memory tensors, the same batch is one gather over all
indices. :func:`batched_fetch` returns that gather only where its result is *equal* to DataLoader's
(values, dtypes, shapes, nesting; checked by the differential tests):

* ``TensorDataset`` -> ``[t[indices] for t in tensors]``;
* torchvision ``MNIST``/``FashionMNIST``/``KMNIST``/``EMNIST`` and ``CIFAR10``/``CIFAR100`` whose
  ``transform`` is ``ToTensor()`` or ``Compose([ToTensor(), Normalize(...)])`` and without a
  ``target_transform``: the uint8 images are gathered, converted and normalised as a batch with the
  same elementwise float operations as ``to_tensor`` and ``normalize``;
* ``Subset`` of any of these.

Any other dataset, a subclass that overrides ``__getitem__``, a dataset with its own
``__getitems__``, another transform or a custom ``collate_fn`` keeps the per-sample path.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Subset, TensorDataset, default_collate

__all__ = ["batched_fetch", "batched_samples"]

Fetch = Callable[[Sequence[int]], Any]


def batched_fetch(dataset: Any, collate_fn: Callable[[Any], Any]) -> Fetch | None:
    """A function ``indices -> batch`` equal to ``collate_fn([dataset[i] for i in indices])``, or None
    when ``dataset`` has no known vectorised equivalent.

    Example:
        >>> ds = TensorDataset(torch.arange(10))
        >>> batched_fetch(ds, default_collate)([3, 1])
        [tensor([3, 1])]
    """
    if collate_fn is not default_collate:
        return None
    return _fetch_for(dataset)


def batched_samples(dataset: Any) -> Fetch | None:
    """A function ``indices -> [dataset[i] for i in indices]`` that gathers the samples as one batch,
    or None when ``dataset`` has no known vectorised equivalent.

    Samples are what ``__getitem__`` returns: a tuple of tensors for ``TensorDataset``, ``(image,
    int label)`` for the torchvision datasets; tensors are views of the gathered batch.

    Example:
        >>> ds = TensorDataset(torch.arange(10), torch.arange(10) * 2)
        >>> batched_samples(ds)([3, 1])
        [(tensor(3), tensor(6)), (tensor(1), tensor(2))]
    """
    fetch = _fetch_for(dataset)
    if fetch is None:
        return None
    while type(dataset).__getitem__ is Subset.__getitem__:
        dataset = dataset.dataset
    if type(dataset).__getitem__ is TensorDataset.__getitem__:
        return lambda idx: list(zip(*(column.unbind(0) for column in fetch(idx)), strict=True))

    def image_label(idx: Sequence[int]) -> list[Any]:
        images, labels = fetch(idx)
        return list(zip(images.unbind(0), labels.tolist(), strict=True))

    return image_label


def _fetch_for(dataset: Any) -> Fetch | None:
    cls: Any = type(dataset)
    if getattr(cls, "__getitems__", None) is not None and cls is not Subset:
        return None  # the dataset's own batched fetch is what DataLoader calls
    if cls.__getitem__ is TensorDataset.__getitem__:
        tensors = dataset.tensors
        return lambda idx: [t[_index(idx)] for t in tensors]
    if cls.__getitem__ is Subset.__getitem__ and getattr(cls, "__getitems__", None) is Subset.__getitems__:
        inner = _fetch_for(dataset.dataset)
        if inner is None:
            return None
        mapping = dataset.indices
        return lambda idx: inner([mapping[i] for i in idx])
    return _torchvision_fetch(dataset, cls)


def _index(idx: Sequence[int]) -> torch.Tensor:
    """``idx`` as an int64 tensor; an index that is no integer (``0.5``, ``np.float64(3)``) is an
    ``IndexError`` as ``dataset[i]`` raises it, never truncated to an integer. An empty batch is
    an ``IndexError`` too, as ``default_collate([])`` raises it."""
    if len(idx) == 0:
        raise IndexError("an empty batch (the sampler gave no index) cannot be collated")
    try:
        t = torch.as_tensor(idx)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"sampler indices must be integers, got {list(idx)[:5]!r}") from exc
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        first = next(i for i in idx if not isinstance(i, (int, np.integer)) or isinstance(i, bool))
        raise IndexError(f"only integers are valid indices of a dataset (got {type(first).__name__}: {first!r})")
    return t.to(torch.int64)


def _torchvision_fetch(dataset: Any, cls: Any) -> Fetch | None:
    tv = sys.modules.get("torchvision.datasets")
    if tv is None or getattr(dataset, "target_transform", None) is not None:
        return None
    convert = _batch_transform(getattr(dataset, "transform", None))
    if convert is None:
        return None
    if cls.__getitem__ is tv.MNIST.__getitem__ and isinstance(dataset.data, torch.Tensor):
        data, targets = dataset.data, dataset.targets

        def mnist(idx: Sequence[int]) -> list[torch.Tensor]:
            i = _index(idx)
            images = data[i].unsqueeze(1)  # (N, 1, H, W): mode "L", one channel
            return [convert(images), targets[i].to(torch.int64)]

        return mnist
    if cls.__getitem__ is tv.CIFAR10.__getitem__ and isinstance(dataset.data, np.ndarray):
        pixels, labels = dataset.data, dataset.targets

        def cifar(idx: Sequence[int]) -> list[torch.Tensor]:
            rows = _index(idx).numpy()
            images = torch.from_numpy(pixels[rows]).permute(0, 3, 1, 2)  # HWC -> CHW, as to_tensor does
            return [convert(images), torch.tensor([labels[j] for j in idx])]

        return cifar
    return None


def _batch_transform(transform: Any) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """uint8 (N, C, H, W) -> what ``transform`` gives per image, stacked: for ``ToTensor()`` and
    ``Compose([ToTensor()[, Normalize(mean, std)]])``; None for anything else."""
    T = sys.modules.get("torchvision.transforms")
    if T is None or transform is None:
        return None
    steps = list(transform.transforms) if type(transform) is T.Compose else [transform]
    if not steps or type(steps[0]) is not T.ToTensor:
        return None
    if len(steps) == 1:
        return _to_float
    if len(steps) == 2 and type(steps[1]) is T.Normalize:
        mean, std = steps[1].mean, steps[1].std
        return lambda images: _normalize(_to_float(images), mean, std)
    return None


def _to_float(images: torch.Tensor) -> torch.Tensor:
    """``to_tensor``'s conversion of uint8 images, for a batch."""
    return images.contiguous().to(dtype=torch.get_default_dtype()).div(255)


def _normalize(batch: torch.Tensor, mean: Any, std: Any) -> torch.Tensor:
    """``normalize``'s elementwise operations, for a batch (in place on a fresh batch)."""
    mean_t = torch.as_tensor(mean, dtype=batch.dtype)
    std_t = torch.as_tensor(std, dtype=batch.dtype)
    if (std_t == 0).any():
        raise ValueError(f"std evaluated to zero after conversion to {batch.dtype}, leading to division by zero.")
    if mean_t.ndim == 1:
        mean_t = mean_t.view(1, -1, 1, 1)
    if std_t.ndim == 1:
        std_t = std_t.view(1, -1, 1, 1)
    return batch.sub_(mean_t).div_(std_t)
