"""Adjacent task maps fuse into one stage; actor stages keep their own pool."""

from __future__ import annotations

import torchray_loader as rd
from torchray_loader.plan import MapStage, Read


def f(row):
    return row


class Model:
    def __call__(self, batch):
        return batch


def test_task_maps_fuse_into_one_stage():
    ds = rd.range(10).map(f).filter(lambda r: True).map_batches(lambda b: b)
    plan = ds._plan
    assert isinstance(plan, MapStage) and isinstance(plan.input, Read)
    assert [t.name.split("(")[0] for t in plan.transforms] == ["Map", "Filter", "MapBatches"]


def test_actor_stage_does_not_fuse():
    ds = rd.range(10).map(f).map_batches(Model, concurrency=2).map(f)
    plan = ds._plan
    assert isinstance(plan, MapStage) and len(plan.transforms) == 1
    actor = plan.input
    assert isinstance(actor, MapStage) and actor.transforms[0].name == "MapBatches(Model)"
    assert isinstance(actor.input, MapStage) and isinstance(actor.input.input, Read)
    assert [r["id"] for r in ds.take_all()] == list(range(10))
