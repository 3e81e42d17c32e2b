"""Small on-disk datasets generated locally, for tests and examples that must not use the network.

Every generator is deterministic for a given ``seed``, writes only under the directory it is given,
and returns that directory as a :class:`pathlib.Path`. None of them imports torch, so importing this
module (and the pytest plugin that uses it) stays cheap.
"""

from __future__ import annotations

import os
import pickle
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "CIFAR10_CLASSES",
    "make_cifar10",
    "make_image_folder",
    "make_mnist",
    "make_parquet_dir",
    "relaxed_cifar10_checks",
]

#: The class names of CIFAR-10, in label order (what ``batches.meta`` holds).
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)

#: torchvision's CIFAR10 reads these five training batches plus ``test_batch``.
_CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))


def _pathify(root: str | os.PathLike[str]) -> Path:
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _images(n: int, size: tuple[int, int], channels: int, seed: int) -> np.ndarray:
    """``n`` uint8 images ``(n, h, w, channels)``: a per-image colour plus noise, so JPEG keeps them distinct."""
    rng = np.random.default_rng(seed)
    h, w = size
    base = rng.integers(0, 256, size=(n, 1, 1, channels), dtype=np.int64)
    noise = rng.integers(-20, 21, size=(n, h, w, channels), dtype=np.int64)
    pixels: np.ndarray = np.clip(base + noise, 0, 255).astype(np.uint8)
    return pixels


def make_image_folder(
    root: str | os.PathLike[str],
    n: int = 8,
    *,
    size: tuple[int, int] = (32, 32),
    classes: Sequence[str] | None = ("cat", "dog"),
    ext: str = "jpg",
    seed: int = 0,
) -> Path:
    """Write ``n`` RGB images (``size`` = (height, width)) under ``root``.

    Files are named by a global integer index (``0.jpg`` ... ``{n-1}.jpg``), so the guide's
    "label from file name" code works. With ``classes`` (the default), image ``i`` goes into
    ``root/classes[i % len(classes)]/``: the layout ``torchvision.datasets.ImageFolder`` reads. With
    ``classes=None`` all files sit directly in ``root``.

    Example:
        >>> import tempfile, torchvision
        >>> root = make_image_folder(tempfile.mkdtemp(), n=4)
        >>> ds = torchvision.datasets.ImageFolder(root)
        >>> len(ds), ds.classes
        (4, ['cat', 'dog'])
    """
    from PIL import Image

    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if ext.lower() not in ("jpg", "jpeg", "png"):
        raise ValueError(f"ext must be jpg, jpeg or png, got {ext!r}")
    path = _pathify(root)
    pixels = _images(n, size, 3, seed)
    for i in range(n):
        folder = path / classes[i % len(classes)] if classes else path
        folder.mkdir(exist_ok=True)
        Image.fromarray(pixels[i], mode="RGB").save(folder / f"{i}.{ext}")
    return path


def make_parquet_dir(
    root: str | os.PathLike[str],
    n: int = 100,
    *,
    num_files: int = 4,
    seed: int = 0,
) -> Path:
    """Write ``n`` rows as ``num_files`` parquet files ``part-00000.parquet`` ... under ``root``.

    Columns: ``id`` (int64, ``0..n-1`` in file order), ``label`` (int64, ``id % 2``), ``value``
    (float64) and ``name`` (string ``"row-{id}"``). Written with pyarrow directly, so the files do
    not depend on this package's writer.

    Example:
        >>> import tempfile, pyarrow.parquet as pq
        >>> root = make_parquet_dir(tempfile.mkdtemp(), n=10, num_files=2)
        >>> pq.read_table(root).num_rows
        10
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if num_files < 1:
        raise ValueError(f"num_files must be >= 1, got {num_files}")
    path = _pathify(root)
    rng = np.random.default_rng(seed)
    ids = np.arange(n, dtype=np.int64)
    values = rng.standard_normal(n)
    edges = np.linspace(0, n, num_files + 1).astype(np.int64)
    for k, (a, b) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        table = pa.table(
            {
                "id": ids[a:b],
                "label": ids[a:b] % 2,
                "value": values[a:b],
                "name": [f"row-{i}" for i in ids[a:b]],
            }
        )
        pq.write_table(table, path / f"part-{k:05d}.parquet")
    return path


def _write_idx(path: Path, array: np.ndarray) -> None:
    # IDX format (as read by torchvision.datasets.mnist.read_sn3_pascalvincent_tensor): magic
    # 0x00 0x00 <type 0x08 = uint8> <ndim>, then each dimension as a big-endian uint32, then the data.
    assert array.dtype == np.uint8
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array).tobytes())


def make_mnist(
    root: str | os.PathLike[str],
    n_train: int = 64,
    n_test: int = 16,
    *,
    seed: int = 0,
) -> Path:
    """Write MNIST-format files that ``torchvision.datasets.MNIST(root, download=False)`` loads.

    Writes the four uncompressed IDX files under ``root/MNIST/raw/`` (28x28 uint8 images, labels
    ``i % 10``). torchvision only checks that these files exist, so no download is attempted.

    Example:
        >>> import tempfile, torchvision
        >>> root = make_mnist(tempfile.mkdtemp(), n_train=20, n_test=5)
        >>> len(torchvision.datasets.MNIST(root, train=True, download=False))
        20
    """
    raw = _pathify(Path(root) / "MNIST" / "raw")
    for split, count, split_seed in (("train", n_train, seed), ("t10k", n_test, seed + 1)):
        images = _images(count, (28, 28), 1, split_seed)[..., 0]
        labels = (np.arange(count) % 10).astype(np.uint8)
        _write_idx(raw / f"{split}-images-idx3-ubyte", images)
        _write_idx(raw / f"{split}-labels-idx1-ubyte", labels)
    return Path(root)


def make_cifar10(
    root: str | os.PathLike[str],
    n_per_batch: int = 10,
    n_test: int = 10,
    *,
    seed: int = 0,
) -> Path:
    """Write CIFAR-10 "python version" files under ``root/cifar-10-batches-py/``.

    Five ``data_batch_*`` files with ``n_per_batch`` images each, a ``test_batch`` with ``n_test``,
    and ``batches.meta``; 32x32 RGB, labels ``i % 10``. The layout and pickles are exactly what
    ``torchvision.datasets.CIFAR10`` reads, but torchvision also compares every file with the md5 of
    the official archive, which generated data cannot match: load it inside
    :func:`relaxed_cifar10_checks` (the ``trl_cifar10_root`` fixture does that for you).

    Example:
        >>> import tempfile, torchvision
        >>> root = make_cifar10(tempfile.mkdtemp(), n_per_batch=2, n_test=3)
        >>> with relaxed_cifar10_checks():
        ...     len(torchvision.datasets.CIFAR10(root, train=False, download=False))
        3
    """
    base = _pathify(Path(root) / "cifar-10-batches-py")
    splits = [(name, n_per_batch) for name in _CIFAR10_TRAIN_FILES] + [("test_batch", n_test)]
    for k, (name, count) in enumerate(splits):
        images = _images(count, (32, 32), 3, seed + k)
        # CIFAR stores each image as 3072 bytes: the R plane, then G, then B (CHW, row-major).
        data = images.transpose(0, 3, 1, 2).reshape(count, 3 * 32 * 32)
        entry = {
            "batch_label": f"generated {name}",
            "labels": [i % 10 for i in range(count)],
            "data": data,
            "filenames": [f"{name}_{i}.png" for i in range(count)],
        }
        with open(base / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    meta = {"label_names": list(CIFAR10_CLASSES), "num_cases_per_batch": n_per_batch, "num_vis": 3072}
    with open(base / "batches.meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return Path(root)


class relaxed_cifar10_checks:  # noqa: N801 - used like a function: ``with relaxed_cifar10_checks():``
    """Context manager: while active, ``torchvision.datasets.CIFAR10`` skips its md5 comparisons.

    torchvision checks that each file exists *and* has the official md5. Inside this context only
    existence is checked (torchvision's ``check_integrity(path, None)``), so files written by
    :func:`make_cifar10` load. The class attributes are restored on exit, even after an error.

    Example:
        >>> import torchvision
        >>> with relaxed_cifar10_checks():
        ...     torchvision.datasets.CIFAR10.meta["md5"] is None
        True
        >>> torchvision.datasets.CIFAR10.meta["md5"] is None
        False
    """

    def __init__(self) -> None:
        self._saved: dict[str, object] = {}

    def __enter__(self) -> relaxed_cifar10_checks:
        from torchvision.datasets import CIFAR10

        for attr in ("train_list", "test_list", "meta"):
            self._saved[attr] = CIFAR10.__dict__[attr]
        CIFAR10.train_list = [[name, None] for name, _ in CIFAR10.train_list]
        CIFAR10.test_list = [[name, None] for name, _ in CIFAR10.test_list]
        CIFAR10.meta = {**CIFAR10.meta, "md5": None}
        return self

    def __exit__(self, *exc: object) -> None:
        from torchvision.datasets import CIFAR10

        for attr, value in self._saved.items():
            setattr(CIFAR10, attr, value)
        self._saved.clear()
