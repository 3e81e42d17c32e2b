"""``read_images``: image files decoded to ``uint8`` HWC arrays in column ``image``, as in Ray.

Decoding takes the fast path where there is one:

* JPEG without ``size``: libjpeg-turbo on the raw bytes, through simplejpeg where it is installed
  (the ``images`` extra), else ``torchvision.io.decode_jpeg`` (both bit-identical to PIL's decode,
  without PIL's per-image overhead);
* JPEG with ``size`` at most a quarter of the image: PIL's ``draft()`` lets libjpeg decode at 1/2,
  1/4 or 1/8 scale (DCT scaling), to no less than twice ``size`` (PIL's ``thumbnail`` default
  ``reducing_gap``), before the bilinear resize, so a big photo is never fully decoded; the pixels
  are then close to, not equal to, a full decode's (measured against Ray's full decode + resize:
  a few levels on photos, more on synthetic sharp edges);
* other JPEG resizes: the libjpeg-turbo decode, then torch's uint8 antialiased bilinear kernel
  (within one level of PIL's ``BILINEAR``, about three times faster);
* everything else (PNG, GIF, BMP, TIFF; other modes): PIL.

As in Ray, ``size=(height, width)`` resizes (bilinear) and then ``mode`` converts (``"RGB"``, ``"L"``,
``"RGBA"``...); without ``mode`` an image keeps its own mode, so a grayscale image is ``(H, W)``.
Images of one shape make a fixed-shape tensor column; mixed shapes (no ``size``) a variable-shape
column. With ``size`` and mode ``"RGB"`` or ``"L"`` the shape is known before decoding, so a task
decodes each image straight into its row of one array per block (in a worker, inside the transfer
file): no per-image table, no concatenation, no copy on the way to the consumer. A corrupt or
truncated image is a :class:`ReadError` naming the file (or a skipped file).

PIL, torchvision and simplejpeg are the ``images`` extra and are imported only when an image is decoded.

Example:
    >>> import tempfile, pathlib, numpy as np
    >>> from PIL import Image
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(d / "a.png")
    >>> [t.column("image").type.shape for task in plan_images(str(d)) for t in task()]
    [[4, 6, 3]]
"""

from __future__ import annotations

import dataclasses
import functools
import io
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ..blocks import column_from_values, column_to_numpy
from ..blocks.buffers import empty_rows
from .binary import read_binary_unit, read_file_bytes
from .errors import ReadErrorPolicy
from .paths import (
    FileInfo,
    FileReadOptions,
    ReadUnit,
    decorate_rows,
    display_path,
    plan_file_tasks,
    plan_read,
    plan_units,
    read_files_task,
)
from .read_task import ReadTask

__all__ = [
    "plan_images",
    "plan_images_on_device",
    "DeviceDecode",
    "read_encoded_image_unit",
    "read_image_unit",
    "read_image_array",
    "read_fixed_images_task",
    "fixed_image_shape",
    "decode_image",
    "jpeg_frame",
    "IMAGE_EXTENSIONS",
]

#: Ray's default ``file_extensions`` for ``read_images``.
IMAGE_EXTENSIONS = ["png", "jpg", "jpeg", "tif", "tiff", "bmp", "gif"]

_JPEG_MAGIC = b"\xff\xd8\xff"

#: Decoded bytes per encoded byte, for sizing read tasks (JPEG/PNG photos decode to ~5-15x).
IMAGE_SIZE_RATIO = 10.0


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("read_images needs Pillow: pip install 'torchray_loader[images]'") from exc
    return Image


def _rgb_to_l(rgb: np.ndarray) -> np.ndarray:
    """PIL's RGB -> L conversion (ITU-R 601-2 luma, PIL's fixed-point rounding), bit for bit."""
    r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)


def _simplejpeg_decoder() -> Any:
    """``decode(data, rgb, buffer=None) -> HWC array`` from simplejpeg (libjpeg-turbo), or ``None``
    without it; with ``buffer`` (writable, C-contiguous, large enough) the pixels go there.

    Same libjpeg-turbo algorithms (accurate integer DCT, fancy upsampling) as PIL and torchvision,
    so the same pixels; it takes the bytes as they are and returns an HWC array. Measured on
    256x256 JPEGs: 0.19 ms a decode, against 0.20 ms (torchvision) and 0.26 ms (PIL).
    """
    try:
        import simplejpeg
    except ImportError:
        return None

    def decode(data: bytes, rgb: bool, buffer: np.ndarray | None = None) -> np.ndarray | None:
        try:
            # A one-component JPEG: "GRAY" keeps it (H, W, 1); "RGB" replicates it as PIL's convert does.
            return simplejpeg.decode_jpeg(data, colorspace="RGB" if rgb else "GRAY", buffer=buffer)
        except ValueError:  # unusual or corrupt: PIL gives the verdict (and the error message)
            return None

    return decode


def _torchvision_jpeg_decoder() -> Any:
    """``decode(data, rgb) -> HWC array`` from torchvision, or ``None`` without it.

    torchvision 0.29 deprecates its public image codecs (in favour of TorchCodec) and warns on every
    call; the registered ``torch.ops.image.decode_jpeg`` kernel the public function wraps is used
    directly when present (same libjpeg-turbo code, no per-image warning), else the public function.
    """
    try:
        import torch
        import torchvision.io as tvio
    except ImportError:
        return None
    op = getattr(getattr(torch.ops, "image", None), "decode_jpeg", None)

    def decode(data: bytes, rgb: bool, buffer: np.ndarray | None = None) -> np.ndarray | None:
        # ``buffer`` is not used: the kernel allocates its result.
        mode = tvio.ImageReadMode.RGB if rgb else tvio.ImageReadMode.UNCHANGED
        encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        try:
            chw = op(encoded, mode.value, False) if op is not None else tvio.decode_jpeg(encoded, mode=mode)
        except RuntimeError:  # unusual or corrupt: PIL gives the verdict (and the error message)
            return None
        return chw.permute(1, 2, 0).numpy()  # the kernel's CHW is a view of HWC memory: no copy

    return decode


def _jpeg_decoder() -> Any:
    """The fastest JPEG decoder installed: simplejpeg, else torchvision, else ``None`` (PIL)."""
    return _simplejpeg_decoder() or _torchvision_jpeg_decoder()


_JPEG_DECODER: Any = False  # resolved on first use, per process


def _fast_jpeg_decoder() -> Any:
    """:func:`_jpeg_decoder`, resolved once per process (``None``: PIL decodes every JPEG)."""
    global _JPEG_DECODER
    if _JPEG_DECODER is False:
        _JPEG_DECODER = _jpeg_decoder()
    return _JPEG_DECODER


def _bilinear_aa() -> Any:
    """torch's antialiased bilinear resize ``(NCHW tensor, [h, w]) -> tensor``: the ATen kernel
    itself where it is exposed (``F.interpolate`` adds a few microseconds of argument checks)."""
    import torch
    import torch.nn.functional as F

    kernel = getattr(torch._C._nn, "_upsample_bilinear2d_aa", None)
    if kernel is not None:
        return lambda t, size, out=None: kernel(t, size, False, None, None, out=out)

    def interpolate(t: Any, size: list[int], out: Any = None) -> Any:  # pragma: no cover - older torch
        result = F.interpolate(t, size=size, mode="bilinear", antialias=True, align_corners=False)
        return result if out is None else out.copy_(result)

    return interpolate


_BILINEAR_AA: Any = None


def _resize_hwc(hwc: np.ndarray, size: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
    """A uint8 HWC array resized to ``size`` (HWC): bilinear with PIL's antialiasing (torch's uint8
    kernel; within one level of ``Image.resize(BILINEAR)``, at about a third of its cost). With
    ``out`` (a C-contiguous ``(*size, channels)`` uint8 array) the kernel writes there."""
    if hwc.shape[:2] == size:
        if out is None or hwc is out:
            return hwc
        out[...] = hwc
        return out
    # A batch of one (reshape, not [None]: torch takes a zero stride as not channels-last).
    hwc = np.ascontiguousarray(hwc)
    if out is None or not out.flags.c_contiguous:
        resized = _resize_nhwc(hwc.reshape(1, *hwc.shape), size)[0]
        if out is None:
            return resized
        out[...] = resized
        return out
    _resize_nhwc(hwc.reshape(1, *hwc.shape), size, out.reshape(1, *out.shape))
    return out


def _resize_nhwc(nhwc: np.ndarray, size: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
    """uint8 images ``(n, h, w, c)`` of one size resized to ``size`` (:func:`_resize_hwc`) by one
    kernel call, which sets up its weights and buffers once for all ``n``; into ``out`` (C-contiguous
    ``(n, *size, c)``) where given."""
    global _BILINEAR_AA
    if _BILINEAR_AA is None:
        _BILINEAR_AA = _bilinear_aa()
    import torch

    # Channels-last in, so channels-last out (torch's vectorised uint8 kernel): NHWC memory seen as
    # NCHW, nothing is copied, and the result's NHWC view is contiguous.
    nchw = torch.from_numpy(np.ascontiguousarray(nhwc)).permute(0, 3, 1, 2)
    if out is None:
        return _BILINEAR_AA(nchw, list(size)).permute(0, 2, 3, 1).numpy()
    _BILINEAR_AA(nchw, list(size), torch.from_numpy(out).permute(0, 3, 1, 2))
    return out


_SCRATCH = threading.local()

#: Decodes larger than this get memory of their own rather than the thread's reused scratch buffer.
_SCRATCH_MAX_BYTES = 64 << 20


def _decode_buffer(frame: tuple[int, int, int], size: tuple[int, int] | None, out: np.ndarray | None) -> np.ndarray | None:
    """Where an RGB decode of ``frame`` goes on its way to ``out``: ``out`` itself when no resize
    follows, else this thread's scratch buffer (already-faulted, cache-warm memory; a fresh array
    per image costs page faults that are a tenth of the decode); ``None``: a new array."""
    height, width, _ = frame
    if out is None or not out.flags.c_contiguous:
        return None
    if size is None or (height, width) == size:
        return out if out.shape == (height, width, 3) else None
    nbytes = height * width * 3
    return None if nbytes > _SCRATCH_MAX_BYTES else _thread_scratch("decode", nbytes)


def _thread_scratch(name: str, nbytes: int) -> np.ndarray:
    """The first ``nbytes`` of this thread's reused buffer ``name``, which only grows (memory already
    faulted in, whatever sizes come)."""
    buf = getattr(_SCRATCH, name, None)
    if buf is None or buf.nbytes < nbytes:
        buf = np.empty(nbytes, np.uint8)
        setattr(_SCRATCH, name, buf)
    return buf[:nbytes]


def _decode_jpeg_fast(
    data: bytes,
    mode: str | None,
    size: tuple[int, int] | None,
    frame: tuple[int, int, int],
    out: np.ndarray | None = None,
) -> np.ndarray | None:
    """libjpeg-turbo through simplejpeg or torchvision (then ``size``: torch's antialiased bilinear
    resize); ``None`` when this path does not apply (then PIL decides). ``frame``: the JPEG's frame
    header (:func:`jpeg_frame`). With ``out`` (a C-contiguous uint8 array of the result's shape),
    an RGB result is written there and returned, without a per-image allocation where simplejpeg
    decodes."""
    decoder = _fast_jpeg_decoder()
    if decoder is None:
        return None  # neither installed: PIL does it all
    components = frame[2]
    if components not in (1, 3):
        return None  # CMYK and friends: PIL keeps Ray's semantics
    rgb = mode == "RGB" or components == 3
    out = out if rgb and mode == "RGB" else None
    # "L" decodes to RGB and converts as PIL does: libjpeg's own gray output (the Y plane) differs
    # from PIL's luma formula by a level or two, and the output must not depend on the decode path.
    buffer = _decode_buffer(frame, size, out)
    hwc = decoder(data, rgb, buffer)
    if hwc is None or hwc.ndim != 3 or hwc.shape[2] not in (1, 3):
        return None
    if out is not None and buffer is out and np.may_share_memory(hwc, out):
        hwc = out  # decoded in place (simplejpeg); torchvision's decoder returns an array of its own
    if size is not None:
        hwc = _resize_hwc(hwc, size, out)
    elif out is not None and hwc is not out:
        out[...] = hwc
        hwc = out
    if hwc.shape[2] == 1:
        return hwc[..., 0]
    return _rgb_to_l(hwc) if mode == "L" else hwc


#: Start-of-frame markers (baseline, progressive, lossless, arithmetic); not DHT (C4), JPG (C8), DAC (CC).
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def jpeg_frame(data: bytes) -> tuple[int, int, int] | None:
    """``(height, width, components)`` from a JPEG's start-of-frame header, ``None`` if not found.

    A header scan (microseconds), where ``PIL.Image.open`` costs tens of them: the resize path needs
    the size before it picks a decoder.

    Example:
        >>> import io
        >>> from PIL import Image
        >>> buf = io.BytesIO(); Image.new("RGB", (5, 3)).save(buf, "JPEG")
        >>> jpeg_frame(buf.getvalue())
        (3, 5, 3)
    """
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # TEM, RSTn: no length field
            i += 2
            continue
        length = (data[i + 2] << 8) | data[i + 3]
        if marker in _SOF_MARKERS:
            if i + 10 > n or length < 8:
                return None
            height = (data[i + 5] << 8) | data[i + 6]
            width = (data[i + 7] << 8) | data[i + 8]
            return height, width, data[i + 9]
        if marker in (0xD9, 0xDA) or length < 2:  # end of image, start of scan: no frame header
            return None
        i += 2 + length
    return None


#: DCT-scaled decodes stop at this many times the target size (PIL's ``thumbnail`` default), so the
#: bilinear resize after them still averages at least two decoded pixels per output pixel.
_DRAFT_GAP = 2


def _draft_pays(size: tuple[int, int], frame: tuple[int, int, int]) -> bool:
    """Whether a DCT-scaled decode skips work: the image is at least twice the gap times ``size``."""
    return 2 * _DRAFT_GAP * size[0] <= frame[0] and 2 * _DRAFT_GAP * size[1] <= frame[1]


_WARM = False


def _warm_up_decoders() -> None:
    """Decode a tiny JPEG and PNG once in this process (the consumer, at ``read_images`` time).

    torch, torchvision, its JPEG kernel and PIL's format plugins load lazily and take seconds on a
    cold machine; worker processes forked afterwards inherit them loaded instead of each paying on
    its first image (with the ``spawn`` start method this only costs the consumer the imports).
    """
    global _WARM
    if _WARM:
        return
    Image = _pil()
    for fmt in ("JPEG", "PNG"):
        buf = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buf, fmt)
        decode_image(buf.getvalue())
        decode_image(buf.getvalue(), size=(6, 6))  # the resize kernel too
    _WARM = True


def decode_image(
    data: bytes, *, size: tuple[int, int] | None = None, mode: str | None = None, out: np.ndarray | None = None
) -> np.ndarray:
    """Decode one encoded image to an HWC (or HW for one channel) array.

    ``out``: where the caller wants the pixels (a C-contiguous uint8 array of the result's shape);
    the JPEG fast path decodes and resizes into it and returns it. Other paths may return an array
    of their own, which the caller copies.

    Example:
        >>> import io, numpy as np
        >>> from PIL import Image
        >>> buf = io.BytesIO(); Image.fromarray(np.full((8, 8, 3), 7, np.uint8)).save(buf, "PNG")
        >>> decode_image(buf.getvalue(), size=(4, 2)).shape
        (4, 2, 3)
    """
    is_jpeg = data[:3] == _JPEG_MAGIC
    if is_jpeg and mode in (None, "RGB", "L"):
        frame = jpeg_frame(data)
        # One or three components (PIL's "L"/"RGB"; four is CMYK) and no DCT-scaling gain.
        if frame is not None and (size is None or not _draft_pays(size, frame)):
            arr = _decode_jpeg_fast(data, mode, size, frame, out)
            if arr is not None:
                return arr
    Image = _pil()
    img = Image.open(io.BytesIO(data))
    if size is not None:
        height, width = size
        if is_jpeg and (width < img.width or height < img.height):
            # DCT-domain downscale: decodes at the smallest 1/2^k scale still >= the gap times size.
            img.draft(mode if mode in ("RGB", "L") else None, (_DRAFT_GAP * width, _DRAFT_GAP * height))
        if img.size != (width, height):
            img = img.resize((width, height), resample=Image.BILINEAR)
    if mode is not None and img.mode != mode:
        img = img.convert(mode)
    img.load()
    return np.asarray(img)


def read_image_array(
    fs: Any,
    unit: ReadUnit,
    *,
    size: tuple[int, int] | None = None,
    mode: str | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """One image file decoded (see :func:`decode_image`, ``out`` included).

    Example:
        >>> from PIL import Image
        >>> from fsspec.implementations.memory import MemoryFileSystem
        >>> from torchray_loader.io.paths import FileInfo
        >>> fs, buf = MemoryFileSystem(), io.BytesIO(); Image.new("RGB", (3, 2)).save(buf, "PNG")
        >>> fs.pipe("/read_image_array_example.png", buf.getvalue())
        >>> read_image_array(fs, ReadUnit(FileInfo("/read_image_array_example.png")), mode="L").shape
        (2, 3)
    """
    return decode_image(read_file_bytes(fs, unit.file.path), size=size, mode=mode, out=out)


def read_image_unit(
    fs: Any,
    unit: ReadUnit,
    shown: str,
    policy: ReadErrorPolicy,
    options: FileReadOptions,
    *,
    size: tuple[int, int] | None = None,
    mode: str | None = None,
) -> Iterator[pa.Table]:
    """Reader for one image file: a one-row table ``{"image": <array>}``.

    Example:
        >>> import tempfile, pathlib
        >>> from PIL import Image
        >>> from fsspec.implementations.local import LocalFileSystem
        >>> from torchray_loader.io.paths import FileInfo
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.png"; Image.new("RGB", (3, 2)).save(p)
        >>> unit = ReadUnit(FileInfo(str(p)))
        >>> [t.column("image").type.shape for t in read_image_unit(LocalFileSystem(), unit, str(p), ReadErrorPolicy(), FileReadOptions())]
        [[2, 3, 3]]
    """
    arr = read_image_array(fs, unit, size=size, mode=mode)
    yield pa.table({"image": column_from_values([arr])})


def fixed_image_shape(size: tuple[int, int] | None, mode: str | None) -> tuple[int, ...] | None:
    """The shape every image decodes to when ``size`` and ``mode`` fix it, else ``None``
    (without ``size``, or with a mode whose band count depends on the file).

    Example:
        >>> fixed_image_shape((4, 6), "RGB"), fixed_image_shape((4, 6), "L"), fixed_image_shape((4, 6), None)
        ((4, 6, 3), (4, 6), None)
    """
    if size is None:
        return None
    if mode == "RGB":
        return (*size, 3)
    if mode == "L":
        return tuple(size)
    return None


#: JPEGs of one size that one resize call takes: the kernel sets up its weights and buffers once
#: per call, which for 256 -> 224 is about a sixth of a per-image call's cost.
RESIZE_BATCH = 8
#: ... while their decoded pixels fit in this many bytes (a thread's scratch; bigger images go alone).
_RESIZE_BATCH_BYTES = 16 << 20


def _batch_scratch(capacity: int, frame: tuple[int, int]) -> np.ndarray:
    """A ``(capacity, *frame, 3)`` uint8 view of this thread's reused batch buffer."""
    return _thread_scratch("batch", capacity * frame[0] * frame[1] * 3).reshape(capacity, *frame, 3)


class _BatchedResize:
    """RGB decodes of JPEGs of one size waiting for one resize call into consecutive rows of ``out``.

    Invariant: ``slots[:count]`` hold the decoded images of rows ``first .. first + count - 1`` of
    ``out``, and :meth:`flush` resizes them there before any other row is written.
    """

    def __init__(self, out: np.ndarray, size: tuple[int, int]) -> None:
        self.out = out
        self.size = size
        self.frame: tuple[int, int] | None = None
        self.slots: np.ndarray | None = None
        self.first = 0
        self.count = 0  # images waiting in ``slots``

    def decode(self, data: bytes, row: int) -> bool:
        """Decode ``data`` for ``row`` (the row after the waiting ones) into the batch; False where
        it cannot join one (not a JPEG that the fast path decodes and resizes, or too big): the
        waiting images are resized, and the caller decodes this one alone."""
        frame = _resized_jpeg_frame(data, self.size)
        if self.slots is not None and self.count and (
            frame != self.frame or self.count == len(self.slots) or row != self.first + self.count
        ):
            self.flush()
        if frame is None:
            return False
        if not self.count:
            capacity = min(RESIZE_BATCH, _RESIZE_BATCH_BYTES // (frame[0] * frame[1] * 3))
            if capacity < 2:
                return False
            self.slots, self.frame, self.first = _batch_scratch(capacity, frame), frame, row
        assert self.slots is not None
        slot = self.slots[self.count]
        hwc = _fast_jpeg_decoder()(data, True, slot)
        if hwc is None or hwc.shape != slot.shape:
            self.flush()
            return False  # PIL gives the verdict, alone
        if not np.may_share_memory(hwc, slot):
            slot[...] = hwc  # torchvision's decoder returns an array of its own
        self.count += 1
        return True

    def flush(self) -> None:
        if self.count:
            assert self.slots is not None
            _resize_nhwc(self.slots[: self.count], self.size, self.out[self.first : self.first + self.count])
            self.count = 0


def _resized_jpeg_frame(data: bytes, size: tuple[int, int]) -> tuple[int, int] | None:
    """``(height, width)`` of a JPEG that :func:`decode_image` in mode ``"RGB"`` decodes with
    libjpeg-turbo and then resizes to ``size``, else ``None``."""
    if data[:3] != _JPEG_MAGIC:
        return None
    frame = jpeg_frame(data)
    if frame is None or frame[2] not in (1, 3) or frame[:2] == size or _draft_pays(size, frame):
        return None
    return None if _fast_jpeg_decoder() is None else (frame[0], frame[1])


def _read_image_into(
    fs: Any, unit: ReadUnit, size: tuple[int, int], mode: str, row: np.ndarray, batch: _BatchedResize | None, index: int
) -> tuple[np.ndarray | None]:
    """One file of a fixed-shape image task: read, then decoded into the resize ``batch`` (``None``
    returned: its row is written when the batch is flushed), else into ``row`` (returned, or an
    array of its own that the caller copies there)."""
    data = read_file_bytes(fs, unit.file.path)
    if batch is not None and batch.decode(data, index):
        return (None,)
    return (decode_image(data, size=size, mode=mode, out=row),)


def read_fixed_images_task(
    units: tuple[ReadUnit, ...],
    fs: Any,
    reader: Any,
    reader_kwargs: dict[str, Any],
    *,
    options: FileReadOptions,
    policy: ReadErrorPolicy,
    combine: Any = None,
    row_limit: int | None = None,
) -> Iterator[pa.Table]:
    """Body of a ``read_images`` task whose images all decode to one shape (``size`` with mode
    ``"RGB"`` or ``"L"``): each image is what ``reader`` (:func:`read_image_array`) makes of it,
    but the task reads and decodes itself so that resizes can share kernel calls; ``combine`` is
    not needed. With ``row_limit``, no more images than that are decoded (skipped files aside).

    Each image is decoded straight into its row of one ``uint8`` array per block, built in the
    task's transfer file where there is one, so a block reaches the consumer as one array with no
    per-image table, no concatenation and no copy at the transfer. In mode ``"RGB"``, JPEGs of one
    size that need a resize are decoded into a scratch batch and resized into their rows
    ``RESIZE_BATCH`` at a time (same pixels as one at a time).

    Invariant (as :func:`~.paths.read_files_task`): rows in unit order; a file the policy skips
    contributes no row.

    Example:
        >>> import tempfile, pathlib
        >>> from PIL import Image
        >>> from fsspec.implementations.local import LocalFileSystem
        >>> from torchray_loader.io.paths import FileInfo
        >>> d = pathlib.Path(tempfile.mkdtemp()); Image.new("RGB", (3, 2)).save(d / "a.png")
        >>> units = (ReadUnit(FileInfo(str(d / "a.png"))),) * 2
        >>> [b.column("image").type.shape for b in read_fixed_images_task(units, LocalFileSystem(), read_image_array,
        ...     {"size": (4, 4), "mode": "RGB"}, options=FileReadOptions(), policy=ReadErrorPolicy())]
        [[4, 4, 3]]
    """
    size, mode = reader_kwargs["size"], reader_kwargs["mode"]
    shape = fixed_image_shape(size, mode)
    if shape is None:
        raise ValueError(f"read_fixed_images_task needs a fixed shape, got size={size!r}, mode={mode!r}")
    rows_per_block = max(1, options.target_block_bytes // int(np.prod(shape)))
    remaining = len(units) if row_limit is None else min(row_limit, len(units))
    start = 0
    while remaining > 0 and start < len(units):  # a unit is at most one row (one image)
        group = units[start : start + min(rows_per_block, remaining)]
        start += len(group)
        out = empty_rows(len(group), shape, np.uint8)
        batch = _BatchedResize(out, size) if mode == "RGB" else None
        files: list[FileInfo] = []
        shown_paths: list[str] = []
        for unit in group:
            shown = display_path(fs, unit.file.path)
            index = len(files)
            row = out[index]
            read = functools.partial(_read_image_into, fs, unit, size, mode, row, batch, index)
            for arr in policy.run_unit(shown, read):
                if arr is not None and arr is not row:
                    if arr.shape != shape or arr.dtype != np.uint8:  # decode_image's contract for these modes
                        raise RuntimeError(f"{shown}: decoded to {arr.dtype}{arr.shape}, expected uint8{shape}")
                    row[...] = arr
                files.append(unit.file)
                shown_paths.append(shown)
        if batch is not None:
            batch.flush()
        if files:
            remaining -= len(files)
            table = pa.table({"image": column_from_values(out[: len(files)])})
            yield decorate_rows(table, files, shown_paths, options.include_paths)


def combine_image_tables(tables: list[pa.Table]) -> pa.Table:
    """Concatenate one task's per-image tables into one block.

    Images of one shape give a fixed-shape column; different shapes a variable-shape column
    (which ``pa.concat_tables`` cannot do on its own).

    Example:
        >>> import numpy as np
        >>> t = [pa.table({"image": column_from_values([np.zeros(s, np.uint8)])}) for s in [(2, 2), (3, 3)]]
        >>> type(combine_image_tables(t).column("image").type).__name__
        'VariableShapeTensorType'
    """
    try:
        return pa.concat_tables(tables)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    names = tables[0].column_names
    columns = {}
    for name in names:
        if name == "image":
            arrays = [a for t in tables for a in column_to_numpy(t.column(name))]
            columns[name] = column_from_values(arrays)
        else:
            columns[name] = pa.chunked_array([c for t in tables for c in t.column(name).chunks])
    return pa.table(columns)


def _check_size(size: Any) -> tuple[int, int] | None:
    if size is None:
        return None
    if (
        not isinstance(size, Sequence)
        or len(size) != 2
        or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in size)
    ):
        raise ValueError(f"size must be (height, width) of positive ints, got {size!r}")
    return (int(size[0]), int(size[1]))


def _image_reader(size: tuple[int, int] | None, mode: str | None) -> tuple[Any, Any]:
    """``(reader, task_body)`` of a decoding image read: one array per block when ``size`` and
    ``mode`` fix the shape, else a table per file."""
    if fixed_image_shape(size, mode) is not None:
        return read_image_array, read_fixed_images_task
    return read_image_unit, read_files_task


def plan_images(
    paths: Any,
    *,
    size: tuple[int, int] | None = None,
    mode: str | None = None,
    **kwargs: Any,
) -> list[ReadTask]:
    """Read tasks for ``read_images`` (``kwargs``: the common file options of :func:`~.paths.plan_read`).

    Example:
        >>> plan_images.__name__
        'plan_images'
    """
    checked = _check_size(size)
    if mode is not None and not isinstance(mode, str):
        raise TypeError(f"mode must be a PIL mode string such as 'RGB', got {mode!r}")
    kwargs.setdefault("file_extensions", IMAGE_EXTENSIONS)
    _warm_up_decoders()
    reader, task_body = _image_reader(checked, mode)
    return plan_read(
        paths,
        reader,
        {"size": checked, "mode": mode},
        combine=combine_image_tables,
        size_ratio=IMAGE_SIZE_RATIO,
        task_body=task_body,
        **kwargs,
    )


# ----------------------------------------------------------------------------------------------
# decode_on_device: the same files, read as bytes and decoded where the batches are consumed

#: File extensions ``decode_on_device`` accepts (the device decoder reads JPEG only).
DEVICE_DECODE_EXTENSIONS = ("jpg", "jpeg")
#: Modes the device decoder produces: RGB (H, W, 3) and luma (H, W).
DEVICE_DECODE_MODES = ("RGB", "L")


@dataclass(frozen=True)
class DeviceDecode:
    """How a ``read_images(..., decode_on_device=True)`` read is iterated on a device.

    Each decoding task's ``twin`` reads the same files as ``{"image": <encoded bytes>, "path": ...}``
    rows (plus partition columns); the consumer decodes each batch
    (``torchray_loader.pytorch.image_decode``) to ``size`` and ``mode``, then drops ``path`` unless
    ``include_paths``. So a batch holds the same rows either way.
    """

    size: tuple[int, int] | None
    mode: str
    include_paths: bool


def read_encoded_image_unit(
    fs: Any, unit: ReadUnit, shown: str, policy: ReadErrorPolicy, options: FileReadOptions
) -> Iterator[pa.Table]:
    """Reader for one image file left encoded: a one-row table ``{"image": <file bytes>}``.

    Example:
        >>> import tempfile, pathlib
        >>> from fsspec.implementations.local import LocalFileSystem
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.jpg"; _ = p.write_bytes(b"\\xff\\xd8\\xff")
        >>> unit = ReadUnit(FileInfo(str(p)))
        >>> [t.column("image").type for t in read_encoded_image_unit(LocalFileSystem(), unit, str(p), ReadErrorPolicy(), FileReadOptions())]
        [DataType(binary)]
    """
    for table in read_binary_unit(fs, unit, shown, policy, options):
        yield table.rename_columns(["image"])


def plan_images_on_device(
    paths: Any,
    *,
    size: tuple[int, int] | None = None,
    mode: str | None = None,
    file_extensions: Sequence[str] | None = None,
    include_paths: bool = False,
    override_num_blocks: int | None = None,
    on_read_error: str | None = None,
    read_error_budget: int | None = None,
    **listing: Any,
) -> tuple[list[ReadTask], DeviceDecode]:
    """Read tasks for ``read_images(..., decode_on_device=True)``: the decoding tasks (for every use
    of the dataset but ``iter_torch_batches(device=...)``), each with its encoded ``twin``
    (``listing``: the other file options of :func:`~.paths.plan_read`).

    Both come from one listing of the files, so a task and its twin read the same files in the same
    order (``shuffle="files"`` included). JPEG files only, ``mode`` ``"RGB"`` or ``"L"``, and the
    default ``on_read_error="raise"``: a file the device decoder cannot decode raises a
    :class:`ReadError` naming it (skipping it would change the batches).

    Example:
        >>> import tempfile, pathlib
        >>> from PIL import Image
        >>> d = pathlib.Path(tempfile.mkdtemp()); Image.new("RGB", (6, 4)).save(d / "a.jpg")
        >>> tasks, on_device = plan_images_on_device(str(d), size=(2, 3), mode="RGB")
        >>> [b.column_names for b in tasks[0].twin()], on_device.size
        ([['image', 'path']], (2, 3))
    """
    checked = _check_size(size)
    if mode not in DEVICE_DECODE_MODES:
        raise ValueError(f"decode_on_device=True needs mode='RGB' or mode='L' (the device decoder's outputs), got {mode!r}")
    policy = ReadErrorPolicy.from_context(on_read_error, read_error_budget)
    if policy.mode != "raise":
        raise ValueError(
            "decode_on_device=True needs on_read_error='raise': a file that fails to decode on the device "
            "cannot be skipped without changing the batches"
        )
    fs, units = plan_units(paths, file_extensions=file_extensions, **listing)
    for unit in units:  # never a silent subset of what the same read without decode_on_device gives
        if unit.file.path.rsplit(".", 1)[-1].lower() not in DEVICE_DECODE_EXTENSIONS:
            raise ValueError(
                f"decode_on_device=True reads JPEG files (.jpg, .jpeg) only, got {display_path(fs, unit.file.path)} "
                "(file_extensions=['jpg', 'jpeg'] reads only the JPEGs)"
            )
    _warm_up_decoders()
    reader, task_body = _image_reader(checked, mode)
    decoding = plan_file_tasks(
        fs, units, reader, {"size": checked, "mode": mode}, include_paths=include_paths,
        override_num_blocks=override_num_blocks, policy=policy, combine=combine_image_tables,
        size_ratio=IMAGE_SIZE_RATIO, task_body=task_body,
    )
    encoded = plan_file_tasks(  # grouped as ``decoding`` (same units, block count and size ratio)
        fs, units, read_encoded_image_unit, {}, include_paths=True,
        override_num_blocks=override_num_blocks, policy=policy, size_ratio=IMAGE_SIZE_RATIO,
    )
    assert [t.paths for t in encoded] == [t.paths for t in decoding]  # the twins' invariant
    tasks = [dataclasses.replace(task, twin=twin) for task, twin in zip(decoding, encoded, strict=True)]
    return tasks, DeviceDecode(checked, mode, bool(include_paths))
