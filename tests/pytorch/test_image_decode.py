"""``read_images(..., decode_on_device=True)``: the workers read, the consumer decodes on its device.

The CPU tests run the whole path with ``device="cpu"`` (libjpeg-turbo in the consumer), where the
pixels must equal the workers' decode; the ``cuda`` tests (skipped without CUDA) run nvjpeg.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch
from PIL import Image

import torchray_loader as rd
from torchray_loader.errors import ReadError
from torchray_loader.io.images import DeviceDecode
from torchray_loader.pytorch.device import DeviceFeeder
from torchray_loader.pytorch.image_decode import DeviceImageDecoder

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture
def decoded(monkeypatch) -> list[int]:
    """The row count of each batch the consumer decoded (DeviceImageDecoder calls)."""
    counts: list[int] = []
    call = DeviceImageDecoder.__call__

    def counted(self, batch):
        counts.append(len(batch["image"]))
        return call(self, batch)

    monkeypatch.setattr(DeviceImageDecoder, "__call__", counted)
    return counts


def rgb(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x * y + 40 * seed) % 256], axis=-1)
    return np.clip(base + rng.integers(-8, 8, base.shape), 0, 255).astype(np.uint8)


def smooth_rgb(h: int, w: int, seed: int) -> np.ndarray:
    """Like a photo: colours change gradually (no edge in the chroma planes)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) * 255 // (h + w)], axis=-1)
    return np.clip(base + rng.integers(-3, 4, base.shape), 0, 255).astype(np.uint8)


def jpeg_tree(root: pathlib.Path, sizes: list[tuple[int, int]], pixels=rgb) -> list[pathlib.Path]:
    """JPEGs under ``split=a`` / ``split=b`` (hive partitions), in the order a listing gives them."""
    paths = []
    for i, (h, w) in enumerate(sizes):
        p = root / f"split={'ab'[i % 2]}" / f"{i:03d}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels(h, w, i)).save(p, quality=90)
        paths.append(p)
    return sorted(paths)


def as_list(images) -> list[np.ndarray]:
    return [t.numpy() for t in images] if isinstance(images, list) else list(images.numpy())


def assert_same_batches(got: list[dict], want: list[dict], *, tolerance: int = 0) -> None:
    assert [list(b) for b in got] == [list(b) for b in want]
    for g, w in zip(got, want, strict=True):
        for name in w:
            if name == "image":
                for gi, wi in zip(as_list(g[name]), as_list(w[name]), strict=True):
                    assert gi.shape == wi.shape and gi.dtype == wi.dtype
                    assert np.abs(gi.astype(int) - wi.astype(int)).max() <= tolerance
            else:
                assert g[name] == w[name] if isinstance(w[name], list) else torch.equal(g[name], w[name])


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("shuffle", [False, True])
def test_cpu_decode_gives_the_workers_batches(tmp_path, fresh_data_context, no_leaks, decoded, num_workers, shuffle):
    jpeg_tree(tmp_path, [(40, 48)] * 7 + [(64, 30)] * 6)
    fresh_data_context.num_workers = num_workers
    kw = {"size": (24, 32), "mode": "RGB", "include_paths": True, "partitioning": "hive", "override_num_blocks": 3}
    it = {"batch_size": 4, "local_shuffle_buffer_size": 6 if shuffle else None, "local_shuffle_seed": 3}
    want = list(rd.read_images(str(tmp_path), **kw).iter_torch_batches(**it))
    got = list(rd.read_images(str(tmp_path), decode_on_device=True, **kw).iter_torch_batches(device="cpu", **it))
    assert sum(len(b["path"]) for b in got) == 13 and decoded == [len(b["path"]) for b in got]
    assert_same_batches(got, want)
    assert all(b["image"].is_contiguous() and b["image"].shape[1:] == (24, 32, 3) for b in got)


def test_a_remote_filesystem_reads_the_same_bytes(fresh_data_context, decoded):
    import io

    import fsspec

    fs = fsspec.filesystem("memory")
    for i in range(3):
        buf = io.BytesIO()
        Image.fromarray(rgb(20, 20, i)).save(buf, "JPEG")
        fs.pipe(f"/trl-decode-test/{i}.jpg", buf.getvalue())
    try:
        kw = {"size": (12, 12), "mode": "RGB", "include_paths": True}
        want = list(rd.read_images("memory://trl-decode-test", **kw).iter_torch_batches(batch_size=2))
        ds = rd.read_images("memory://trl-decode-test", decode_on_device=True, **kw)
        assert_same_batches(list(ds.iter_torch_batches(batch_size=2, device="cpu")), want)
        assert sum(decoded) == 3
    finally:
        fs.rm("/trl-decode-test", recursive=True)


def test_file_shuffle_reads_the_same_order_in_both_plans(tmp_path, fresh_data_context):
    jpeg_tree(tmp_path, [(16, 16)] * 9)
    ds = rd.read_images(str(tmp_path), mode="RGB", include_paths=True, shuffle="files", decode_on_device=True)
    workers = [p for b in ds.iter_torch_batches(batch_size=4) for p in b["path"]]
    consumer = [p for b in ds.iter_torch_batches(batch_size=4, device="cpu") for p in b["path"]]
    assert consumer == workers and workers != sorted(workers)


def test_shards_decode_their_own_files_once(tmp_path, fresh_data_context, decoded):
    paths = jpeg_tree(tmp_path, [(16, 16)] * 10)
    ds = rd.read_images(str(tmp_path), size=(8, 8), mode="RGB", include_paths=True, override_num_blocks=5,
                        decode_on_device=True)
    shards = [[p for b in it.iter_torch_batches(batch_size=3, device="cpu") for p in b["path"]]
              for it in ds.streaming_split(2)]
    assert all(shards) and sorted(shards[0] + shards[1]) == [str(p) for p in paths] and sum(decoded) == 10


@pytest.mark.parametrize("num_workers", [0, 2])
def test_block_order_shuffles_limits_and_the_loader_decode_on_the_device(tmp_path, fresh_data_context, decoded,
                                                                          num_workers):
    jpeg_tree(tmp_path, [(16, 16)] * 11)
    fresh_data_context.num_workers = num_workers
    kw = {"size": (12, 12), "mode": "RGB", "include_paths": True, "override_num_blocks": 6}
    plain, on_device = (rd.read_images(str(tmp_path), decode_on_device=flag, **kw) for flag in (False, True))
    for make, rows in ((lambda ds: ds.randomize_block_order(seed=5), 11), (lambda ds: ds.limit(7), 7)):
        want = list(make(plain).iter_torch_batches(batch_size=3))
        decoded.clear()
        assert_same_batches(list(make(on_device).iter_torch_batches(batch_size=3, device="cpu")), want)
        assert sum(decoded) == rows
    loaders = [rd.RayStyleLoader(ds, batch_size=4, shuffle=True, seed=1, device="cpu") for ds in (plain, on_device)]
    want = list(loaders[0])
    decoded.clear()
    assert_same_batches(list(loaders[1]), want)
    assert sum(decoded) == 11


def test_paths_are_dropped_unless_asked_and_dtypes_cast_the_images(tmp_path, fresh_data_context):
    jpeg_tree(tmp_path, [(20, 20)] * 3)
    ds = rd.read_images(str(tmp_path), size=(16, 16), mode="L", decode_on_device=True)
    (batch,) = ds.iter_torch_batches(batch_size=8, device="cpu", dtypes={"image": torch.float32})
    assert list(batch) == ["image"] and batch["image"].shape == (3, 16, 16) and batch["image"].dtype == torch.float32
    # L decodes the JPEG's luma plane: within a few levels of PIL's RGB -> L
    (want,) = rd.read_images(str(tmp_path), size=(16, 16), mode="L").iter_torch_batches(batch_size=8)
    assert (batch["image"] - want["image"].float()).abs().max() <= 3


def test_without_size_a_batch_of_mixed_shapes_is_a_list(tmp_path, fresh_data_context):
    jpeg_tree(tmp_path, [(20, 24), (31, 17), (20, 24)])  # listed: a/000, a/002, b/001
    ds = rd.read_images(str(tmp_path), mode="RGB", decode_on_device=True)
    first, second = ds.iter_torch_batches(batch_size=2, device="cpu")
    assert isinstance(first["image"], torch.Tensor) and first["image"].shape == (2, 20, 24, 3)
    (want,) = rd.read_images(str(tmp_path), mode="RGB").iter_torch_batches(batch_size=3)
    got = as_list(first["image"]) + as_list(second["image"])
    for g, w in zip(got, as_list(want["image"]), strict=True):
        np.testing.assert_array_equal(g, w)


def test_every_other_use_decodes_in_the_workers(tmp_path, fresh_data_context, decoded):
    jpeg_tree(tmp_path, [(12, 12)] * 4)
    ds = rd.read_images(str(tmp_path), size=(8, 8), mode="RGB", decode_on_device=True)
    assert ds.take(1)[0]["image"].shape == (8, 8, 3)
    assert next(iter(ds.iter_batches(batch_size=2)))["image"].shape == (2, 8, 8, 3)
    assert next(iter(ds.iter_torch_batches(batch_size=2)))["image"].shape == (2, 8, 8, 3)
    mapped = ds.map(lambda row: {"mean": float(row["image"].mean())})
    assert len(list(mapped.iter_torch_batches(batch_size=2, device="cpu"))) == 2
    assert next(iter(ds.iter_torch_batches(batch_size=2, device="cpu", collate_fn=lambda b: b)))["image"].shape == (
        2, 8, 8, 3)
    assert decoded == []


def test_a_corrupt_jpeg_is_a_read_error_naming_it(tmp_path, fresh_data_context):
    paths = jpeg_tree(tmp_path, [(12, 12)] * 3)
    paths[1].write_bytes(paths[1].read_bytes()[:40])
    ds = rd.read_images(str(tmp_path), size=(8, 8), mode="RGB", decode_on_device=True)
    with pytest.raises(ReadError, match=paths[1].name) as info:
        list(ds.iter_torch_batches(batch_size=3, device="cpu"))
    assert info.value.path == str(paths[1])


def test_arguments_it_cannot_honour_are_refused(tmp_path, fresh_data_context):
    jpeg_tree(tmp_path, [(12, 12)])
    Image.fromarray(rgb(8, 8, 0)).save(tmp_path / "x.png")
    root = str(tmp_path)
    with pytest.raises(ValueError, match="mode='RGB' or mode='L'"):
        rd.read_images(root, decode_on_device=True)
    with pytest.raises(ValueError, match="on_read_error='raise'"):
        rd.read_images(root, mode="RGB", on_read_error="skip", decode_on_device=True)
    with pytest.raises(ValueError, match="x.png"):  # the default extensions include PNG: not silently left out
        rd.read_images(root, mode="RGB", decode_on_device=True)
    with pytest.raises(TypeError, match="decode_on_device"):
        rd.read_images(root, mode="RGB", decode_on_device="yes")
    assert rd.read_images(root, mode="RGB", file_extensions=["jpg"], decode_on_device=True).count() == 1


def test_the_feeder_applies_the_decoder_after_its_own_work():
    calls = []

    def tag(batch):
        calls.append(batch)
        return {**batch, "y": batch["x"] + 1}

    out = list(DeviceFeeder("cpu", pin_memory=False, batch_fn=tag).transfer([{"x": torch.zeros(2)}]))
    assert len(calls) == 1 and torch.equal(out[0]["y"], torch.ones(2))
    assert not out[0]["y"].is_pinned() if torch.cuda.is_available() else True


def test_the_decoder_keeps_rows_in_order(tmp_path):
    paths = jpeg_tree(tmp_path, [(9, 9), (9, 9), (9, 9)])
    decode = DeviceImageDecoder(torch.device("cpu"), DeviceDecode(None, "RGB", True))
    out = decode({"image": [p.read_bytes() for p in paths], "path": [str(p) for p in paths]})
    assert out["path"] == [str(p) for p in paths]
    for got, p in zip(out["image"], paths, strict=True):
        np.testing.assert_array_equal(got.numpy(), np.asarray(Image.open(p).convert("RGB")))


@needs_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("num_workers", [0, 2])
def test_cuda_decode_puts_the_workers_batches_on_the_gpu(tmp_path, fresh_data_context, num_workers):
    # nvjpeg upsamples chroma without libjpeg-turbo's smoothing, so at a sharp colour edge (``rgb``'s
    # wrapping blue) a pixel differs by tens of levels (32 seen on an H200); on photo-like images by a few.
    jpeg_tree(tmp_path, [(40, 48)] * 5 + [(64, 30)] * 4, pixels=smooth_rgb)
    fresh_data_context.num_workers = num_workers
    kw = {"size": (24, 32), "mode": "RGB", "include_paths": True}
    want = list(rd.read_images(str(tmp_path), **kw).iter_torch_batches(batch_size=4))
    ds = rd.read_images(str(tmp_path), decode_on_device=True, **kw)
    got = list(ds.iter_torch_batches(batch_size=4, device="cuda", pin_memory=True))
    assert all(b["image"].is_cuda and b["image"].dtype == torch.uint8 for b in got)
    cpu = [{**b, "image": b["image"].cpu()} for b in got]
    assert_same_batches(cpu, want, tolerance=8)
    assert float(torch.cat([b["image"].float() for b in got]).mean()) == pytest.approx(
        float(torch.cat([b["image"].float() for b in want]).mean()), abs=1.0)


@needs_cuda
@pytest.mark.cuda
def test_cuda_decode_names_a_corrupt_file(tmp_path, fresh_data_context):
    paths = jpeg_tree(tmp_path, [(12, 12)] * 3)
    paths[2].write_bytes(b"\xff\xd8\xff" + b"\x00" * 30)
    ds = rd.read_images(str(tmp_path), mode="RGB", decode_on_device=True)
    with pytest.raises(ReadError, match=paths[2].name):
        list(ds.iter_torch_batches(batch_size=3, device="cuda"))


def test_the_cuda_branch_decodes_a_batch_in_one_call_and_names_a_bad_file(tmp_path):
    """The decoder's CUDA branch, with nvjpeg replaced by the CPU kernel (runs without a GPU)."""
    paths = jpeg_tree(tmp_path, [(9, 9)] * 3)
    decode = DeviceImageDecoder(torch.device("cpu"), DeviceDecode((6, 6), "RGB", False))
    calls = []

    def fake_nvjpeg(tensors, mode, device):
        calls.append(len(tensors))
        return [decode._decode_one(t, mode) for t in tensors]

    decode.device, decode._decode_many_cuda = torch.device("cuda"), fake_nvjpeg
    out = decode({"image": [p.read_bytes() for p in paths], "path": [str(p) for p in paths]})
    assert calls == [3] and out["image"].shape == (3, 6, 6, 3)
    data = [p.read_bytes() for p in paths]
    data[1] = data[1][:30]
    with pytest.raises(ReadError, match=paths[1].name):
        decode({"image": data, "path": [str(p) for p in paths]})

    def out_of_memory(tensors, mode, device):
        if len(tensors) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return fake_nvjpeg(tensors, mode, device)

    decode._decode_many_cuda = out_of_memory  # a batch-wide failure is not blamed on a file
    with pytest.raises(torch.OutOfMemoryError):
        decode({"image": [p.read_bytes() for p in paths], "path": [str(p) for p in paths]})
