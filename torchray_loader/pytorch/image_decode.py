"""Decoding ``read_images(..., decode_on_device=True)`` batches on the device that consumes them.

The workers only read the files: a batch arrives as ``{"image": [JPEG bytes, ...], "path": [...]}``
(plus partition columns). :class:`DeviceImageDecoder` turns it into the batch the worker-side
decode would have made: the ``uint8`` images, HWC (``(N, H, W, 3)`` for RGB, ``(N, H, W)`` for L),
resized to ``size`` with antialiased bilinear; ``path`` only where the read asked for it.

On CUDA the batch is one call to nvjpeg (``torchvision.io.decode_jpeg`` with a list: batched,
on the GPU's hardware decoder where it has one), and the resize runs on the GPU. It is called by
``DeviceFeeder`` in the producing thread with the side stream current, so the training stream only
waits on the batch's event. On ``"cpu"`` it is libjpeg-turbo image by image (for tests, and for
machines without a GPU).

Invariant: one output row per input row, in order; an image that does not decode raises a
:class:`~torchray_loader.errors.ReadError` naming its file (the read's policy is ``"raise"``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..errors import ReadError

__all__ = ["DeviceImageDecoder"]


def _decoders() -> tuple[Any, Any, Any]:
    """``(decode_one(tensor, mode_value), decode_many_cuda(tensors, mode_value, device), ImageReadMode)``.

    torchvision 0.29 warns on each call of its public codecs (deprecated for TorchCodec); the kernels
    they wrap are called directly where registered, else the public function."""
    try:
        import torchvision.io as tvio
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("decode_on_device needs torchvision: pip install 'torchray_loader[images]'") from exc
    ops = getattr(torch.ops, "image", None)
    one = getattr(ops, "decode_jpeg", None)
    many = getattr(ops, "decode_jpegs_cuda", None)

    def decode_one(t: torch.Tensor, mode: int) -> torch.Tensor:
        if one is not None:
            return one(t, mode, False)
        return tvio.decode_jpeg(t, mode=tvio.ImageReadMode(mode))  # pragma: no cover - older torchvision

    def decode_many_cuda(ts: list[torch.Tensor], mode: int, device: torch.device) -> list[torch.Tensor]:
        if many is not None:
            return list(many(ts, mode, device))
        return list(tvio.decode_jpeg(ts, mode=tvio.ImageReadMode(mode), device=device))  # pragma: no cover

    return decode_one, decode_many_cuda, tvio.ImageReadMode


class DeviceImageDecoder:
    """``batch -> batch``: the encoded ``image`` column decoded on ``device`` (see the module doc).

    ``spec`` is the read's ``io.images.DeviceDecode``; ``dtype`` casts the decoded images (the
    ``dtypes`` of ``iter_torch_batches``).

    Example:
        >>> import io, numpy as np
        >>> from PIL import Image
        >>> from torchray_loader.io.images import DeviceDecode
        >>> buf = io.BytesIO(); Image.fromarray(np.full((8, 6, 3), 90, np.uint8)).save(buf, "JPEG")
        >>> decode = DeviceImageDecoder(torch.device("cpu"), DeviceDecode((4, 3), "RGB", False))
        >>> out = decode({"image": [buf.getvalue()] * 2, "path": ["a.jpg", "b.jpg"]})
        >>> out["image"].shape, out["image"].dtype, list(out)
        (torch.Size([2, 4, 3, 3]), torch.uint8, ['image'])
    """

    def __init__(self, device: torch.device, spec: Any, dtype: torch.dtype | None = None) -> None:
        self.device = device
        self.size = spec.size
        self.gray = spec.mode == "L"
        self.include_paths = spec.include_paths
        self.dtype = dtype
        self._decode_one, self._decode_many_cuda, modes = _decoders()
        self._mode = (modes.GRAY if self.gray else modes.RGB).value
        self._resize: Callable[..., torch.Tensor] | None = None

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        out = dict(batch)
        paths = list(batch["path"])
        out["image"] = self._finish(self._decode(list(batch["image"]), paths))
        if not self.include_paths:
            del out["path"]
        return out

    def _decode(self, data: list[bytes], paths: list[str]) -> list[torch.Tensor]:
        """CHW ``uint8`` images on the device, one per file."""
        blob = bytearray().join(data)  # one host buffer; each image is a contiguous view of it
        host = torch.frombuffer(blob, dtype=torch.uint8) if blob else torch.empty(0, dtype=torch.uint8)
        encoded, start = [], 0
        for d in data:
            encoded.append(host[start : start + len(d)])
            start += len(d)
        try:
            if self.device.type == "cuda":
                return self._decode_many_cuda(encoded, self._mode, self.device)
            return [self._decode_one(t, self._mode) for t in encoded]
        except RuntimeError as exc:
            culprit = self._culprit(encoded, paths)
            if culprit is None:  # no single image fails (out of device memory...): the error as it is
                raise
            raise culprit from exc

    def _culprit(self, encoded: list[torch.Tensor], paths: list[str]) -> ReadError | None:
        """The :class:`ReadError` of the first image that does not decode on its own, if any."""
        for t, path in zip(encoded, paths, strict=True):
            try:
                if self.device.type == "cuda":
                    self._decode_many_cuda([t], self._mode, self.device)
                else:
                    self._decode_one(t, self._mode)
            except RuntimeError as exc:
                return ReadError(path, f"cannot decode as JPEG on {self.device}: {exc}")
        return None

    def _resized(self, nhwc: torch.Tensor) -> torch.Tensor:
        """``nhwc`` resized to ``size`` (antialiased bilinear, as the workers' resize), NHWC out."""
        if self.size is None or tuple(nhwc.shape[1:3]) == self.size:
            return nhwc
        if self._resize is None:
            from torchvision.transforms.v2 import functional as F

            self._resize = F.resize
        # Resized as a channels-last NCHW view (torch's fast uint8 kernel on the CPU; off the CPU
        # torchvision resizes uint8 in float and rounds back), so the NHWC result needs no repacking.
        return self._resize(nhwc.permute(0, 3, 1, 2), list(self.size), antialias=True).permute(0, 2, 3, 1)

    def _layout(self, nhwc: torch.Tensor) -> torch.Tensor:
        """The workers' layout: contiguous NHWC for RGB, NHW for L; then ``dtype``."""
        out = nhwc[..., 0] if self.gray else nhwc
        out = out.contiguous()
        return out.to(self.dtype) if self.dtype is not None and out.dtype != self.dtype else out

    def _finish(self, images: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        hwc = [im.permute(1, 2, 0) for im in images]  # CHW as decoded -> HWC views
        if len({im.shape for im in hwc}) == 1:
            return self._layout(self._resized(torch.stack(hwc)))
        if self.size is not None:  # mixed sizes, one output size
            return self._layout(torch.cat([self._resized(im.unsqueeze(0)) for im in hwc]))
        return [self._layout(im.unsqueeze(0))[0] for im in hwc]  # mixed sizes kept: a ragged batch
