"""The Ray Data guide's Ray Train example, fed by a torchray_loader pipeline converted with ``to_ray()``.

The dataset is built with this package (``rd.read_csv``), exactly as it would be for local
training; ``to_ray()`` turns its logical plan into a ``ray.data.Dataset``; Ray Train splits it
across 2 training workers, and each worker iterates its shard with ``iter_torch_batches``.
Everything runs on a local Ray runtime; Ray's results go to a temporary directory.

Run:  python examples/ray_train.py        (needs the ``ray`` extra: pip install 'torchray_loader[ray]')
The same training function without Ray, under torchrun: examples/torchrun_train.py
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import ray
import torch
from ray import train
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from torch import nn

import torchray_loader as rd

NUM_FEATURES = 30


def make_breast_cancer_csv(path: str, num_rows: int = 569, seed: int = 0) -> str:
    """A CSV shaped like the guide's ``breast_cancer.csv``: 30 float features and a 0/1 ``target``."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(num_rows, NUM_FEATURES))
    weights = rng.normal(size=NUM_FEATURES)
    target = (features @ weights + rng.normal(scale=0.5, size=num_rows) > 0).astype(np.int64)
    header = ",".join([f"feature_{i}" for i in range(NUM_FEATURES)] + ["target"])
    rows = np.column_stack([features, target])
    np.savetxt(path, rows, delimiter=",", header=header, comments="", fmt=["%.6f"] * NUM_FEATURES + ["%d"])
    return path


def train_func(config):
    model = nn.Sequential(nn.Linear(30, 1), nn.Sigmoid())
    loss_fn = torch.nn.BCELoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001)

    # Datasets can be accessed in your train_func via ``get_dataset_shard``.
    train_data_shard = train.get_dataset_shard("train")

    rows = 0
    for epoch_idx in range(2):  # noqa: B007 - the guide's loop
        for batch in train_data_shard.iter_torch_batches(batch_size=128, dtypes=torch.float32):
            features = torch.stack([batch[col_name] for col_name in batch.keys() if col_name != "target"], axis=1)
            predictions = model(features)
            train_loss = loss_fn(predictions, batch["target"].unsqueeze(1))
            optimizer.zero_grad()
            train_loss.backward()
            optimizer.step()
            rows += len(features)

    rank = train.get_context().get_world_rank()
    print(f"rank {rank}: {rows} rows in 2 epochs, last loss {train_loss.item():.4f}")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="torchray_ray_train_") as tmp:
        csv_path = make_breast_cancer_csv(os.path.join(tmp, "breast_cancer.csv"))
        # Ray Train's 2 workers take one CPU each; Ray Data's read tasks need CPUs beside them.
        ray.init(num_cpus=max(4, os.cpu_count() or 1), include_dashboard=False)
        try:
            train_dataset = rd.read_csv(csv_path).to_ray()

            trainer = TorchTrainer(
                train_func,
                datasets={"train": train_dataset},
                scaling_config=ScalingConfig(num_workers=2),
                run_config=RunConfig(storage_path=os.path.join(tmp, "ray_results"), name="breast_cancer"),
            )
            result = trainer.fit()
            assert result.error is None, result.error
        finally:
            ray.shutdown()
    print("ray_train example: done")


if __name__ == "__main__":
    main()
