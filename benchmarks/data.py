"""Benchmark data, generated locally (no downloads) and cached under a data directory.

Every generator is deterministic (fixed seeds) and writes into a temporary folder that is renamed
into place when complete, so an interrupted run never leaves a half-written cache entry behind.
"""

from __future__ import annotations

import os
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = [
    "default_data_dir",
    "tabular",
    "parquet_dir",
    "jpeg_dir",
    "mnist_root",
    "PARQUET_FEATURES",
]

#: float32 feature columns of the parquet files (plus ``id`` and ``label``, int64: 34 columns).
PARQUET_FEATURES = 32


def default_data_dir() -> Path:
    """``$TORCHRAY_BENCH_DATA``, else ``benchmarks/results/data`` in the repository (git-ignored)."""
    env = os.environ.get("TORCHRAY_BENCH_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent / "results" / "data"


def _cached(path: Path, build: Callable[[Path], None]) -> Path:
    if (path / ".complete").exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        build(tmp)
        (tmp / ".complete").write_text("ok\n")
        try:
            os.rename(tmp, path)
        except OSError:  # another process finished first
            if not (path / ".complete").exists():
                shutil.rmtree(path, ignore_errors=True)
                os.rename(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


# ------------------------------------------------------------------------------------------- W1


def tabular(rows: int, cols: int = 32, seed: int = 0) -> np.ndarray:
    """``rows x cols`` float32 standard normal features, in memory (the user's own array)."""
    return np.random.default_rng(seed).standard_normal((rows, cols), dtype=np.float32)


# ------------------------------------------------------------------------------------------- W2


def parquet_dir(data_dir: str | Path, num_files: int, rows_per_file: int) -> Path:
    """``num_files`` parquet files of ``rows_per_file`` rows x 34 columns: ``id`` (int64),
    ``label`` (int64) and ``f0`` ... ``f31`` (float32)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def build(tmp: Path) -> None:
        rng = np.random.default_rng(2)
        for i in range(num_files):
            start = i * rows_per_file
            cols: dict[str, np.ndarray] = {
                "id": np.arange(start, start + rows_per_file, dtype=np.int64),
                "label": rng.integers(0, 10, rows_per_file, dtype=np.int64),
            }
            feats = rng.standard_normal((PARQUET_FEATURES, rows_per_file), dtype=np.float32)
            for j in range(PARQUET_FEATURES):
                cols[f"f{j}"] = feats[j]
            pq.write_table(pa.table(cols), tmp / f"part-{i:05d}.parquet")

    return _cached(Path(data_dir) / f"parquet-{num_files}x{rows_per_file}", build)


# ------------------------------------------------------------------------------------------- W3


def _jpeg_pixels(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth colour gradients and blobs plus mild noise: compresses like a photo, not like noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.empty((size, size, 3), dtype=np.float32)
    for c in range(3):
        a, b, f, ph = rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(1, 6), rng.uniform(0, 6.3)
        img[..., c] = 0.5 + 0.25 * (a * xx + b * yy) + 0.2 * np.sin(f * (xx * a + yy * b) * 3.14 + ph)
    cx, cy, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.3)
    blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
    img += blob[..., None] * rng.uniform(-0.4, 0.4, 3).astype(np.float32)
    img = img * 255 + rng.normal(0, 6, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def jpeg_dir(data_dir: str | Path, num_images: int, size: int = 256, num_classes: int = 10) -> Path:
    """An ImageFolder tree ``class_k/img_xxxxx.jpg`` of ``num_images`` RGB JPEGs (quality 90)."""
    from PIL import Image

    def build(tmp: Path) -> None:
        rng = np.random.default_rng(3)
        for k in range(num_classes):
            (tmp / f"class_{k}").mkdir()
        for i in range(num_images):
            Image.fromarray(_jpeg_pixels(rng, size)).save(
                tmp / f"class_{i % num_classes}" / f"img_{i:05d}.jpg", quality=90
            )

    return _cached(Path(data_dir) / f"jpeg-{num_images}x{size}", build)


# ------------------------------------------------------------------------------------------- W4


def _idx_images(path: Path, images: np.ndarray) -> None:
    n, h, w = images.shape
    with open(path, "wb") as f:
        f.write(struct.pack(">IIII", 2051, n, h, w))
        f.write(images.astype(np.uint8).tobytes())


def _idx_labels(path: Path, labels: np.ndarray) -> None:
    with open(path, "wb") as f:
        f.write(struct.pack(">II", 2049, len(labels)))
        f.write(labels.astype(np.uint8).tobytes())


def _digits(rng: np.random.Generator, n: int) -> np.ndarray:
    """28x28 uint8 images: a few bright strokes on black, like handwriting."""
    imgs = np.zeros((n, 28, 28), dtype=np.uint8)
    for _ in range(3):
        r0 = rng.integers(4, 20, n)
        c0 = rng.integers(4, 20, n)
        h = rng.integers(2, 9, n)
        w = rng.integers(2, 9, n)
        val = rng.integers(128, 256, n).astype(np.uint8)
        for i in range(n):
            imgs[i, r0[i] : r0[i] + h[i], c0[i] : c0[i] + w[i]] = val[i]
    return imgs


def mnist_root(data_dir: str | Path, num_train: int, num_test: int | None = None) -> Path:
    """A root that ``torchvision.datasets.MNIST(root, train=True, download=False)`` reads:
    ``<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``."""
    num_test = num_test if num_test is not None else max(1, num_train // 6)

    def build(tmp: Path) -> None:
        raw = tmp / "MNIST" / "raw"
        raw.mkdir(parents=True)
        rng = np.random.default_rng(4)
        for split, n in (("train", num_train), ("t10k", num_test)):
            _idx_images(raw / f"{split}-images-idx3-ubyte", _digits(rng, n))
            _idx_labels(raw / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, n))

    return _cached(Path(data_dir) / f"mnist-{num_train}-{num_test}", build)
