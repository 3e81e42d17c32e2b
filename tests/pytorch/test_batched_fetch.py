"""The vectorised fetch of well-known datasets equals DataLoader's per-sample path, and is only taken
where it is known to be equal."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from loader_cases import assert_same_batches
from torch.utils.data import DataLoader, Subset, TensorDataset, default_collate

from torchray_loader import RayStyleLoader
from torchray_loader.pytorch.batched_fetch import batched_fetch

torchvision = pytest.importorskip("torchvision")
from torchvision import datasets, transforms  # noqa: E402

pytestmark = [pytest.mark.timeout(120), pytest.mark.filterwarnings("ignore:This DataLoader will create")]

NORMALIZE_GRAY = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
NORMALIZE_RGB = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))])


def _both(ds, **kw):
    out = []
    for cls in (DataLoader, RayStyleLoader):
        args = dict(kw)
        if args.get("shuffle"):
            args["generator"] = torch.Generator().manual_seed(3)
        out.append(list(cls(ds, **args)))
    return out


def _tensor_dataset():
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(50, 3, generator=g), torch.arange(50), torch.randint(0, 255, (50, 2, 2), dtype=torch.uint8))


@pytest.mark.parametrize("nw", [0, 2])
@pytest.mark.parametrize("shuffle,drop_last", [(False, False), (True, True)])
def test_tensor_dataset_and_its_subset_match_dataloader(nw, shuffle, drop_last):
    ds = _tensor_dataset()
    assert batched_fetch(ds, default_collate) is not None
    for d in (ds, Subset(ds, list(range(49, 0, -3)))):
        expected, actual = _both(d, batch_size=8, shuffle=shuffle, drop_last=drop_last, num_workers=nw)
        assert_same_batches(expected, actual)


@pytest.mark.parametrize("nw", [0, 2])
@pytest.mark.parametrize("transform", ["to_tensor", "normalize"])
def test_mnist_matches_dataloader(trl_mnist_root, nw, transform):
    tf = transforms.ToTensor() if transform == "to_tensor" else NORMALIZE_GRAY
    ds = datasets.MNIST(str(trl_mnist_root), train=True, download=False, transform=tf)
    assert batched_fetch(ds, default_collate) is not None
    expected, actual = _both(ds, batch_size=16, shuffle=True, num_workers=nw)
    assert_same_batches(expected, actual)
    assert actual[0][0].shape == (16, 1, 28, 28) and actual[0][1].dtype == torch.int64


@pytest.mark.parametrize("transform", ["to_tensor", "normalize"])
def test_cifar10_matches_dataloader(trl_cifar10_root, transform):
    tf = transforms.ToTensor() if transform == "to_tensor" else NORMALIZE_RGB
    ds = datasets.CIFAR10(str(trl_cifar10_root), train=True, download=False, transform=tf)
    assert batched_fetch(ds, default_collate) is not None
    expected, actual = _both(ds, batch_size=7, shuffle=True)
    assert_same_batches(expected, actual)


class _OverridesGetItem(TensorDataset):
    def __getitem__(self, i):
        return tuple(t[i] * 2 for t in self.tensors)


class _OwnGetItems(TensorDataset):
    def __getitems__(self, indices):
        return [self[i] for i in indices]


def test_per_sample_path_kept_where_equality_is_not_known(trl_mnist_root):
    t = torch.arange(6.0)
    assert batched_fetch(_OverridesGetItem(t), default_collate) is None
    assert batched_fetch(_OwnGetItems(t), default_collate) is None
    assert batched_fetch(TensorDataset(t), lambda b: b) is None
    plain = datasets.MNIST(str(trl_mnist_root), train=True, download=False)  # PIL images
    assert batched_fetch(plain, default_collate) is None
    flipped = datasets.MNIST(
        str(trl_mnist_root), train=True, download=False,
        transform=transforms.Compose([transforms.ToTensor(), transforms.RandomHorizontalFlip()]),
    )
    assert batched_fetch(flipped, default_collate) is None
    labelled = datasets.MNIST(
        str(trl_mnist_root), train=True, download=False, transform=transforms.ToTensor(), target_transform=int
    )
    assert batched_fetch(labelled, default_collate) is None
    # ...and the per-sample path still matches DataLoader for the overriding subclass
    expected, actual = _both(_OverridesGetItem(t), batch_size=4, shuffle=True)
    assert_same_batches(expected, actual)


def _seed_worker(worker_id):
    torch.manual_seed(worker_id)


def test_vectorised_gathers_run_in_the_consumer_at_any_num_workers(monkeypatch):
    ds = _tensor_dataset()
    expected = list(DataLoader(ds, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(3), num_workers=2))

    def no_pools(*args, **kwargs):
        raise AssertionError("a vectorised gather started worker processes")

    monkeypatch.setattr(RayStyleLoader, "_get_pools", no_pools)
    loader = RayStyleLoader(ds, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(3), num_workers=2)
    assert_same_batches(expected, list(loader))
    # A worker_init_fn is the user's code to run in workers: then workers run.
    monkeypatch.undo()
    with_init = RayStyleLoader(ds, batch_size=8, num_workers=2, worker_init_fn=_seed_worker)
    started = []
    real = RayStyleLoader._get_pools
    monkeypatch.setattr(RayStyleLoader, "_get_pools", lambda self, *a: started.append(a) or real(self, *a))
    assert_same_batches(list(DataLoader(ds, batch_size=8)), list(with_init))
    assert started


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("sampler", [np.linspace(0, 9, 4), [0.5, 2.9]])
def test_indices_that_are_no_integers_are_an_index_error(num_workers, sampler):
    """DataLoader raises IndexError (``tensor[0.5]``); the batched gather must not truncate them."""
    ds = TensorDataset(torch.arange(10) * 10)
    with pytest.raises(IndexError):
        list(DataLoader(ds, batch_size=2, sampler=sampler))
    with pytest.raises(IndexError, match="only integers are valid indices of a dataset"):
        list(RayStyleLoader(ds, batch_size=2, sampler=sampler, num_workers=num_workers))
