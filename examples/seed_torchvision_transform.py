"""Guide: "Built-in PyTorch transforms", the ``torchvision`` tab (内置 PyTorch 转换).

Applies a ``torchvision.transforms`` pipeline in ``map``. Prints the schema the guide shows::

    Column             Type
    ------             ----
    image              numpy.ndarray(shape=(32, 32, 3), dtype=uint8)
    transformed_image  numpy.ndarray(shape=(3, 10, 10), dtype=float)

(The guide's ``torchtext`` tab cannot run here: torchtext has no release for torch 2.14 and its
BERT tokenizer downloads a vocabulary; see docs/migration.md.)

Run: ``python examples/seed_torchvision_transform.py``
"""

import tempfile
from typing import Dict  # noqa: UP035 - the guide's spelling

import numpy as np
import torch
from torchvision import transforms

import torchray_loader as rd
from torchray_loader.testing import make_image_folder


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        image_dir = str(make_image_folder(tmp, n=8, size=(32, 32), classes=None))

        # --- the guide's code ---
        # Create the Dataset.
        ds = rd.read_images(image_dir)

        # Define the torchvision transform.
        transform = transforms.Compose(
            [
                transforms.ToTensor(),
                transforms.CenterCrop(10)
            ]
        )

        # Define the map function
        def transform_image(row: Dict[str, np.ndarray]) -> Dict[str, torch.Tensor]:  # noqa: UP006
            row["transformed_image"] = transform(row["image"])
            return row

        # Apply the transform over the dataset.
        transformed_ds = ds.map(transform_image)
        print(transformed_ds.schema())
        # ---

        row = transformed_ds.take(1)[0]
        assert row["transformed_image"].shape == (3, 10, 10)
        assert row["transformed_image"].dtype == np.float32


if __name__ == "__main__":
    main()
