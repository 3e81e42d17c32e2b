"""from_torch: torch and torchvision datasets as a Dataset with column ``item``, read in parallel.

torchvision datasets read files these tests write (MNIST idx files, CIFAR-10 batches, an image
folder); nothing is downloaded.
"""

from __future__ import annotations

import os
import pickle
import struct

import numpy as np
import pytest
import torch
import torchvision
import torchvision.transforms as T
from loader_cases import ShardedIterable, assert_same
from PIL import Image

import torchray_loader as rd
from torchray_loader import RayStyleLoader

pytestmark = pytest.mark.timeout(120)

N_IMAGES = 37


def _write_mnist(root: str, n: int = N_IMAGES) -> None:
    raw = os.path.join(root, "MNIST", "raw")
    os.makedirs(raw, exist_ok=True)
    rng = np.random.default_rng(0)
    for split in ("train", "t10k"):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        with open(os.path.join(raw, f"{split}-images-idx3-ubyte"), "wb") as f:
            f.write(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        with open(os.path.join(raw, f"{split}-labels-idx1-ubyte"), "wb") as f:
            f.write(struct.pack(">II", 2049, n) + labels.tobytes())


class LocalCIFAR10(torchvision.datasets.CIFAR10):
    """CIFAR10 over batch files written by the test: skips only the md5 checks of the official archive."""

    def _check_integrity(self) -> bool:
        return True

    def _load_meta(self) -> None:
        with open(os.path.join(self.root, self.base_folder, self.meta["filename"]), "rb") as f:
            self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


def _write_cifar(root: str, n: int = 8) -> None:
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(1)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(names):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump({"data": data, "labels": [(k + i) % 10 for i in range(n)]}, f)
    with open(os.path.join(folder, "batches.meta"), "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)


def _write_image_folder(root: str) -> None:
    for c, cls in enumerate(["cat", "dog"]):
        os.makedirs(os.path.join(root, cls), exist_ok=True)
        for i in range(5):
            Image.fromarray(np.full((6, 7, 3), 20 * i + c, dtype=np.uint8)).save(os.path.join(root, cls, f"{i}.png"))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("torchvision"))
    _write_mnist(root)
    _write_cifar(root)
    _write_image_folder(os.path.join(root, "folder"))
    return root


def _datasets(root: str) -> dict[str, torch.utils.data.Dataset]:
    return {
        "mnist": torchvision.datasets.MNIST(root, train=True, download=False),
        "cifar10": LocalCIFAR10(root, train=False, download=False),
        "fakedata": torchvision.datasets.FakeData(size=21, image_size=(3, 8, 8), num_classes=4),
        "imagefolder": torchvision.datasets.ImageFolder(os.path.join(root, "folder")),
        "tensor": torch.utils.data.TensorDataset(torch.arange(15), torch.arange(15.0)),
        # datasets read by one vectorised gather per range (batched_fetch.batched_samples):
        "mnist_to_tensor": torchvision.datasets.MNIST(root, train=True, download=False, transform=T.ToTensor()),
        "cifar10_normalize": LocalCIFAR10(root, train=False, download=False, transform=T.Compose(
            [T.ToTensor(), T.Normalize((0.5, 0.4, 0.3), (0.2, 0.3, 0.25))]
        )),
        "subset_of_mnist": torch.utils.data.Subset(
            torchvision.datasets.MNIST(root, train=True, download=False, transform=T.ToTensor()), [9, 0, 33, 4, 4]
        ),
        "tensor_one_column": torch.utils.data.TensorDataset(torch.arange(30.0).reshape(10, 3)),
    }


def test_schema_prints_item_object(data_root):
    ds = rd.from_torch(torchvision.datasets.MNIST(data_root, download=False))
    assert str(ds.schema()) == "Column  Type\n------  ----\nitem    <class 'object'>"
    assert ds.count() == N_IMAGES


@pytest.mark.parametrize("nw", [0, 2])
@pytest.mark.parametrize("name", [
    "mnist", "cifar10", "fakedata", "imagefolder", "tensor",
    "mnist_to_tensor", "cifar10_normalize", "subset_of_mnist", "tensor_one_column",
])
def test_items_equal_the_dataset_in_order(data_root, name, nw, fresh_data_context):
    fresh_data_context.num_workers = nw
    torch_ds = _datasets(data_root)[name]
    ds = rd.from_torch(torch_ds)
    items = [row["item"] for row in ds.iter_rows()]
    assert len(items) == len(torch_ds)
    for i, item in enumerate(items):
        assert_same(torch_ds[i], item, f"{name}[{i}]")


@pytest.mark.parametrize("name,gathered", [("mnist_to_tensor", True), ("subset_of_mnist", True), ("mnist", False)])
def test_known_datasets_are_gathered_per_range(data_root, name, gathered, monkeypatch, fresh_data_context):
    fresh_data_context.num_workers = 0  # the read runs in this process, where the spy sees it
    from torchray_loader.pytorch import from_torch as module

    used = []
    original = module.batched_samples

    def spy(dataset):
        gather = original(dataset)
        used.append(gather is not None)
        return gather

    monkeypatch.setattr(module, "batched_samples", spy)
    torch_ds = _datasets(data_root)[name]
    rows = list(rd.from_torch(torch_ds).iter_rows())
    assert len(rows) == len(torch_ds) and used and all(u is gathered for u in used)


class PidDataset(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 64

    def __getitem__(self, i: int) -> tuple[int, int]:
        return i, os.getpid()


def test_read_in_parallel_by_workers(fresh_data_context):
    fresh_data_context.num_workers = 2
    ds = rd.from_torch(PidDataset())
    rows = [r["item"] for r in ds.iter_rows()]
    assert [i for i, _ in rows] == list(range(64))
    assert len(ds._plan.tasks) > 1  # several read tasks, not Ray's single sequential one
    pids = {pid for _, pid in rows}
    from torchray_loader.execution import pool

    if pool.make_pool(1, fresh_data_context).__class__.__name__ == "ProcessPool":
        assert os.getpid() not in pids and len(pids) >= 1


#: Times a CountingDataset was pickled in this (the consumer) process.
PICKLED: list[int] = []


class CountingDataset(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i

    def __reduce__(self):
        PICKLED.append(1)
        return (CountingDataset, (self.n,))


def test_dataset_reaches_each_worker_once_not_with_every_task(fresh_data_context):
    fresh_data_context.num_workers = 2
    PICKLED.clear()
    ds = rd.from_torch(CountingDataset(5000))
    assert len(ds._plan.tasks) >= 5  # tasks of at most 1,024 rows
    assert [r["item"] for r in ds.iter_rows()] == list(range(5000))
    assert len(PICKLED) <= 2


def _to_tensors(row):
    image, label = row["item"]
    return {"image": np.asarray(image), "label": label}


def test_map_item_to_tensor_columns(data_root):
    ds = rd.from_torch(torchvision.datasets.MNIST(data_root, download=False)).map(_to_tensors)
    schema = ds.schema()
    assert schema.names == ["image", "label"]
    batch = next(iter(ds.iter_torch_batches(batch_size=8)))
    assert batch["image"].shape == (8, 28, 28) and batch["image"].dtype == torch.uint8
    assert batch["label"].tolist() == [i % 10 for i in range(8)]


@pytest.mark.parametrize("nw", [0, 2])
def test_loader_over_from_torch(data_root, nw):
    mnist = torchvision.datasets.MNIST(data_root, download=False)
    ds = rd.from_torch(mnist).map(_to_tensors)
    loader = RayStyleLoader(ds, batch_size=10, shuffle=True, seed=0, num_workers=nw)
    batches = list(loader)
    assert len(batches) == len(loader) == 4
    images = torch.cat([b["image"] for b in batches])
    expected = {tuple(mnist.data[i].flatten().tolist()[:20]) for i in range(N_IMAGES)}
    assert {tuple(img.flatten().tolist()[:20]) for img in images} == expected


def test_iterable_dataset_source():
    ds = rd.from_torch(ShardedIterable(2500))
    assert [r["item"] for r in ds.iter_rows()] == list(range(2500))


def test_rejects_non_datasets():
    with pytest.raises(TypeError, match="from_torch expects a torch Dataset"):
        rd.from_torch(42)


def _items_to_columns(batch):
    items = batch["item"]
    return {"image": np.stack([np.asarray(x) for x, _ in items]), "label": np.asarray([y for _, y in items])}


def _zero_images_in_place(batch):
    for image, _ in batch["item"]:
        image.zero_()  # a UDF that changes its input in place
    return _items_to_columns(batch)


@pytest.mark.parametrize("nw", [0, 2])
@pytest.mark.parametrize("name", ["mnist_to_tensor", "cifar10_normalize", "subset_of_mnist"])
def test_gathered_items_reach_a_fused_udf_without_pickling(data_root, name, nw, monkeypatch, fresh_data_context):
    fresh_data_context.num_workers = nw
    from torchray_loader.blocks import object_block

    pickled = []
    original = object_block._object_column
    monkeypatch.setattr(object_block, "_object_column", lambda values: (pickled.append(1), original(values))[1])
    torch_ds = _datasets(data_root)[name]
    rows = rd.from_torch(torch_ds).map_batches(_items_to_columns, batch_size=8).take_all()
    assert len(rows) == len(torch_ds)
    for i, row in enumerate(rows):
        image, label = torch_ds[i]
        assert np.array_equal(row["image"], image.numpy()) and row["label"] == label
    if nw == 0:  # the read ran in this process: no item was pickled on the way to the UDF
        assert not pickled
    assert len(rd.from_torch(torch_ds).take_all()) == len(torch_ds)  # without a UDF: an object column


class StoredRows(torch.utils.data.Dataset):
    """Returns the objects it keeps (as many user datasets do)."""

    def __init__(self) -> None:
        self.rows = [(torch.full((2,), float(i)), i) for i in range(20)]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


@pytest.mark.parametrize("source", ["stored", "gathered"])
def test_a_udf_changing_items_in_place_never_changes_the_dataset(data_root, source, fresh_data_context):
    fresh_data_context.num_workers = 0  # the dataset object itself is read in this process
    torch_ds = StoredRows() if source == "stored" else _datasets(data_root)["mnist_to_tensor"]
    before = [torch_ds[i][0].clone() for i in range(len(torch_ds))]
    rows = rd.from_torch(torch_ds).map_batches(_zero_images_in_place, batch_size=4).take_all()
    assert all(not np.asarray(r["image"]).any() for r in rows)
    assert all(torch.equal(torch_ds[i][0], b) for i, b in enumerate(before))


class LayoutDataset(torch.utils.data.Dataset):
    """Samples of one layout (``kind``), or of two alternating ones (``"mixed"``)."""

    def __init__(self, kind: str, n: int = 2100) -> None:
        self.kind, self.n = kind, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        x = torch.arange(4, dtype=torch.float32) + i
        if self.kind == "tuple":
            return x, i - 1000
        if self.kind == "dict":
            return {"x": x.reshape(2, 2), "y": torch.tensor(i), "w": float(i) / 7}
        if self.kind == "nested":
            return [np.full(3, i, dtype=np.int16), (x.to(torch.bool), {}), ()]
        if self.kind == "tensor":
            return x
        return (x, i) if i % 2 else (x[:3], i)  # "mixed": two shapes


LAYOUTS = ["tuple", "dict", "nested", "tensor", "mixed"]


@pytest.mark.parametrize("nw", [0, 2])
@pytest.mark.parametrize("kind", LAYOUTS)
def test_samples_of_one_layout_come_back_equal(kind, nw, fresh_data_context):
    fresh_data_context.num_workers = nw
    torch_ds = LayoutDataset(kind)
    ds = rd.from_torch(torch_ds)
    assert str(ds.schema()) == "Column  Type\n------  ----\nitem    <class 'object'>"
    items = [row["item"] for row in ds.iter_rows()]
    assert len(items) == ds.count() == len(torch_ds)
    for i in (0, 1, 1023, 1024, len(torch_ds) - 1):
        assert_same(torch_ds[i], items[i], f"{kind}[{i}]")
    assert_same(torch_ds[5], ds.take(6)[5]["item"])
    batches = list(ds.iter_torch_batches(batch_size=100))
    assert [type(b["item"]) for b in batches] == [list] * 21
    assert_same(torch_ds[250], batches[2]["item"][50])
    if kind != "tensor":  # a UDF's tensor becomes a tensor column (ndarray rows), as in Ray
        assert_same([torch_ds[i] for i in range(6)], [r["item"] for r in ds.map(_identity_item).take(6)])


def _identity_item(row):
    return row


def _first_leaf_tensor(sample) -> torch.Tensor:
    return sample[0] if isinstance(sample, tuple) else sample["x"]


@pytest.mark.parametrize("kind", ["tuple", "dict"])
def test_items_of_one_layout_are_read_in_bulk_not_pickled_one_by_one(kind, monkeypatch, fresh_data_context):
    fresh_data_context.num_workers = 0  # the read runs in this process, where the spies see it
    import pickle as pickle_module

    from torchray_loader.blocks import object_block

    pickled, unpickled = [], []
    original_column, original_loads = object_block._object_column, pickle_module.loads
    monkeypatch.setattr(object_block, "_object_column", lambda values: (pickled.append(1), original_column(values))[1])
    monkeypatch.setattr(pickle_module, "loads", lambda *a, **k: (unpickled.append(1), original_loads(*a, **k))[1])
    torch_ds = LayoutDataset(kind)
    batches = list(rd.from_torch(torch_ds).iter_torch_batches(batch_size=64))
    items = [item for batch in batches for item in batch["item"]]
    assert not pickled and not unpickled
    assert_same([torch_ds[i] for i in range(len(torch_ds))], items)


def test_items_read_in_bulk_are_fresh_and_independent(fresh_data_context):
    fresh_data_context.num_workers = 0
    torch_ds = StoredRows()
    items = [row["item"] for row in rd.from_torch(torch_ds).iter_rows()]
    items[3][0].fill_(-1.0)  # changes that sample only: not its neighbours, not the dataset
    assert items[3][0].tolist() == [-1.0, -1.0]
    assert [items[i][0].tolist() for i in (2, 4)] == [[2.0, 2.0], [4.0, 4.0]]
    assert torch_ds[3][0].tolist() == [3.0, 3.0]


@pytest.mark.parametrize("nw", [0, 2])
def test_pil_samples_stay_objects(data_root, nw, fresh_data_context):
    fresh_data_context.num_workers = nw
    mnist = torchvision.datasets.MNIST(data_root, download=False)
    batch = next(iter(rd.from_torch(mnist).iter_torch_batches(batch_size=5)))
    assert len(batch["item"]) == 5
    for i, item in enumerate(batch["item"]):
        assert isinstance(item[0], Image.Image)
        assert_same(mnist[i], item, f"mnist[{i}]")
