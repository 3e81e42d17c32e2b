"""The seed guide's examples that need no files, run with ``import torchray_loader as rd``.

Images come from an in-memory stand-in for ``read_images`` (same column name, dtype and shape); the
file-based variants live in ``tests/test_seed_files.py``. Printed schemas must match the guide.
"""

from __future__ import annotations

from typing import Dict  # noqa: UP035 - the guide's own code

import numpy as np
import pytest
import torch
import torch.nn as nn

import torchray_loader as rd

GUIDE_TENSOR_SCHEMA = """Column  Type
------  ----
tensor  numpy.ndarray(shape=(32, 32, 3), dtype=uint8)
"""

GUIDE_TORCHVISION_SCHEMA = """Column             Type
------             ----
image              numpy.ndarray(shape=(32, 32, 3), dtype=uint8)
transformed_image  numpy.ndarray(shape=(3, 10, 10), dtype=float)
"""


def images_in_memory(n: int = 6) -> rd.Dataset:
    rng = np.random.default_rng(0)
    return rd.from_numpy(rng.integers(0, 255, size=(n, 32, 32, 3), dtype=np.uint8)).rename_columns({"data": "image"})


def convert_to_torch(row: Dict[str, np.ndarray]) -> Dict[str, torch.Tensor]:
    return {"tensor": torch.as_tensor(row["image"])}


def check_numpy(row: Dict[str, np.ndarray]):
    assert isinstance(row["tensor"], np.ndarray)
    return row


def convert_batch_to_torch(batch: Dict[str, np.ndarray]) -> Dict[str, torch.Tensor]:
    return {"tensor": torch.as_tensor(batch["image"])}


@pytest.mark.parametrize("num_workers", [0, 2])
def test_map_returns_torch_then_numpy(capsys, num_workers):
    rd.DataContext.get_current().num_workers = num_workers
    ds = images_in_memory()
    transformed_ds = ds.map(convert_to_torch)
    print(transformed_ds.schema())
    rows = transformed_ds.map(check_numpy).take_all()
    assert capsys.readouterr().out == GUIDE_TENSOR_SCHEMA
    assert len(rows) == 6 and rows[0]["tensor"].shape == (32, 32, 3)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_map_batches_returns_torch_then_numpy(capsys, num_workers):
    rd.DataContext.get_current().num_workers = num_workers
    ds = images_in_memory()
    transformed_ds = ds.map_batches(convert_batch_to_torch, batch_size=2)
    print(transformed_ds.schema())

    def check_numpy_batch(batch: Dict[str, np.ndarray]):
        assert isinstance(batch["tensor"], np.ndarray)
        return batch

    out = transformed_ds.map_batches(check_numpy_batch, batch_size=2).take_all()
    assert capsys.readouterr().out == GUIDE_TENSOR_SCHEMA
    assert len(out) == 6


def test_torchvision_transform(capsys):
    pytest.importorskip("torchvision")
    from torchvision import transforms

    ds = images_in_memory()
    transform = transforms.Compose([transforms.ToTensor(), transforms.CenterCrop(10)])

    def transform_image(row: Dict[str, np.ndarray]) -> Dict[str, torch.Tensor]:
        row["transformed_image"] = transform(row["image"])
        return row

    transformed_ds = ds.map(transform_image)
    print(transformed_ds.schema())
    assert capsys.readouterr().out == GUIDE_TORCHVISION_SCHEMA


class TorchPredictor:
    def __init__(self):
        self.model = nn.Sequential(nn.Linear(in_features=100, out_features=1), nn.Sigmoid())
        self.model.eval()

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        tensor = torch.as_tensor(batch["data"], dtype=torch.float32)
        with torch.inference_mode():
            return {"output": self.model(tensor).numpy()}


@pytest.mark.parametrize("num_workers", [0, 2])
def test_batch_inference_with_actor_pool(capsys, num_workers):
    rd.DataContext.get_current().num_workers = num_workers
    ds = rd.from_numpy(np.ones((1, 100)))
    scale = rd.ActorPoolStrategy(size=2)
    predictions = ds.map_batches(TorchPredictor, compute=scale)
    predictions.show(limit=1)
    out = capsys.readouterr().out
    # +MOCK in the guide: the value depends on random weights; the shape of the output is fixed.
    assert out.startswith("{'output': array([") and out.rstrip().endswith("dtype=float32)}")
    value = float(out.split("[")[1].split("]")[0])
    assert 0.0 < value < 1.0


def test_from_items_with_torch_tensor():
    tensor = torch.Tensor(1)
    ds = rd.from_items([{"tensor": tensor}])
    rows = ds.take_all()
    assert isinstance(rows[0]["tensor"], np.ndarray) and rows[0]["tensor"].shape == (1,)
    assert ds.schema().names == ["tensor"]


def test_iter_torch_batches_dict_of_tensors():
    ds = images_in_memory(5)
    batches = list(ds.iter_torch_batches(batch_size=2))
    assert [b["image"].shape[0] for b in batches] == [2, 2, 1]
    assert all(b["image"].dtype == torch.uint8 for b in batches)
