"""A RayStyleLoader's worker pools share the memory budget instead of each taking all of it."""

from __future__ import annotations

import torch
from loader_cases import TensorDS

import torchray_loader as rd
from torchray_loader import RayStyleLoader
from torchray_loader.pytorch import loader as loader_mod


def test_worker_pools_split_the_budget(monkeypatch):
    budgets = []
    real = loader_mod.make_pool

    def spy(n, ctx, **kw):
        budgets.append((n, ctx.memory_budget_bytes))
        return real(n, ctx, **kw)

    monkeypatch.setattr(loader_mod, "make_pool", spy)
    rd.DataContext.get_current().memory_budget_bytes = 64 << 20
    batches = list(RayStyleLoader(TensorDS(8), batch_size=2, num_workers=2, worker_init_fn=lambda i: None))
    assert len(batches) == 4 and torch.equal(torch.cat(batches)[:, 0], torch.arange(8) * 10.0)
    assert budgets == [(1, 32 << 20), (1, 32 << 20)]
