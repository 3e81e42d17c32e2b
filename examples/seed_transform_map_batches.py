"""Guide: "Transformations with Torch tensors", the ``map_batches`` tab (使用 Torch 张量进行变换).

A batch function may return torch tensors; they are stored as numpy arrays, so the next transform
sees ``np.ndarray``. Prints the schema the guide shows::

    Column  Type
    ------  ----
    tensor  numpy.ndarray(shape=(32, 32, 3), dtype=uint8)

Run: ``python examples/seed_transform_map_batches.py``
"""

import tempfile
from typing import Dict  # noqa: UP035 - the guide's spelling

import numpy as np
import torch

import torchray_loader as rd
from torchray_loader.testing import make_image_folder


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        image_dir = str(make_image_folder(tmp, n=8, size=(32, 32), classes=None))

        # --- the guide's code ---
        ds = rd.read_images(image_dir)

        def convert_to_torch(batch: Dict[str, np.ndarray]) -> Dict[str, torch.Tensor]:  # noqa: UP006
            return {"tensor": torch.as_tensor(batch["image"])}

        # The tensor gets converted into a Numpy array under the hood
        transformed_ds = ds.map_batches(convert_to_torch, batch_size=2)
        print(transformed_ds.schema())

        # Subsequent transformations take in Numpy array as input.
        def check_numpy(batch: Dict[str, np.ndarray]):  # noqa: UP006
            assert isinstance(batch["tensor"], np.ndarray)
            return batch

        transformed_ds.map_batches(check_numpy, batch_size=2).take_all()
        # ---

        rows = transformed_ds.map_batches(check_numpy, batch_size=2).take_all()
        assert len(rows) == 8 and rows[0]["tensor"].shape == (32, 32, 3)


if __name__ == "__main__":
    main()
