"""pytest plugin: data fixtures for unit tests of data pipelines, with no network access.

Registered through the ``pytest11`` entry point, so with torchray_loader installed the fixtures are
available in every test session (without the entry point: ``pytest -p torchray_loader.testing.plugin``).
All fixtures are function-scoped, write under pytest's ``tmp_path`` and are deterministic.

========================  ========================================================================
``trl_image_folder``      8 RGB 32x32 JPEGs ``0.jpg``..``7.jpg`` in ``cat/`` and ``dog/`` (ImageFolder layout)
``trl_parquet_dir``       100 rows in 4 parquet files: ``id``, ``label``, ``value``, ``name``
``trl_mnist_root``        root for ``torchvision.datasets.MNIST(root, download=False)``: 64 train, 16 test
``trl_cifar10_root``      root for ``torchvision.datasets.CIFAR10(root, download=False)``: 50 train, 10 test
``trl_tiny_dataset``      :class:`~torchray_loader.testing.TinyDataset` of 32 dict samples
========================  ========================================================================

Example (a user's test file)::

    import torchvision
    from torchray_loader.testing import assert_exactly_once

    def test_mnist_pipeline(trl_mnist_root):
        mnist = torchvision.datasets.MNIST(trl_mnist_root, download=False)
        assert len(mnist) == 64
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Only pytest is imported at module level: this module is loaded at the start of every pytest
# session of an environment that has torchray_loader installed, so it must be cheap and never fail.


@pytest.fixture
def trl_image_folder(tmp_path: Path) -> Path:
    """A folder of 8 RGB 32x32 JPEG files named ``0.jpg`` ... ``7.jpg``, in class folders ``cat/`` and ``dog/``.

    Works with ``rd.read_images(str(path), include_paths=True)`` and
    ``torchvision.datasets.ImageFolder(path)``.
    """
    from .data import make_image_folder

    return make_image_folder(tmp_path / "images", n=8)


@pytest.fixture
def trl_parquet_dir(tmp_path: Path) -> Path:
    """A directory of 4 parquet files with 100 rows: ``id`` 0..99, ``label`` (id % 2), ``value``, ``name``."""
    from .data import make_parquet_dir

    return make_parquet_dir(tmp_path / "parquet", n=100, num_files=4)


@pytest.fixture
def trl_mnist_root(tmp_path: Path) -> Path:
    """A root that ``torchvision.datasets.MNIST(root, train=..., download=False)`` loads: 64 train, 16 test images."""
    from .data import make_mnist

    return make_mnist(tmp_path / "mnist", n_train=64, n_test=16)


@pytest.fixture
def trl_cifar10_root(tmp_path: Path) -> Iterator[Path]:
    """A root that ``torchvision.datasets.CIFAR10(root, train=..., download=False)`` loads: 50 train, 10 test.

    Generated files cannot have the official md5 sums that torchvision compares, so while the test
    runs the fixture relaxes ``CIFAR10``'s checks to "file exists" (restored afterwards).
    """
    from .data import make_cifar10, relaxed_cifar10_checks

    root = make_cifar10(tmp_path / "cifar10", n_per_batch=10, n_test=10)
    with relaxed_cifar10_checks():
        yield root


@pytest.fixture
def trl_tiny_dataset() -> Any:
    """A map-style ``TinyDataset(32)``: sample ``i`` is ``{"id": i, "x": tensor([i., i., i., i.]), "y": i % 2}``."""
    from .datasets import TinyDataset

    return TinyDataset(32)
