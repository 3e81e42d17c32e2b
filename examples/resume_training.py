"""Resume training mid-epoch in a new process, with exactly the batches that were still due.

``RayStyleLoader.state_dict()`` is small (epoch, batches delivered, seeds); save it in the training
checkpoint next to the model and optimizer. A new process that builds the same loader (any
``num_workers``) and calls ``load_state_dict`` continues the epoch where it stopped: no batch is
repeated, none is skipped, and the following epochs shuffle exactly as an uninterrupted run would.

This script:

1. runs two epochs without interruption and records which rows each batch held (the reference);
2. trains for 5 batches, writes a checkpoint, and "crashes";
3. starts ``python resume_training.py --resume <checkpoint>`` as a fresh process, which restores the
   model, the optimizer and the loader, finishes epoch 0 and runs epoch 1;
4. checks the batches of 2 + 3 equal the reference, batch for batch.

Run: ``python examples/resume_training.py``
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch
from torch import nn

import torchray_loader as rd
from torchray_loader import RayStyleLoader

BATCHES_BEFORE_CRASH = 5


def make_loader(num_workers: int) -> RayStyleLoader:
    # The pipeline and the loader arguments must be the same when resuming; num_workers may differ.
    ds = rd.range(400).map_batches(lambda b: {"id": b["id"], "x": b["id"].reshape(-1, 1) / 400.0})
    return RayStyleLoader(ds, batch_size=32, shuffle=True, seed=0, num_workers=num_workers)


def make_model() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Linear(1, 1)
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: dict) -> None:
    x = batch["x"].float()
    loss = (model(x) - 2 * x).pow(2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def resume(checkpoint_path: str, out_path: str) -> None:
    """Runs in the fresh process: restore everything, finish epoch 0, run epoch 1."""
    checkpoint = torch.load(checkpoint_path, weights_only=False)
    model, optimizer = make_model()
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    loader = make_loader(num_workers=1)
    loader.load_state_dict(checkpoint["loader"])

    seen = []
    for _epoch in range(2):  # the rest of epoch 0, then epoch 1
        ids = []
        for batch in loader:
            train_step(model, optimizer, batch)
            ids.append(batch["id"].tolist())
        seen.append(ids)
    with open(out_path, "w") as f:
        json.dump(seen, f)


def main() -> None:
    # 1. The reference: two uninterrupted epochs.
    loader = make_loader(num_workers=2)
    reference = [[b["id"].tolist() for b in loader], [b["id"].tolist() for b in loader]]
    print(f"reference: {len(reference[0])} batches per epoch; epoch 0 starts with rows {reference[0][0][:6]}...")

    with tempfile.TemporaryDirectory() as tmp:
        # 2. Train a few batches, checkpoint, stop.
        model, optimizer = make_model()
        loader = make_loader(num_workers=2)
        before = []
        for batch in loader:
            train_step(model, optimizer, batch)
            before.append(batch["id"].tolist())
            if len(before) == BATCHES_BEFORE_CRASH:
                checkpoint = {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "loader": loader.state_dict(),
                }
                torch.save(checkpoint, os.path.join(tmp, "checkpoint.pt"))
                break  # the "crash"
        print(f"stopped after {len(before)} batches; loader state: {checkpoint['loader']}")

        # 3. Resume in a brand-new process.
        out = os.path.join(tmp, "resumed.json")
        subprocess.run(
            [sys.executable, __file__, "--resume", os.path.join(tmp, "checkpoint.pt"), "--out", out], check=True
        )
        with open(out) as f:
            after_epoch0, epoch1 = json.load(f)

    # 4. Batch for batch, the interrupted run delivered what the uninterrupted one did.
    assert before + after_epoch0 == reference[0], "epoch 0 differs after resume"
    assert epoch1 == reference[1], "epoch 1 differs after resume"
    rows = sorted(i for batch in before + after_epoch0 for i in batch)
    assert rows == list(range(400)), "epoch 0 is not exactly once"
    print(
        f"resumed in a new process: {len(after_epoch0)} remaining batches of epoch 0 and all {len(epoch1)} "
        "of epoch 1 match the uninterrupted run"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resume", help="checkpoint to resume from (used by the script itself)")
    parser.add_argument("--out", help="where the resumed run writes the row ids it saw")
    args = parser.parse_args()
    if args.resume:
        resume(args.resume, args.out)
    else:
        main()
