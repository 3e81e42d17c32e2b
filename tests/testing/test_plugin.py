"""The pytest plugin's fixtures and ``assert_exactly_once``.

The fixtures come in through ``conftest.py`` next to this file, so these tests pass whether or not
the package is installed (the ``pytest11`` entry point only exists after ``pip install``); ``test_plugin_in_a_user_session``
runs a nested pytest session the way a user's project would see the plugin.
"""

from __future__ import annotations

import importlib.metadata
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import torchray_loader as rd
from torchray_loader.testing import TinyDataset, assert_exactly_once, make_cifar10, relaxed_cifar10_checks

torchvision = pytest.importorskip("torchvision")

pytest_plugins = ["pytester"]


def _entry_point_installed() -> bool:
    eps = importlib.metadata.entry_points(group="pytest11")
    return any(ep.value == "torchray_loader.testing.plugin" for ep in eps)


# ------------------------------------------------------------------------------ fixtures


def test_mnist_root_loads_without_download(trl_mnist_root: Path) -> None:
    train = torchvision.datasets.MNIST(trl_mnist_root, train=True, download=False)
    test = torchvision.datasets.MNIST(trl_mnist_root, train=False, download=False)
    assert len(train) == 64 and len(test) == 16
    img, label = train[13]
    assert img.size == (28, 28) and img.mode == "L"
    assert label == 3
    assert train.data.dtype == torch.uint8 and train.data.shape == (64, 28, 28)


def test_cifar10_root_loads_without_download(trl_cifar10_root: Path) -> None:
    train = torchvision.datasets.CIFAR10(trl_cifar10_root, train=True, download=False)
    test = torchvision.datasets.CIFAR10(trl_cifar10_root, train=False, download=False)
    assert len(train) == 50 and len(test) == 10
    img, label = test[7]
    assert img.size == (32, 32) and img.mode == "RGB" and label == 7
    assert train.classes[0] == "airplane" and len(train.classes) == 10


def test_cifar10_pixels_round_trip(tmp_path: Path) -> None:
    # The pickled CHW byte layout decodes back to the HWC images torchvision hands out.
    root = make_cifar10(tmp_path, n_per_batch=1, n_test=2)
    with open(root / "cifar-10-batches-py" / "test_batch", "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    with relaxed_cifar10_checks():
        ds = torchvision.datasets.CIFAR10(root, train=False, download=False)
    expected = entry["data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    assert np.array_equal(np.asarray(ds[1][0]), expected[1])


def test_cifar10_checks_are_restored(tmp_path: Path) -> None:
    root = make_cifar10(tmp_path)
    md5 = torchvision.datasets.CIFAR10.meta["md5"]
    with relaxed_cifar10_checks():
        torchvision.datasets.CIFAR10(root, download=False)
    assert torchvision.datasets.CIFAR10.meta["md5"] == md5
    with pytest.raises(RuntimeError, match="not found or corrupted"):
        torchvision.datasets.CIFAR10(root, download=False)


def test_image_folder_layout(trl_image_folder: Path) -> None:
    files = sorted(p.relative_to(trl_image_folder).as_posix() for p in trl_image_folder.rglob("*.jpg"))
    assert files == ["cat/0.jpg", "cat/2.jpg", "cat/4.jpg", "cat/6.jpg", "dog/1.jpg", "dog/3.jpg", "dog/5.jpg", "dog/7.jpg"]
    folder = torchvision.datasets.ImageFolder(trl_image_folder)
    assert len(folder) == 8 and folder.classes == ["cat", "dog"]
    img, label = folder[0]
    assert img.size == (32, 32) and img.mode == "RGB" and label == 0


def test_image_folder_reads_with_read_images(trl_image_folder: Path) -> None:
    if not hasattr(rd, "read_images"):
        pytest.skip("rd.read_images is not implemented yet")
    ds = rd.read_images(str(trl_image_folder), include_paths=True)
    rows = ds.take_all()
    assert len(rows) == 8
    assert all(r["image"].shape == (32, 32, 3) and r["image"].dtype == np.uint8 for r in rows)
    names = sorted(int(Path(r["path"]).stem) for r in rows)
    assert names == list(range(8))


def test_parquet_dir(trl_parquet_dir: Path) -> None:
    import pyarrow.parquet as pq

    assert len(list(trl_parquet_dir.glob("*.parquet"))) == 4
    table = pq.read_table(trl_parquet_dir)
    assert table.column_names == ["id", "label", "value", "name"]
    assert sorted(table["id"].to_pylist()) == list(range(100))
    if hasattr(rd, "read_parquet"):
        assert_exactly_once(rd.read_parquet(str(trl_parquet_dir)).iter_batches(batch_size=7), "id", expected=100)


def test_tiny_dataset(trl_tiny_dataset: TinyDataset) -> None:
    assert len(trl_tiny_dataset) == 32
    sample = trl_tiny_dataset[5]
    assert sample["id"] == 5 and sample["y"] == 1
    assert torch.equal(sample["x"], torch.full((4,), 5.0))
    loader = torch.utils.data.DataLoader(trl_tiny_dataset, batch_size=5, shuffle=True)
    assert_exactly_once(loader, "id", expected=32)
    with pytest.raises(IndexError):
        trl_tiny_dataset[32]


def test_tiny_dataset_with_ray_style_loader(trl_tiny_dataset: TinyDataset) -> None:
    try:
        from torchray_loader import RayStyleLoader
    except (ImportError, AttributeError):
        pytest.skip("RayStyleLoader (torchray_loader/pytorch/loader.py) is not implemented yet")
    loader = RayStyleLoader(trl_tiny_dataset, batch_size=6, shuffle=True)
    assert_exactly_once(loader, "id", expected=32)


# ------------------------------------------------------------------------------ assert_exactly_once


def test_exactly_once_passes_and_returns_order() -> None:
    assert assert_exactly_once(rd.range(10).iter_batches(batch_size=3), "id", expected=10) == list(range(10))
    assert assert_exactly_once(rd.range(5).iter_torch_batches(batch_size=2), expected=range(5)) == [0, 1, 2, 3, 4]
    # Rows of a Dataset, tuple batches by index, and a callable key.
    assert assert_exactly_once(rd.range(3), "id", expected=3) == [0, 1, 2]
    assert assert_exactly_once([(torch.tensor([1, 2]), None), (torch.tensor([0]), None)], 0, expected=3)
    assert assert_exactly_once([{"x": torch.tensor([[1.0], [2.0]])}], key=lambda b: b["x"][:, 0]) == [1.0, 2.0]


def test_exactly_once_reports_missing_duplicated_unexpected() -> None:
    batches = [{"id": np.array([0, 1, 1])}, {"id": np.array([3, 9, 3, 3])}]
    with pytest.raises(AssertionError) as info:
        assert_exactly_once(batches, "id", expected=5)
    msg = str(info.value)
    assert "7 keys delivered in 2 batches, 4 distinct; expected 5" in msg
    assert "missing (2): [2, 4]" in msg
    assert "duplicated (2): [1 (2 times), 3 (3 times)]" in msg
    assert "unexpected (1): [9]" in msg


def test_exactly_once_without_expected_only_checks_duplicates() -> None:
    assert assert_exactly_once([{"id": [5, 7]}, {"id": [6]}]) == [5, 7, 6]
    with pytest.raises(AssertionError, match=r"duplicated \(1\): \['a' \(2 times\)\]"):
        assert_exactly_once([{"id": ["a", "b"]}, {"id": ["a"]}])


def test_exactly_once_truncates_long_listings() -> None:
    with pytest.raises(AssertionError, match=r"missing \(100\): \[0, 1, .*19, \.\.\. and 80 more\]"):
        assert_exactly_once([], expected=100)


def test_exactly_once_bad_key() -> None:
    with pytest.raises(KeyError, match="has no key 'label'"):
        assert_exactly_once([{"id": [1]}], "label")
    with pytest.raises(TypeError, match="cannot take key 'id' from a tuple batch"):
        assert_exactly_once([(1, 2)], "id")


# ------------------------------------------------------------------------------ the plugin in a session


def test_plugin_in_a_user_session(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_user="""
        import torchvision
        from torch.utils.data import DataLoader
        from torchray_loader.testing import assert_exactly_once

        def test_fixtures(trl_mnist_root, trl_cifar10_root, trl_image_folder, trl_parquet_dir, trl_tiny_dataset):
            assert len(torchvision.datasets.MNIST(trl_mnist_root, download=False)) == 64
            assert len(torchvision.datasets.CIFAR10(trl_cifar10_root, train=False, download=False)) == 10
            assert len(torchvision.datasets.ImageFolder(trl_image_folder)) == 8
            assert len(list(trl_parquet_dir.iterdir())) == 4
            assert_exactly_once(DataLoader(trl_tiny_dataset, batch_size=8), "id", expected=32)
        """
    )
    # With the package installed the entry point loads the plugin; otherwise name it explicitly.
    args = [] if _entry_point_installed() else ["-p", "torchray_loader.testing.plugin"]
    result = pytester.runpytest_inprocess(*args, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
