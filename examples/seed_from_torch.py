"""Guide: "Built-in PyTorch datasets" (内置 PyTorch 数据集): ``from_torch`` on torchvision's MNIST.

The guide calls ``torchvision.datasets.MNIST(root="/tmp/", download=True)``. With no network, this
script writes MNIST-format files (random pixels, labels ``i % 10``) into a temporary root first and
passes ``download=False``; torchvision reads them exactly as it reads the real files. Prints::

    Column  Type
    ------  ----
    item    <class 'object'>

``from_torch`` keeps the whole torch dataset in memory: use it for small built-in datasets.

Run: ``python examples/seed_from_torch.py``
"""

import tempfile

import torchvision

import torchray_loader as rd
from torchray_loader.testing import make_mnist


def main() -> None:
    with tempfile.TemporaryDirectory() as root:
        make_mnist(root, n_train=100, n_test=10)

        # --- the guide's code (download=False: the files above stand in for the download) ---
        mnist = torchvision.datasets.MNIST(root=root, download=False)
        ds = rd.from_torch(mnist)

        # The data for each item of the Torch dataset is under the "item" key.
        print(ds.schema())
        # ---

        assert ds.count() == len(mnist) == 100
        image, label = ds.take(1)[0]["item"]
        print("first item:", image, label)
        assert image.size == (28, 28) and label == 0


if __name__ == "__main__":
    main()
