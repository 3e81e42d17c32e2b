"""Guide: "Iterating over Torch tensors for training" (迭代 Torch 张量进行训练).

The guide reads ``s3://anonymous@ray-example-data/image-datasets/simple`` (32x32 RGB images); this
script writes a local folder of the same kind of images first, then runs the guide's code with
``import torchray_loader as rd`` in place of ``ray.data``.

Run: ``python examples/seed_iterate_torch_batches.py``
"""

import tempfile

import torch

import torchray_loader as rd
from torchray_loader.testing import make_image_folder


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        image_dir = str(make_image_folder(tmp, n=6, size=(32, 32), classes=None))

        # --- the guide's code ---
        ds = rd.read_images(image_dir)

        for batch in ds.iter_torch_batches(batch_size=2):
            print(batch)
        # ---

        # What the guide's output shows: one uint8 tensor of images per batch.
        batches = list(ds.iter_torch_batches(batch_size=2))
        assert len(batches) == 3
        for batch in batches:
            assert list(batch) == ["image"]
            assert batch["image"].dtype == torch.uint8
            assert tuple(batch["image"].shape) == (2, 32, 32, 3)


if __name__ == "__main__":
    main()
