"""The seed guide's file-based examples, run with ``import torchray_loader as rd``.

Each runs twice: against local copies of the guide's data and against the same files on a real S3
server (moto on 127.0.0.1, ``s3://anonymous@bucket/...`` as in the guide). The data is generated
here: 32x32 RGB images (PNG and JPEG) for ``image-datasets/simple``, numbered JPEGs of mixed sizes
for ``batoidea/JPEGImages``, a breast-cancer-like CSV (30 float features and ``target``) and a text
file. Printed schemas must be exactly the guide's ``testoutput`` blocks.
"""

# ruff: noqa: UP006 - the guide's own code annotates with typing.Dict

from __future__ import annotations

import pathlib
from collections.abc import Callable
from typing import Dict  # noqa: UP035 - the guide's own code

import numpy as np
import pytest
import torch
from conftest_s3 import s3, s3_server  # noqa: F401 - fixtures
from PIL import Image
from torch import nn

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

#: The 30 feature columns of the Wisconsin breast-cancer table the guide trains on.
BREAST_CANCER_FEATURES = [
    f"{kind} {name}"
    for kind in ("mean", "radius error", "worst")
    for name in (
        "radius",
        "texture",
        "perimeter",
        "area",
        "smoothness",
        "compactness",
        "concavity",
        "concave points",
        "symmetry",
        "fractal dimension",
    )
]
BREAST_CANCER_ROWS = 569


# ------------------------------------------------------------------ generated guide data


def make_guide_data(root: pathlib.Path) -> None:
    """Write the guide's data sets under ``root`` (the layout of ``ray-example-data``)."""
    rng = np.random.default_rng(0)
    simple = root / "image-datasets" / "simple"
    simple.mkdir(parents=True)
    for i in range(6):
        arr = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        if i % 2:
            Image.fromarray(arr).save(simple / f"image_{i}.jpg", quality=95)
        else:
            Image.fromarray(arr).save(simple / f"image_{i}.png")
    batoidea = root / "batoidea" / "JPEGImages"
    batoidea.mkdir(parents=True)
    for label in range(1, 6):
        h, w = 60 + 10 * label, 80 + 7 * label
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(batoidea / f"{label}.jpeg")
    features = rng.normal(size=(BREAST_CANCER_ROWS, len(BREAST_CANCER_FEATURES)))
    target = (features[:, 0] + 0.5 * features[:, 1] > 0).astype(np.int64)
    lines = [",".join(BREAST_CANCER_FEATURES + ["target"])]
    lines += [",".join(f"{v:.6f}" for v in row) + f",{t}" for row, t in zip(features, target, strict=True)]
    (root / "breast_cancer.csv").write_text("\n".join(lines) + "\n")
    (root / "simple.txt").write_text("Hello world\nThis is Ray Data\n\nTorch tensors everywhere\n")


@pytest.fixture(scope="module")
def guide_data(tmp_path_factory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("ray-example-data")
    make_guide_data(root)
    return root


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def where(request, guide_data, fresh_data_context) -> Callable[[str], str]:
    """``where(relative)``: the URL of a guide file, on local disk or on the S3 server (anonymous)."""
    if request.param == "local":
        return lambda rel: str(guide_data / rel)
    server = request.getfixturevalue("s3")
    prefix = server.prefix()
    server.upload_dir(guide_data, prefix)
    # S3 clients cost ~1 s to build in each worker process; the S3 runs read inline (the reading
    # code is the same), the local runs use the default worker pool.
    fresh_data_context.num_workers = 0
    return lambda rel: server.anon_url(f"{prefix}/{rel}")


# ------------------------------------------------------------------ the guide's code


def convert_to_torch(row: Dict[str, np.ndarray]) -> Dict[str, torch.Tensor]:
    return {"tensor": torch.as_tensor(row["image"])}


def check_numpy(row: Dict[str, np.ndarray]):
    assert isinstance(row["tensor"], np.ndarray)
    return row


def convert_batch_to_torch(batch: Dict[str, np.ndarray]) -> Dict[str, torch.Tensor]:
    return {"tensor": torch.as_tensor(batch["image"])}


def check_numpy_batch(batch: Dict[str, np.ndarray]):
    assert isinstance(batch["tensor"], np.ndarray)
    return batch


def extract_label(row: dict):
    filepath = row["path"]
    last_slash_idx = filepath.rfind("/")
    dot_idx = filepath.rfind(".")
    label = int(filepath[last_slash_idx + 1 : dot_idx])
    row["label"] = label
    return row


def train_func(train_data_shard) -> list[float]:
    """The guide's ``train_func`` body, on a dataset instead of a Ray Train shard."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(30, 1), nn.Sigmoid())
    loss_fn = torch.nn.BCELoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001)
    losses = []
    for _epoch_idx in range(2):
        rows = 0
        for batch in train_data_shard.iter_torch_batches(batch_size=128, dtypes=torch.float32):
            features = torch.stack(
                [batch[col_name] for col_name in batch.keys() if col_name != "target"], axis=1
            )
            predictions = model(features)
            train_loss = loss_fn(predictions, batch["target"].unsqueeze(1))
            train_loss.backward()
            optimizer.step()
            losses.append(train_loss.item())
            rows += len(features)
        assert rows == BREAST_CANCER_ROWS  # every row once per epoch
    return losses


# ------------------------------------------------------------------ tests


def test_iterating_torch_batches(where):
    ds = rd.read_images(where("image-datasets/simple"))
    batches = list(ds.iter_torch_batches(batch_size=2))
    # +MOCK in the guide: {'image': tensor([[[[...]]]], dtype=torch.uint8)} per batch.
    assert [tuple(b["image"].shape) for b in batches] == [(2, 32, 32, 3)] * 3
    assert all(list(b) == ["image"] and b["image"].dtype == torch.uint8 for b in batches)


def test_map_returns_torch(where, capsys):
    ds = rd.read_images(where("image-datasets/simple"))
    transformed_ds = ds.map(convert_to_torch)
    print(transformed_ds.schema())
    rows = transformed_ds.map(check_numpy).take_all()
    assert capsys.readouterr().out == GUIDE_TENSOR_SCHEMA
    assert len(rows) == 6


def test_map_batches_returns_torch(where, capsys):
    ds = rd.read_images(where("image-datasets/simple"))
    transformed_ds = ds.map_batches(convert_batch_to_torch, batch_size=2)
    print(transformed_ds.schema())
    out = transformed_ds.map_batches(check_numpy_batch, batch_size=2).take_all()
    assert capsys.readouterr().out == GUIDE_TENSOR_SCHEMA
    assert len(out) == 6


def test_torchvision_transform(where, capsys):
    from torchvision import transforms

    ds = rd.read_images(where("image-datasets/simple"))
    transform = transforms.Compose([transforms.ToTensor(), transforms.CenterCrop(10)])

    def transform_image(row: Dict[str, np.ndarray]) -> Dict[str, torch.Tensor]:
        row["transformed_image"] = transform(row["image"])
        return row

    transformed_ds = ds.map(transform_image)
    print(transformed_ds.schema())
    assert capsys.readouterr().out == GUIDE_TORCHVISION_SCHEMA


def test_migrating_a_custom_image_dataset(where):
    from torchvision import transforms

    ds = rd.read_images(where("batoidea/JPEGImages"), include_paths=True)
    transform = transforms.Compose(
        [
            transforms.ToTensor(),
            transforms.Resize((128, 128)),
            transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        ]
    )

    def transform_image(row: dict):
        row["transformed_image"] = transform(row["image"])
        return row

    ds = ds.map(extract_label).map(transform_image)
    rows = ds.take_all()
    assert [r["label"] for r in rows] == [1, 2, 3, 4, 5]
    assert all(r["transformed_image"].shape == (3, 128, 128) for r in rows)
    assert [r["image"].shape for r in rows] == [(60 + 10 * i, 80 + 7 * i, 3) for i in range(1, 6)]


def test_training_loop_on_csv(where):
    train_dataset = rd.read_csv(where("breast_cancer.csv"))
    assert train_dataset.schema().names == BREAST_CANCER_FEATURES + ["target"]
    losses = train_func(train_dataset)
    assert len(losses) == 10 and all(np.isfinite(losses))


def test_read_text(where, capsys):
    ds = rd.read_text(where("simple.txt"))

    def tokenize_text(batch: Dict[str, np.ndarray]) -> Dict[str, list]:
        # The guide uses torchtext's BERTTokenizer (downloads a vocabulary); a whitespace tokenizer
        # stands in for it.
        batch["tokenized_text"] = [line.lower().split() for line in batch["text"]]
        return batch

    transformed_ds = ds.map_batches(tokenize_text, batch_size=2)
    print(transformed_ds.schema())
    assert capsys.readouterr().out.split()[:6] == ["Column", "Type", "------", "----", "text", "string"]
    rows = transformed_ds.take_all()
    assert [r["text"] for r in rows] == ["Hello world", "This is Ray Data", "Torch tensors everywhere"]
    assert list(rows[1]["tokenized_text"]) == ["this", "is", "ray", "data"]


def test_saving_tensors_parquet_and_numpy(tmp_path):
    tensor = torch.Tensor(1)
    ds = rd.from_items([{"tensor": tensor}])
    ds.write_parquet(f"local://{tmp_path}/tensor")
    back = rd.read_parquet(f"local://{tmp_path}/tensor").take_all()
    np.testing.assert_array_equal(back[0]["tensor"], tensor.numpy())

    ds = rd.from_items([{"tensor": tensor}])
    ds.write_numpy(f"local://{tmp_path}/tensor_npy", column="tensor")
    back = rd.read_numpy(f"local://{tmp_path}/tensor_npy").take_all()
    np.testing.assert_array_equal(back[0]["data"], tensor.numpy())


@pytest.mark.s3
def test_saving_tensors_to_s3(s3, fresh_data_context):  # noqa: F811 - fixture
    fresh_data_context.num_workers = 0  # S3 from worker processes is covered in tests/io/test_s3.py
    tensor = torch.arange(4, dtype=torch.float32)
    ds = rd.from_items([{"tensor": tensor}])
    prefix = s3.prefix()
    ds.write_parquet(s3.url(f"{prefix}/tensor"))
    ds.write_numpy(s3.url(f"{prefix}/tensor_npy"), column="tensor")
    np.testing.assert_array_equal(
        rd.read_parquet(s3.url(f"{prefix}/tensor")).take_all()[0]["tensor"], tensor.numpy()
    )
    np.testing.assert_array_equal(
        rd.read_numpy(s3.anon_url(f"{prefix}/tensor_npy")).take_all()[0]["data"], tensor.numpy()
    )
