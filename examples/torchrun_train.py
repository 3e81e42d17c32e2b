"""Data-parallel training without Ray: the Ray Train example's training function under ``torchrun``.

Each of the ``torchrun`` processes builds the same torchray_loader pipeline, takes its own shard
with ``streaming_split(world_size, equal=True)[rank]`` (what Ray Train's ``get_dataset_shard``
gives a worker) and runs the same loop over ``iter_torch_batches`` as ``examples/ray_train.py``.
The model is wrapped in ``DistributedDataParallel`` (gloo, CPU), so gradients are averaged across
processes. ``equal=True`` gives every rank the same number of rows, hence the same number of
batches: no rank waits forever in an all-reduce.

Run:  torchrun --standalone --nproc_per_node=2 examples/torchrun_train.py
"""

from __future__ import annotations

import gc
import os
import tempfile

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

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
    model = DistributedDataParallel(model)  # Ray Train's prepare_model does this for you
    loss_fn = torch.nn.BCELoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001)

    # Where Ray Train's get_dataset_shard("train") is, this process's shard of the dataset.
    train_data_shard = config["train_shard"]

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
    return {"rows": rows, "loss": train_loss.item(), "model": model.module}


def main() -> None:
    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    # Share the CPUs between the training processes' data workers.
    rd.DataContext.get_current().num_workers = max(1, (os.cpu_count() or 1) // world_size)
    try:
        with tempfile.TemporaryDirectory(prefix=f"torchray_torchrun_{rank}_") as tmp:
            # Every rank builds the same data (same seed) and the same pipeline; the split picks its part.
            csv_path = make_breast_cancer_csv(os.path.join(tmp, "breast_cancer.csv"))
            train_dataset = rd.read_csv(csv_path)
            shard = train_dataset.streaming_split(world_size, equal=True)[rank]

            out = train_func({"train_shard": shard})

        # Checks: every rank trained on count() // world_size rows per epoch, and DDP kept the replicas identical.
        total = torch.tensor([out["rows"]])
        dist.all_reduce(total)
        weights = torch.cat([p.detach().reshape(-1) for p in out["model"].parameters()])
        gathered = [torch.zeros_like(weights) for _ in range(world_size)]
        dist.all_gather(gathered, weights)
        assert all(torch.equal(gathered[0], g) for g in gathered), "replicas diverged"
        print(f"rank {rank}/{world_size}: {out['rows']} rows in 2 epochs, last loss {out['loss']:.4f}", flush=True)
        dist.barrier()
        if rank == 0:
            expected = 2 * (569 // world_size) * world_size
            assert int(total) == expected, (int(total), expected)
            print(f"torchrun example: done ({int(total)} rows across {world_size} ranks)", flush=True)
    finally:
        # The DDP wrapper holds the process group and may sit in a reference cycle; collect it so that
        # destroying the group joins gloo's threads now. A gloo thread still alive at interpreter exit
        # can drop a tensor while Python finalizes, and the process aborts ("terminate called without
        # an active exception", seen 1 run in 30 under load).
        gc.collect()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
