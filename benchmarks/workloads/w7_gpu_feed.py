"""W7: GPU feed (only where CUDA exists): W1's tabular data and W3's uint8 images delivered to
``device="cuda"`` with pinned host memory.

Two warm epochs after the cold one:

* **feed** (``rows_per_s``): the loop takes each batch on the device and does nothing else; one
  synchronize at the end, so every copy has landed. This is the rate the loader can feed a GPU.
* **step** (``wait_fraction``): each batch is followed by a simulated training step,
  ``torch.cuda._sleep`` spinning the GPU for a fixed time (1 ms per tabular batch of 256, 20 ms per
  image batch of 64), then a synchronize (as a loop that logs its loss every step), over at most
  ``STEP_BATCHES`` batches. ``wait_fraction`` is the share of that time spent waiting for the next
  batch on the device (0 = the GPU never starves); ``step_rows_per_s`` is that epoch's rate. The
  epoch's start (workers starting, the first blocks) counts as waiting: in the image variant's
  47-batch epoch it is most of the wait.

* dataloader: ``DataLoader(..., pin_memory=True)`` + ``.to("cuda", non_blocking=True)``
* loader:     ``rd.RayStyleLoader(..., pin_memory=True, device="cuda")``
* torchray:   ``iter_torch_batches(..., device="cuda", pin_memory=True)``
* ray:        the same with ``ray.data``

Variant ``images_gpu_decode``: torchray's ``read_images(..., decode_on_device=True)``: the workers only
read the files and each batch is decoded by nvjpeg on the GPU (and resized there), against the same
DataLoader.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..data import jpeg_dir, tabular
from ..harness import MB, MemorySampler, Result, Unavailable, batch_rows, current_rss_mb, execute
from .common import SHUFFLE_BUFFER, new_result, prepare, ray_data, require, sizes
from .common import data_dir as resolve_data_dir

ID = "W7"
TITLE = "GPU feed: W1 and W3 (uint8) to device='cuda' with pin_memory"
VARIANTS = {
    "tabular": ("torchray", "loader", "dataloader", "ray"),
    "images": ("torchray", "loader", "dataloader", "ray"),
    "images_gpu_decode": ("torchray", "dataloader"),
}
STEP_MS = {"tabular": 1.0, "images": 20.0, "images_gpu_decode": 20.0}
#: Batches timed with the simulated step (the share of time waiting needs no whole epoch).
STEP_BATCHES = 600


def _calibrate_sleep_cycles(torch) -> float:
    """GPU clock cycles per millisecond for ``torch.cuda._sleep``."""
    torch.cuda._sleep(1000)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    cycles = 10_000_000
    start.record()
    torch.cuda._sleep(cycles)
    end.record()
    torch.cuda.synchronize()
    return cycles / max(start.elapsed_time(end), 1e-3)


def _to_device(batch, device, non_blocking=True):
    import torch

    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return [_to_device(v, device) for v in batch]
    return batch


def run(impl: str, num_workers: int, quick: bool, *, variant: str | None = None, scale: float = 1.0,
        data_dir: str | None = None) -> Result:
    variant = variant or "tabular"
    result = new_result(ID, variant, impl, num_workers)

    def body(res: Result) -> Result:
        import torch

        if not torch.cuda.is_available():
            raise Unavailable("CUDA not available on this machine")
        sz = sizes(quick, scale)
        payload = tabular(sz.tabular_rows) if variant == "tabular" else jpeg_dir(resolve_data_dir(data_dir), sz.images)
        rd = prepare(impl, res, num_workers)
        import torchvision  # noqa: F401

        cycles = _calibrate_sleep_cycles(torch) * STEP_MS[variant]
        res.extra.update(step_ms=STEP_MS[variant], device=torch.cuda.get_device_name())
        return gpu_measure(res, lambda: setup(impl, variant, num_workers, payload, res, rd), int(cycles))

    return execute(result, body)


def gpu_measure(res: Result, setup, sleep_cycles: int) -> Result:
    import torch

    dev = torch.device("cuda")

    def arrivals(epoch, needs_copy):
        batches = iter(epoch())
        try:
            for batch in batches:
                yield _to_device(batch, dev) if needs_copy else batch
        finally:
            close = getattr(batches, "close", None)  # a DataLoader iterator has none: its workers stop at GC
            if close is not None:
                close()

    res.base_rss_mb = round(current_rss_mb(), 1)
    with MemorySampler() as mem:
        t0 = time.perf_counter()
        epoch, needs_copy = setup()
        it = arrivals(epoch, needs_copy)
        first = next(it)
        torch.cuda.synchronize()
        res.ttfb_s = time.perf_counter() - t0
        for _ in it:  # finish the cold epoch
            pass
        del it, first
        # feed: batches arriving on the device, nothing else
        rows = 0
        start = time.perf_counter()
        for batch in arrivals(epoch, needs_copy):
            rows += batch_rows(batch)
        torch.cuda.synchronize()
        total = time.perf_counter() - start
        del batch
        # step: a simulated training step after each batch; the time spent waiting for batches
        step_rows = wait = 0.0
        steps = 0
        it = arrivals(epoch, needs_copy)
        step_start = time.perf_counter()
        while steps < STEP_BATCHES:
            t = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                break
            wait += time.perf_counter() - t
            step_rows += batch_rows(batch)
            steps += 1
            torch.cuda._sleep(sleep_cycles)
            torch.cuda.synchronize()
        step_total = time.perf_counter() - step_start
        it.close()
    res.rows = int(rows)
    res.epoch_s = total
    res.rows_per_s = rows / total
    res.extra["wait_fraction"] = round(wait / step_total, 4)
    res.extra["step_rows_per_s"] = round(step_rows / step_total, 1)
    res.extra["step_batches"] = steps
    res.peak_rss_mb = round(mem.peak_rss / MB, 1)
    res.peak_pss_mb = round(mem.peak_pss / MB, 1) if mem.peak_pss else None
    return res


def setup(impl: str, variant: str, num_workers: int, payload, res: Result, rd):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    if variant == "tabular":
        bs = 256
        torch_ds = lambda: TensorDataset(torch.from_numpy(payload))  # noqa: E731
        kw = {"shuffle": True}
    else:
        from torchvision.datasets import ImageFolder

        from .w3_images import SIZE, uint8_transform

        bs = 64
        torch_ds = lambda: ImageFolder(str(payload), transform=uint8_transform())  # noqa: E731
        kw = {}
    if impl == "dataloader":
        dl = DataLoader(torch_ds(), batch_size=bs, num_workers=num_workers, pin_memory=True, **kw)
        return (lambda: dl), True
    if impl == "loader":
        loader = require(rd, "RayStyleLoader")(
            torch_ds(), batch_size=bs, num_workers=num_workers, pin_memory=True, device="cuda", **kw
        )
        return (lambda: loader), False
    if variant == "tabular":
        src = rd if impl == "torchray" else ray_data(res, num_workers)
        ds = src.from_numpy(payload)
        it_kw = {"local_shuffle_buffer_size": SHUFFLE_BUFFER}
    else:
        api = require(rd, "read_images") if impl == "torchray" else ray_data(res, num_workers).read_images
        on_gpu = {"decode_on_device": True} if variant == "images_gpu_decode" else {}
        ds = api(str(Path(payload)), size=(SIZE, SIZE), mode="RGB", **on_gpu)
        it_kw = {}
    return (lambda: ds.iter_torch_batches(batch_size=bs, device="cuda", pin_memory=True, **it_kw)), False
