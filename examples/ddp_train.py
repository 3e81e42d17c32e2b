"""DistributedDataParallel on 2 CPU processes (gloo) with ``RayStyleLoader``.

Each rank builds the *same* loader over the whole training set; because ``torch.distributed`` is
initialised, ``RayStyleLoader`` gives every rank a disjoint shard and every rank the same number of
batches (DDP's collectives need that), with the shuffle reseeded each epoch. No DistributedSampler,
no ``set_epoch`` bookkeeping beyond passing the epoch.

    python examples/ddp_train.py              # spawns 2 processes
    torchrun --nproc-per-node 2 examples/ddp_train.py

Rank 0 prints per-epoch lines and the final test accuracy; the exit status is 1 if it misses
``--target`` or if the ranks ever disagree on the number of batches.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_digits import Net, accuracy, load_split  # noqa: E402 - the sibling example's model and data

from torchray_loader import RayStyleLoader  # noqa: E402


def train(rank: int, world: int, init: str, args: argparse.Namespace) -> int:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)  # 2 processes on 2 cores
        torch.manual_seed(args.seed)  # same initial weights on every rank (DDP also broadcasts them)
        train_set, test_set = load_split(args.seed)
        loader = RayStyleLoader(train_set, batch_size=args.batch_size, shuffle=True, seed=args.seed)
        model = DistributedDataParallel(Net())
        opt = torch.optim.Adam(model.parameters(), lr=5e-3)
        loss_fn = nn.CrossEntropyLoss()
        ok = True
        for epoch in range(args.epochs):
            loader.set_epoch(epoch)
            t0 = time.perf_counter()
            batches = seen = 0
            for images, labels in loader:
                opt.zero_grad()
                loss_fn(model(images), labels).backward()  # gradients are all-reduced across ranks here
                opt.step()
                batches += 1
                seen += len(labels)
            counts = [torch.zeros((), dtype=torch.int64) for _ in range(world)]
            dist.all_gather(counts, torch.tensor(batches))
            samples = torch.tensor(seen)
            dist.all_reduce(samples)
            if len({int(c) for c in counts}) != 1:
                ok = False
            if rank == 0:
                dt = time.perf_counter() - t0
                print(
                    f"epoch {epoch + 1}/{args.epochs}: batches per rank {[int(c) for c in counts]}, "
                    f"{int(samples)} samples ({int(samples) / dt:,.0f}/s)",
                    flush=True,
                )
        if rank == 0:
            acc = accuracy(model.module, RayStyleLoader(test_set, batch_size=256, shard_by_rank=False))
            print(f"final test accuracy {acc:.2%} (target {args.target:.0%}); equal batches on all ranks: {ok}")
            ok = ok and acc >= args.target
        flag = torch.tensor(int(ok))
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return 0 if int(flag) else 1
    finally:
        dist.destroy_process_group()


def _spawned(rank: int, world: int, init: str, args: argparse.Namespace) -> None:
    code = train(rank, world, init, args)
    if code:
        sys.exit(code)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world-size", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--target", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # started by torchrun
        return train(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), "env://", args)
    import torch.multiprocessing as mp

    # fork where available: the ranks start in milliseconds, sharing the imports of this process.
    start_method = "fork" if sys.platform.startswith("linux") else "spawn"
    with tempfile.TemporaryDirectory() as tmp:
        init = f"file://{os.path.join(tmp, 'rendezvous')}"
        try:
            mp.start_processes(
                _spawned, args=(args.world_size, init, args), nprocs=args.world_size, join=True,
                start_method=start_method,
            )
        except mp.ProcessExitedException as exc:
            print(f"a rank failed: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
