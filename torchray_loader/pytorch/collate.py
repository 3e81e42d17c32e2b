"""``default_collate`` for worker processes: large batches are stacked straight into their transfer file.

DataLoader's workers stack a batch in torch shared memory and pass the file descriptor. Here a
task's result travels in a shared-memory file written by ``shm.dumps_to_shm``; stacking into
private memory and then copying into that file costs a second pass over every byte (and a page fault
per 4 KiB, twice). So the stacked tensor is allocated inside the file itself
(:func:`~torchray_loader.blocks.buffers.transfer_buffer`) and crosses without a copy.

Invariant: the result equals ``default_collate(batch)`` in value, dtype, shape, nesting and type;
only where the memory of large tensors lives differs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data._utils.collate import collate, collate_tensor_fn, default_collate_fn_map

from ..blocks import buffers

__all__ = ["collate_into_transfer_file"]

def _stack_in_place(batch: Any, *, collate_fn_map: Any = None) -> torch.Tensor:
    elem = batch[0]
    if (
        type(elem) is torch.Tensor
        and elem.device.type == "cpu"
        and elem.layout == torch.strided
        and not (elem.is_nested or elem.is_quantized or elem.requires_grad)
    ):
        shape = elem.shape
        nbytes = len(batch) * elem.numel() * elem.element_size()
        if nbytes >= buffers.MIN_TRANSFER_BYTES and all(
            type(t) is torch.Tensor
            and t.shape == shape
            and t.dtype == elem.dtype
            and t.device == elem.device
            and not t.requires_grad
            for t in batch
        ):
            buf = buffers.transfer_buffer(nbytes)
            if buf is not None:
                out = torch.frombuffer(buf, dtype=elem.dtype).view(len(batch), *shape)
                return torch.stack(batch, 0, out=out)
    return collate_tensor_fn(batch, collate_fn_map=collate_fn_map)


_IN_PLACE_MAP = {**default_collate_fn_map, torch.Tensor: _stack_in_place}


def collate_into_transfer_file(batch: list[Any]) -> Any:
    """``default_collate(batch)``, with large tensors stacked inside the current task's transfer file.

    Outside a worker task (no transfer file) this is exactly ``default_collate``, in private memory.
    Must run with no torch worker info set, else ``collate_tensor_fn`` would fall back to torch
    shared memory.

    Example:
        >>> import torch
        >>> collate_into_transfer_file([torch.zeros(2), torch.ones(2)])
        tensor([[0., 0.],
                [1., 1.]])
    """
    return collate(batch, collate_fn_map=_IN_PLACE_MAP)
