"""W3: 3,000 JPEGs 256x256 -> decode + resize to 224 -> batches of 64.

Variant ``uint8``: uint8 image batches.

* dataloader: ``ImageFolder(root, Compose([Resize(224), CenterCrop(224), PILToTensor()]))``
* loader:     ``rd.RayStyleLoader`` over that same ImageFolder
* torchray:   ``rd.read_images(root, size=(224, 224), mode="RGB").iter_torch_batches(batch_size=64)``
  (HWC batches, as Ray gives them)
* ray:        the same with ``ray.data``

Variant ``float``: the user's torchvision float transform
``Compose([Resize(224), CenterCrop(224), ToTensor(), Normalize(mean, std)])``.

* dataloader / loader: ImageFolder with that transform
* torchray / ray: ``read_images(root, mode="RGB").map_batches(apply_transform, batch_size=64)`` where
  ``apply_transform`` runs the same Compose on each image (``Image.fromarray``), then
  ``iter_torch_batches(batch_size=64)``
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data import jpeg_dir
from ..harness import Result, execute, measure
from .common import data_dir as resolve_data_dir
from .common import new_result, prepare, ray_data, require, sizes, warm_epochs

ID = "W3"
TITLE = "3,000 JPEGs 256x256, decode + resize to 224, batch 64"
VARIANTS = {
    "uint8": ("torchray", "loader", "dataloader", "ray"),
    "float": ("torchray", "loader", "dataloader", "ray"),
}
BATCH = 64
SIZE = 224
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def uint8_transform():
    from torchvision import transforms as T

    return T.Compose([T.Resize(SIZE), T.CenterCrop(SIZE), T.PILToTensor()])


def float_transform():
    from torchvision import transforms as T

    return T.Compose([T.Resize(SIZE), T.CenterCrop(SIZE), T.ToTensor(), T.Normalize(MEAN, STD)])


class ApplyTransform:
    """``map_batches`` body: the user's PIL-based torchvision transform, image by image."""

    def __init__(self, transform) -> None:
        self.transform = transform

    def __call__(self, batch: dict) -> dict:
        from PIL import Image

        out = [self.transform(Image.fromarray(img)).numpy() for img in batch["image"]]
        return {"image": np.stack(out)}


def run(impl: str, num_workers: int, quick: bool, *, variant: str | None = None, scale: float = 1.0,
        data_dir: str | None = None) -> Result:
    variant = variant or "uint8"
    result = new_result(ID, variant, impl, num_workers)

    def body(res: Result) -> Result:
        sz = sizes(quick, scale)
        root = jpeg_dir(resolve_data_dir(data_dir), sz.images)
        res.extra["rows"] = sz.images
        rd = prepare(impl, res, num_workers)
        import PIL.Image  # noqa: F401 - imports are not timed
        import torchvision.datasets  # noqa: F401
        import torchvision.transforms  # noqa: F401

        return measure(res, lambda: setup(impl, variant, num_workers, root, res, rd), warm_epochs=warm_epochs(quick))

    return execute(result, body)


def setup(impl: str, variant: str, num_workers: int, root: Path, res: Result, rd):
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    transform = uint8_transform() if variant == "uint8" else float_transform()
    if impl == "dataloader":
        dl = DataLoader(ImageFolder(str(root), transform=transform), batch_size=BATCH, num_workers=num_workers)
        return lambda: dl
    if impl == "loader":
        loader = require(rd, "RayStyleLoader")(
            ImageFolder(str(root), transform=transform), batch_size=BATCH, num_workers=num_workers
        )
        return lambda: loader
    if impl in ("torchray", "ray"):
        api = require(rd, "read_images") if impl == "torchray" else ray_data(res, num_workers).read_images
        if variant == "uint8":
            ds = api(str(root), size=(SIZE, SIZE), mode="RGB")
        else:
            ds = api(str(root), mode="RGB").map_batches(ApplyTransform(transform), batch_size=BATCH)
        return lambda: ds.iter_torch_batches(batch_size=BATCH)
    raise ValueError(f"unknown impl {impl!r}")
