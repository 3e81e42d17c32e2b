"""File sources and sinks over fsspec. One module per format; ``ReadTask`` is the unit of reading."""

from .read_task import ReadTask

__all__ = ["ReadTask"]
