"""Soak: many shuffled epochs with mid-epoch resumes and random worker kills.

Marked ``slow``. Runs for ``TORCHRAY_SOAK_SECONDS`` seconds (default 20: the bounded CI mode); run it
by hand for longer, e.g. ``TORCHRAY_SOAK_SECONDS=1800 python -m pytest -m slow tests/reliability``.
``TORCHRAY_SOAK_SEED`` fixes the random faults (the seed in use is printed).

Each epoch alternates between a torchray Dataset and a map-style torch dataset behind
``RayStyleLoader(shuffle=True, num_workers=2)``. During an epoch the test SIGKILLs a random worker
now and then (what the OOM killer does), and sometimes stops mid-epoch, saves ``state_dict()``, and
finishes the epoch in a fresh loader after ``load_state_dict()``. Invariants checked:

* every epoch delivers every row exactly once (promise 1), across kills and resumes (promise 3);
* after every epoch no worker process is left (promise 6);
* memory is flat across epochs: after a warm-up, the trainer's RSS grows by less than
  ``RSS_SLACK`` and its open file descriptors return to the same count (promise 4; a leaked
  mapping, pipe or process handle per epoch would show here).
"""

from __future__ import annotations

import collections
import os
import random
import signal
import time

import psutil
import pytest
import torch
from reliability_helpers import PerSampleTensors, live_children, wait_gone

import torchray_loader as rd

SOAK_SECONDS = float(os.environ.get("TORCHRAY_SOAK_SECONDS", "20"))
SEED = int(os.environ.get("TORCHRAY_SOAK_SEED", str(random.SystemRandom().randrange(1 << 30))))
N = 4000
BATCH = 50
WARMUP_EPOCHS = 2
RSS_SLACK = 64 << 20

pytestmark = [pytest.mark.slow, pytest.mark.timeout(int(SOAK_SECONDS) + 240)]


def heavy(batch):
    # A bit of work per block and results large enough to travel through shared memory.
    batch["x"] = torch.ones(len(batch["id"]), 400).numpy() * batch["id"][:, None]
    return batch


def make_loader(kind: str) -> rd.RayStyleLoader:
    if kind == "arrow":
        data = rd.range(N, override_num_blocks=40).map_batches(heavy)
    else:
        data = PerSampleTensors(torch.arange(N), torch.ones(N, 400))
    return rd.RayStyleLoader(data, batch_size=BATCH, shuffle=True, seed=7, num_workers=2)


def batch_ids(batch) -> list[int]:
    col = batch["id"] if isinstance(batch, dict) else batch[0]
    return col.tolist()


def run_epoch(kind: str, epoch: int, rng: random.Random) -> tuple[list[int], int, bool]:
    """One epoch with faults: ``(ids delivered, workers killed, resumed?)``."""
    loader = make_loader(kind)
    loader.set_epoch(epoch)
    resume_at = rng.randrange(5, N // BATCH - 5) if rng.random() < 0.5 else None
    ids: list[int] = []
    kills = 0
    it = iter(loader)
    for i, batch in enumerate(it):
        ids.extend(batch_ids(batch))
        if rng.random() < 0.04:
            victims = [p.pid for p in live_children()]
            if victims:
                os.kill(rng.choice(victims), signal.SIGKILL)
                kills += 1
        if resume_at is not None and i == resume_at:
            state = loader.state_dict()
            it.close()
            fresh = make_loader(kind)
            fresh.load_state_dict(state)
            for batch in fresh:
                ids.extend(batch_ids(batch))
            break
    return ids, kills, resume_at is not None


def test_soak_epochs_with_shuffle_resume_and_worker_kills():
    print(f"soak: {SOAK_SECONDS:.0f}s, TORCHRAY_SOAK_SEED={SEED}")
    rng = random.Random(SEED)
    me = psutil.Process()
    samples: list[tuple[int, int]] = []  # (rss, fds) after each epoch
    epochs = kills = resumes = 0
    deadline = time.monotonic() + SOAK_SECONDS
    while time.monotonic() < deadline or epochs < WARMUP_EPOCHS + 2:
        kind = "arrow" if epochs % 2 == 0 else "map"
        ids, k, resumed = run_epoch(kind, epochs, rng)
        dupes = [x for x, c in collections.Counter(ids).items() if c > 1]
        assert not dupes, f"epoch {epochs} ({kind}) delivered rows twice: {dupes[:10]} (seed {SEED})"
        assert sorted(ids) == list(range(N)), f"epoch {epochs} ({kind}) lost rows (seed {SEED})"
        assert not wait_gone([p.pid for p in live_children()], 10), f"workers left after epoch {epochs}"
        samples.append((me.memory_info().rss, me.num_fds()))
        epochs, kills, resumes = epochs + 1, kills + k, resumes + resumed
    print(f"soak: {epochs} epochs, {kills} workers killed, {resumes} resumes; (rss MB, fds): "
          f"{[(r >> 20, f) for r, f in samples]}")
    base_rss, base_fds = samples[WARMUP_EPOCHS - 1]
    for epoch, (rss, fds) in enumerate(samples[WARMUP_EPOCHS:], start=WARMUP_EPOCHS):
        assert fds <= base_fds, f"open file descriptors grew: {base_fds} -> {fds} at epoch {epoch}"
        assert rss - base_rss < RSS_SLACK, f"RSS grew {(rss - base_rss) >> 20} MB by epoch {epoch}"
