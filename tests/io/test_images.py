"""read_images: decode paths (libjpeg-turbo, PIL draft), modes, sizes, ragged shapes, bad files."""

from __future__ import annotations

import io
import os
import pathlib

import numpy as np
import pytest
from PIL import Image

import torchray_loader as rd
from torchray_loader.errors import ReadError
from torchray_loader.io import images as images_mod
from torchray_loader.io.errors import read_skips
from torchray_loader.io.images import decode_image


def rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth test image (JPEG-friendly) with some noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) % 256], axis=-1)
    return np.clip(base + rng.integers(-8, 8, base.shape), 0, 255).astype(np.uint8)


def save(arr: np.ndarray, path: pathlib.Path, fmt: str | None = None, **kw) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, fmt, **kw)
    return path.read_bytes()


def pil_decode(data: bytes, mode: str | None = None) -> np.ndarray:
    img = Image.open(io.BytesIO(data))
    return np.asarray(img.convert(mode) if mode else img)


def test_png_and_jpeg_decode_like_pil(tmp_path):
    png = save(rgb(20, 30), tmp_path / "a.png")
    jpg = save(rgb(20, 30, 1), tmp_path / "b.jpg", quality=90)
    np.testing.assert_array_equal(decode_image(png), rgb(20, 30))
    np.testing.assert_array_equal(decode_image(jpg), pil_decode(jpg))  # libjpeg-turbo on both sides
    rows = rd.read_images(str(tmp_path)).take_all()
    assert [r["image"].shape for r in rows] == [(20, 30, 3), (20, 30, 3)]
    assert rows[0]["image"].dtype == np.uint8


def test_jpeg_uses_the_libjpeg_fast_path(tmp_path, monkeypatch):
    jpg = save(rgb(16, 16), tmp_path / "a.jpg")
    calls = []
    real = images_mod._decode_jpeg_fast

    def spy(*args):
        out = real(*args)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(images_mod, "_decode_jpeg_fast", spy)
    decode_image(jpg)
    decode_image(jpg, mode="L")
    decode_image(jpg, size=(8, 8))  # half size: full decode, torch's resize
    decode_image(jpg, size=(4, 4))  # a quarter: PIL's DCT-scaled decode (draft) instead
    assert calls == [True, True, True]


def test_dct_scaled_decodes_stay_close_to_a_full_decode(tmp_path):
    """The draft path decodes to at least twice the target (PIL's thumbnail default reducing gap)."""
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 255, (320, 400, 3), dtype=np.uint8)).filter(ImageFilter.GaussianBlur(3))
    path = tmp_path / "photo.jpg"
    img.save(path, quality=95)
    for size in [(80, 100), (40, 50), (20, 25)]:  # 4x, 8x, 16x smaller: all take the draft path
        full = np.asarray(Image.open(path).convert("RGB").resize(size[::-1], Image.BILINEAR)).astype(int)
        ours = decode_image(path.read_bytes(), size=size, mode="RGB").astype(int)
        assert np.abs(ours - full).max() <= 3, size


def _backend(name):
    if name == "simplejpeg":
        pytest.importorskip("simplejpeg")
        return images_mod._simplejpeg_decoder()
    return images_mod._torchvision_jpeg_decoder()


@pytest.mark.parametrize("backend", ["simplejpeg", "torchvision"])
@pytest.mark.parametrize("mode", [None, "RGB", "L"])
@pytest.mark.parametrize("kind", ["color", "gray", "progressive", "444"])
def test_every_jpeg_backend_decodes_like_pil(tmp_path, monkeypatch, backend, mode, kind):
    src = rgb(37, 53, 5)[..., 0] if kind == "gray" else rgb(37, 53, 5)
    options = {"progressive": True} if kind == "progressive" else {"subsampling": 0} if kind == "444" else {}
    jpg = save(src, tmp_path / "a.jpg", quality=90, **options)
    decoder = _backend(backend)
    used = []
    monkeypatch.setattr(images_mod, "_JPEG_DECODER", lambda *a: used.append(a[1]) or decoder(*a))
    np.testing.assert_array_equal(decode_image(jpg, mode=mode), pil_decode(jpg, mode))
    assert used == [mode == "RGB" or kind != "gray"]  # RGB output where PIL's image is RGB
    resized = decode_image(jpg, size=(30, 40), mode=mode)  # the resize starts from the same pixels
    ref_mode = mode or ("L" if kind == "gray" else "RGB")
    ref = np.asarray(Image.open(io.BytesIO(jpg)).resize((40, 30), Image.BILINEAR).convert(ref_mode))
    assert resized.shape == ref.shape and np.abs(resized.astype(int) - ref.astype(int)).max() <= 1


@pytest.mark.parametrize("backend", ["simplejpeg", "torchvision"])
def test_a_jpeg_backend_leaves_corrupt_data_to_pil(tmp_path, monkeypatch, backend):
    jpg = save(rgb(16, 16), tmp_path / "a.jpg")
    decoder = _backend(backend)
    assert decoder(jpg[: len(jpg) // 2], True) is None  # truncated: no verdict of its own
    monkeypatch.setattr(images_mod, "_JPEG_DECODER", decoder)
    with pytest.raises(OSError):  # PIL's: "image file is truncated"
        decode_image(jpg[: len(jpg) // 2])


def test_without_a_libjpeg_backend_pil_decodes(tmp_path, monkeypatch):
    jpg = save(rgb(16, 16), tmp_path / "a.jpg")
    monkeypatch.setattr(images_mod, "_JPEG_DECODER", None)
    np.testing.assert_array_equal(decode_image(jpg), pil_decode(jpg))
    assert decode_image(jpg, size=(10, 12)).shape == (10, 12, 3)


@pytest.mark.parametrize("mode,shape", [("RGB", (12, 10, 3)), ("L", (12, 10)), ("RGBA", (12, 10, 4))])
@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_modes(tmp_path, mode, shape, ext):
    data = save(rgb(12, 10), tmp_path / f"a.{ext}")
    out = decode_image(data, mode=mode)
    assert out.shape == shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, pil_decode(data, mode))


def test_grayscale_keeps_its_mode_without_mode(tmp_path):
    data = save(rgb(8, 8)[..., 0], tmp_path / "g.png")
    assert decode_image(data).shape == (8, 8)
    jpg = save(rgb(8, 8)[..., 0], tmp_path / "g.jpg")
    assert decode_image(jpg).shape == (8, 8)


def test_size_resizes_and_drafts_big_jpegs(tmp_path):
    big = save(rgb(400, 600), tmp_path / "big.jpg", quality=95)
    out = decode_image(big, size=(50, 75))
    assert out.shape == (50, 75, 3)
    reference = np.asarray(Image.open(io.BytesIO(big)).resize((75, 50), Image.BILINEAR)).astype(int)
    assert np.abs(out.astype(int) - reference).mean() < 6  # DCT-scaled decode, then bilinear
    png = save(rgb(10, 10), tmp_path / "small.png")
    assert decode_image(png, size=(20, 30)).shape == (20, 30, 3)  # upscaling works too
    ds = rd.read_images(str(tmp_path), size=(32, 32), mode="RGB")
    assert (
        str(ds.schema())
        == "Column  Type\n------  ----\nimage   numpy.ndarray(shape=(32, 32, 3), dtype=uint8)"
    )


@pytest.mark.parametrize("mode", [None, "RGB", "L"])
@pytest.mark.parametrize("gray", [False, True], ids=["color", "gray"])
def test_small_resizes_decode_with_libjpeg_and_resize_like_pil(tmp_path, monkeypatch, mode, gray):
    src = rgb(64, 48, 3)[..., 0] if gray else rgb(64, 48, 3)
    jpg = save(src, tmp_path / "a.jpg", quality=95)
    used = []
    real = images_mod._decode_jpeg_fast
    monkeypatch.setattr(images_mod, "_decode_jpeg_fast", lambda *a: used.append(a[2]) or real(*a))
    for size in [(56, 40), (80, 60), (40, 30)]:  # shrink by < 2x, enlarge, mixed aspect
        out = decode_image(jpg, size=size, mode=mode)
        ref = Image.open(io.BytesIO(jpg)).resize(size[::-1], Image.BILINEAR)
        ref = np.asarray(ref.convert(mode) if mode else ref)
        assert out.shape == ref.shape and out.dtype == np.uint8 and out.flags.c_contiguous
        assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1  # torch's antialiased bilinear
    assert used == [(56, 40), (80, 60), (40, 30)]


def test_jpeg_frame_reads_the_header_and_cmyk_stays_on_pil(tmp_path):
    cmyk = io.BytesIO()
    Image.new("CMYK", (9, 7), (10, 20, 30, 40)).save(cmyk, "JPEG")
    progressive = save(rgb(11, 13), tmp_path / "p.jpg", progressive=True)
    assert images_mod.jpeg_frame(progressive) == (11, 13, 3)
    assert images_mod.jpeg_frame(cmyk.getvalue()) == (7, 9, 4)
    assert images_mod.jpeg_frame(b"\xff\xd8\xff\xe0\x00") is None
    out = decode_image(cmyk.getvalue(), size=(6, 8), mode="RGB")
    ref = np.asarray(Image.open(io.BytesIO(cmyk.getvalue())).resize((8, 6), Image.BILINEAR).convert("RGB"))
    np.testing.assert_array_equal(out, ref)


def test_mixed_sizes_give_a_variable_shape_column(tmp_path):
    for i, (h, w) in enumerate([(8, 8), (10, 6), (8, 8)]):
        save(rgb(h, w, i), tmp_path / f"{i}.png")
    ds = rd.read_images(str(tmp_path), override_num_blocks=1)
    assert str(ds.schema()) == "Column  Type\n------  ----\nimage   numpy.ndarray(ndim=3, dtype=uint8)"
    assert [r["image"].shape for r in ds.take_all()] == [(8, 8, 3), (10, 6, 3), (8, 8, 3)]
    assert [r["image"].shape for r in rd.read_images(str(tmp_path)).take_all()] == [
        (8, 8, 3),
        (10, 6, 3),
        (8, 8, 3),
    ]


def test_include_paths_and_extensions(tmp_path):
    save(rgb(4, 4), tmp_path / "1.png")
    save(rgb(4, 4), tmp_path / "2.JPEG")
    (tmp_path / "labels.csv").write_text("not an image\n")
    rows = rd.read_images(str(tmp_path), include_paths=True).take_all()
    assert [os.path.basename(r["path"]) for r in rows] == ["1.png", "2.JPEG"]
    assert rows[0]["path"] == f"{tmp_path}/1.png"


def test_corrupt_images_name_the_file_and_can_be_skipped(tmp_path):
    good = save(rgb(8, 8), tmp_path / "a.jpg")
    (tmp_path / "b.jpg").write_bytes(good[: len(good) // 2])  # truncated JPEG
    (tmp_path / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (tmp_path / "d.jpg").write_bytes(good)
    with pytest.raises(ReadError, match=r"b\.jpg: "):
        rd.read_images(str(tmp_path)).take_all()
    ds = rd.read_images(str(tmp_path), on_read_error="skip", read_error_budget=2, include_paths=True)
    assert [os.path.basename(r["path"]) for r in ds.take_all()] == ["a.jpg", "d.jpg"]
    assert [os.path.basename(s.path) for s in read_skips(ds)] == ["b.jpg", "c.png"]


def test_bad_arguments(tmp_path):
    save(rgb(4, 4), tmp_path / "1.png")
    with pytest.raises(ValueError, match="size"):
        rd.read_images(str(tmp_path), size=(0, 3))
    with pytest.raises(ValueError, match="size"):
        rd.read_images(str(tmp_path), size=32)
    with pytest.raises(TypeError, match="mode"):
        rd.read_images(str(tmp_path), mode=3)


def test_round_trip_through_parquet(tmp_path):
    for i in range(5):
        save(rgb(6, 7, i), tmp_path / "img" / f"{i}.png")
    ds = rd.read_images(str(tmp_path / "img"), include_paths=True)
    ds.write_parquet(str(tmp_path / "pq"))
    back = rd.read_parquet(str(tmp_path / "pq")).take_all()
    orig = ds.take_all()
    assert [r["path"] for r in back] == [r["path"] for r in orig]
    for a, b in zip(back, orig, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])


# ------------------------------------------------------------------ fixed-shape reads (size + mode)


@pytest.mark.parametrize("backend", ["simplejpeg", "torchvision"])
def test_decoding_into_out_gives_the_pixels_of_a_plain_decode(tmp_path, monkeypatch, backend):
    decoder = _backend(backend)
    monkeypatch.setattr(images_mod, "_JPEG_DECODER", decoder)
    color = save(rgb(24, 32, 1), tmp_path / "c.jpg", quality=90)
    big = save(rgb(90, 70, 2), tmp_path / "big.jpg", quality=90)
    gray = save(rgb(24, 32, 3)[..., 0], tmp_path / "g.jpg", quality=90)
    png = save(rgb(24, 32, 4), tmp_path / "p.png")
    # resized through the scratch buffer, which grows (big) and is then reused by smaller decodes;
    # decoded in place where the size is the image's own; gray replicated to RGB; PNG through PIL
    cases = [(color, (16, 16)), (big, (50, 40)), (color, (20, 28)), (color, (24, 32)), (gray, (24, 32)),
             (gray, (12, 12)), (png, (16, 16))]
    for data, size in cases:
        want = decode_image(data, size=size, mode="RGB")
        out = np.full((*size, 3), 7, np.uint8)
        got = decode_image(data, size=size, mode="RGB", out=out)
        np.testing.assert_array_equal(got, want)
        if backend == "simplejpeg" and data is not png:
            assert got is out  # written where the caller wanted it, not copied afterwards


@pytest.mark.parametrize("num_workers", [0, 2])
def test_fixed_shape_reads_of_images_already_at_size_decode_in_place_alike(tmp_path, fresh_data_context, num_workers):
    paths = _image_tree(tmp_path)  # 2.jpg is 33 x 33: no resize
    fresh_data_context.num_workers = num_workers
    rows = rd.read_images(str(tmp_path), size=(33, 33), mode="RGB", include_paths=True).take_all()
    assert [r["path"] for r in rows] == [str(p) for p in paths]
    for r, p in zip(rows, paths, strict=True):
        np.testing.assert_array_equal(r["image"], decode_image(p.read_bytes(), size=(33, 33), mode="RGB"))


def _image_tree(root: pathlib.Path) -> list[pathlib.Path]:
    """Hive-partitioned JPEGs and PNGs of several sizes, one corrupt JPEG left out."""
    paths = []
    for i, (split, h, w) in enumerate([("a", 20, 30), ("a", 64, 48), ("b", 33, 33), ("b", 10, 12), ("b", 40, 41)]):
        ext = "png" if i % 2 else "jpg"
        p = root / f"split={split}" / f"{i}.{ext}"
        save(rgb(h, w, i), p)
        paths.append(p)
    return paths


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_fixed_shape_reads_keep_order_paths_and_partitions(tmp_path, fresh_data_context, num_workers, mode):
    paths = _image_tree(tmp_path)
    fresh_data_context.num_workers = num_workers
    fresh_data_context.target_max_block_size = 2 * 16 * 16 * 3  # two rows a block: blocks cut within a task
    ds = rd.read_images(str(tmp_path), size=(16, 16), mode=mode, include_paths=True, partitioning="hive",
                        override_num_blocks=2)
    rows = ds.take_all()
    assert [r["path"] for r in rows] == [str(p) for p in paths]
    assert [r["split"] for r in rows] == ["a", "a", "b", "b", "b"]
    for r, p in zip(rows, paths, strict=True):
        np.testing.assert_array_equal(r["image"], decode_image(p.read_bytes(), size=(16, 16), mode=mode))
    batches = list(ds.iter_batches(batch_size=None))
    assert sum(len(b["image"]) for b in batches) == 5
    assert all(b["image"].shape[1:] == ((16, 16, 3) if mode == "RGB" else (16, 16)) for b in batches)


def test_fixed_shape_task_rows_are_one_array_built_in_the_transfer_file(tmp_path):
    from fsspec.implementations.local import LocalFileSystem

    from torchray_loader.blocks import column_to_numpy
    from torchray_loader.execution import shm
    from torchray_loader.io.errors import ReadErrorPolicy
    from torchray_loader.io.paths import FileInfo, FileReadOptions, ReadUnit

    paths = _image_tree(tmp_path)
    units = tuple(ReadUnit(FileInfo(str(p))) for p in paths)
    kwargs = {"size": (320, 320), "mode": "RGB"}  # 5 x 300 KiB: big enough for a region of the file
    with shm.task_arena() as arena:
        (block,) = images_mod.read_fixed_images_task(
            units, LocalFileSystem(), images_mod.read_image_array, kwargs,
            options=FileReadOptions(), policy=ReadErrorPolicy(),
        )
        column = block.column("image")
        assert column.num_chunks == 1
        assert arena.span_of(memoryview(column.chunks[0].storage.values.buffers()[1])) is not None
        ref = shm.dumps_to_shm(block, arena=arena)
    assert ref.path is not None and os.path.exists(ref.path)  # the arena became the transfer file
    got = column_to_numpy(shm.loads_from_shm(ref).column("image"))
    want = np.stack([decode_image(p.read_bytes(), size=(320, 320), mode="RGB") for p in paths])
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_fixed_shape_reads_skip_and_name_bad_files(tmp_path, fresh_data_context, num_workers):
    fresh_data_context.num_workers = num_workers
    good = save(rgb(8, 8), tmp_path / "a.jpg")
    (tmp_path / "b.jpg").write_bytes(good[: len(good) // 2])  # truncated JPEG
    (tmp_path / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (tmp_path / "d.jpg").write_bytes(good)
    with pytest.raises(ReadError, match=r"b\.jpg: "):
        rd.read_images(str(tmp_path), size=(4, 4), mode="RGB").take_all()
    ds = rd.read_images(str(tmp_path), size=(4, 4), mode="RGB", on_read_error="skip", read_error_budget=2,
                        include_paths=True, override_num_blocks=1)
    rows = ds.take_all()
    assert [os.path.basename(r["path"]) for r in rows] == ["a.jpg", "d.jpg"]
    np.testing.assert_array_equal(rows[0]["image"], rows[1]["image"])
    assert [os.path.basename(s.path) for s in read_skips(ds)] == ["b.jpg", "c.png"]
    # A limit reaches the read: take(1) decodes a.jpg alone, never the corrupt b.jpg; take(2)
    # decodes past the skipped files to d.jpg.
    for size, mode in [((4, 4), "RGB"), (None, None)]:
        first = rd.read_images(str(tmp_path), size=size, mode=mode, include_paths=True, override_num_blocks=1)
        assert [os.path.basename(r["path"]) for r in first.take(1)] == ["a.jpg"]
    two = rd.read_images(str(tmp_path), size=(4, 4), mode="RGB", on_read_error="skip", read_error_budget=2,
                         include_paths=True, override_num_blocks=1).take(2)
    assert [os.path.basename(r["path"]) for r in two] == ["a.jpg", "d.jpg"]


def test_fixed_image_shape_only_where_size_and_mode_fix_it():
    assert images_mod.fixed_image_shape((4, 5), "RGB") == (4, 5, 3)
    assert images_mod.fixed_image_shape((4, 5), "L") == (4, 5)
    assert images_mod.fixed_image_shape((4, 5), None) is None  # gray files stay 2-D
    assert images_mod.fixed_image_shape((4, 5), "RGBA") is None
    assert images_mod.fixed_image_shape(None, "RGB") is None


def _resize_runs(root: pathlib.Path) -> list[pathlib.Path]:
    """JPEGs in runs of one size (resized in shared kernel calls), broken by other sizes, a gray
    JPEG, a PNG, one already at the target size and one corrupt JPEG (``f07.jpg``)."""
    specs = [(40, 36)] * 5 + [(50, 44)] * 2 + ["corrupt"] + [(40, 36)] * 3 + ["gray", "png", (24, 20)] + [(40, 36)] * 4
    paths = []
    for i, spec in enumerate(specs):
        p = root / f"f{i:02d}.{'png' if spec == 'png' else 'jpg'}"
        if spec == "corrupt":
            p.write_bytes(save(rgb(40, 36, i), p, quality=90)[:300])
        elif spec == "gray":
            save(rgb(40, 36, i)[..., 1], p, quality=90)
        elif spec == "png":
            save(rgb(30, 30, i), p)
        else:
            save(rgb(*spec, i), p, quality=90)
        paths.append(p)
    return paths


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("resize_batch", [3, images_mod.RESIZE_BATCH])
def test_resizes_sharing_kernel_calls_give_each_images_own_pixels(tmp_path, fresh_data_context, monkeypatch,
                                                                 num_workers, resize_batch):
    fresh_data_context.num_workers = num_workers
    monkeypatch.setattr(images_mod, "RESIZE_BATCH", resize_batch)  # batches fill up and flush mid-run
    paths = _resize_runs(tmp_path)
    good = [p for p in paths if p.name != "f07.jpg"]
    with pytest.raises(ReadError, match=r"f07\.jpg: "):
        rd.read_images(str(tmp_path), size=(24, 20), mode="RGB").take_all()
    ds = rd.read_images(str(tmp_path), size=(24, 20), mode="RGB", include_paths=True,
                        on_read_error="skip", read_error_budget=1, override_num_blocks=2)
    rows = ds.take_all()
    assert [r["path"] for r in rows] == [str(p) for p in good]
    for r, p in zip(rows, good, strict=True):
        np.testing.assert_array_equal(r["image"], decode_image(p.read_bytes(), size=(24, 20), mode="RGB"), err_msg=p.name)
    assert [os.path.basename(s.path) for s in read_skips(ds)] == ["f07.jpg"]
    assert [r["path"] for r in ds.limit(6).take_all()] == [str(p) for p in good[:6]]
