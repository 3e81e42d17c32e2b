"""Progress bars for whole-dataset operations (materialize, writes, take_all, count...).

Invariant: a bar appears only when it helps a person watching: progress bars enabled in the
``DataContext`` (env ``TORCHRAY_PROGRESS_BARS=0`` turns them off), stderr is a terminal, and the
operation has run for more than a second (tqdm's ``delay``). Training-loop iteration
(``iter_batches``/``iter_torch_batches``/``RayStyleLoader``) never draws a bar of its own.
"""

from __future__ import annotations

import sys
from collections.abc import Generator, Iterator
from typing import Any

import pyarrow as pa

from ..context import DataContext

__all__ = ["with_progress"]


def _enabled(ctx: DataContext) -> bool:
    try:
        return bool(ctx.enable_progress_bars) and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def with_progress(
    blocks: Iterator[pa.Table], desc: str, ctx: DataContext | None = None, total: int | None = None
) -> Generator[pa.Table, None, None]:
    """Pass ``blocks`` through, counting rows on a tqdm bar (rows/s) when bars are enabled.

    Example:
        >>> import pyarrow as pa
        >>> [b.num_rows for b in with_progress(iter([pa.table({"a": [1]})]), "Demo")]
        [1]
    """
    ctx = ctx or DataContext.get_current()
    if not _enabled(ctx):
        yield from blocks
        return
    from tqdm.auto import tqdm

    bar: Any = tqdm(desc=desc, total=total, unit=" rows", unit_scale=True, delay=1.0, leave=False, file=sys.stderr)
    try:
        for block in blocks:
            bar.update(block.num_rows)
            yield block
    finally:
        bar.close()
        close = getattr(blocks, "close", None)
        if close is not None:
            close()
