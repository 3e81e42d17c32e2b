"""Running plans: worker pools, the streaming executor, shared-memory block transfer."""

from .executor import execute
from .pool import InlinePool, TaskPool, make_pool
from .stats import ExecutionStats

__all__ = ["ExecutionStats", "InlinePool", "TaskPool", "execute", "make_pool"]
