"""Bridges to other engines. ``ray`` holds the Ray Data bridge (``to_ray`` / ``from_ray``).

Nothing here imports an optional dependency at import time: ``import ray`` happens inside the
functions of :mod:`torchray_loader.integrations.ray`, on first use.
"""

__all__: list[str] = []
