"""Train a small CNN on scikit-learn's handwritten digits with ``RayStyleLoader``.

The training loop is a plain PyTorch loop; the only change from a ``DataLoader`` version is the line
that builds the loader. It prints one line per epoch (loss, samples/s through the loader and the model,
test accuracy) and exits with status 1 if the final test accuracy misses ``--target``.

    python examples/train_digits.py                      # torch map-style Dataset, 2 worker processes
    python examples/train_digits.py --source torchray    # the same data as a torchray Dataset pipeline

The digits (1797 8x8 images, shipped inside scikit-learn) need no download. On 2 CPU cores this takes
a few seconds and reaches about 97% test accuracy (``--target`` defaults to 0.93).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

import torchray_loader as rd
from torchray_loader import RayStyleLoader


class Digits(torch.utils.data.Dataset):
    """sklearn's digits as (1x8x8 float image in [0, 1], label) samples."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images = torch.from_numpy(images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
        self.labels = torch.from_numpy(labels.astype(np.int64))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.labels[i]


def load_split(seed: int = 0) -> tuple[Digits, Digits]:
    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    n_test = len(order) // 5
    test, train = order[:n_test], order[n_test:]
    return Digits(digits.images[train], digits.target[train]), Digits(digits.images[test], digits.target[test])


def _normalize(row: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    # A torchray transform, run by the worker processes.
    return {"image": (row["image"].astype(np.float32) / 16.0)[None], "label": row["label"]}


def torchray_source(train: Digits) -> rd.Dataset:
    """The same training data as a torchray Dataset: raw pixels in, normalized by a ``map`` that the
    worker processes run."""
    raw = (train.images * 16).round().to(torch.uint8).reshape(-1, 8, 8).numpy()
    labels = train.labels.numpy()
    ds = rd.from_items([{"image": raw[i], "label": int(labels[i])} for i in range(len(raw))])
    return ds.map(_normalize)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(16 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def unpack(batch) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch from a torch Dataset is (images, labels); from a torchray Dataset a dict of columns."""
    if isinstance(batch, dict):
        return batch["image"], batch["label"]
    return batch[0], batch[1]


@torch.no_grad()
def accuracy(model: nn.Module, loader) -> float:
    model.eval()
    correct = total = 0
    for batch in loader:
        x, y = unpack(batch)
        correct += (model(x).argmax(1) == y).sum().item()
        total += len(y)
    model.train()
    return correct / total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", choices=["torch", "torchray"], default="torch")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--target", type=float, default=0.93, help="minimum final test accuracy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads for training")
    args = parser.parse_args(argv)

    # A model this small gains nothing from intra-op threads; leave the cores to the loader's workers.
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train, test = load_split(args.seed)
    data = train if args.source == "torch" else torchray_source(train)
    # was: loader = torch.utils.data.DataLoader(data, batch_size=..., shuffle=True, num_workers=...)
    loader = RayStyleLoader(data, batch_size=args.batch_size, shuffle=True, seed=args.seed, num_workers=args.num_workers)
    test_loader = RayStyleLoader(test, batch_size=256)

    model = Net()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    loss_fn = nn.CrossEntropyLoss()
    print(f"train {len(train)} / test {len(test)} digits, {len(loader)} batches per epoch, source={args.source}")
    acc = 0.0
    start = time.perf_counter()
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        seen, loss_sum = 0, 0.0
        for batch in loader:
            x, y = unpack(batch)
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            seen += len(y)
            loss_sum += loss.item() * len(y)
        dt = time.perf_counter() - t0
        acc = accuracy(model, test_loader)
        print(
            f"epoch {epoch + 1}/{args.epochs}: loss {loss_sum / seen:.4f}  {seen / dt:,.0f} samples/s  "
            f"test accuracy {acc:.2%}",
            flush=True,
        )
    print(f"done in {time.perf_counter() - start:.1f}s; final test accuracy {acc:.2%} (target {args.target:.0%})")
    return 0 if acc >= args.target else 1


if __name__ == "__main__":
    sys.exit(main())
