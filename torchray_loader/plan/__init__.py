"""Logical plans: operators as frozen dataclasses, transforms as generator chains, fusion."""

from .compute import ActorPoolStrategy, ComputeStrategy, TaskPoolStrategy, resolve_compute
from .operators import AllToAll, InputBlocks, Limit, LogicalOp, MapStage, Read, Union, append_transform

__all__ = [
    "ActorPoolStrategy",
    "AllToAll",
    "ComputeStrategy",
    "InputBlocks",
    "Limit",
    "LogicalOp",
    "MapStage",
    "Read",
    "TaskPoolStrategy",
    "Union",
    "append_transform",
    "resolve_compute",
]
