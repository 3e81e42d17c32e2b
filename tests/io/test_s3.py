"""Every format against a real S3 server (moto on 127.0.0.1): anonymous and authenticated reads, writes."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

import torchray_loader as rd
from torchray_loader.blocks import column_from_values
from torchray_loader.errors import ReadError
from torchray_loader.io.errors import MissingPathError, read_skips

pytestmark = pytest.mark.s3


@pytest.fixture(autouse=True)
def inline_reads(fresh_data_context):
    """Most S3 tests read inline: each worker process pays ~1 s to build its own S3 client, and what is
    tested here is the readers. ``test_reads_in_worker_processes`` covers S3 from forked workers."""
    fresh_data_context.num_workers = 0


def png_bytes(seed: int) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


@pytest.fixture(params=["anonymous", "authenticated"])
def url(request, s3):
    """``url(key)``: the key as an anonymous or an authenticated S3 URL."""
    return s3.anon_url if request.param == "anonymous" else s3.url


def test_every_format_reads_from_s3(s3, url):
    p = s3.prefix()
    table = pa.table({"x": [1, 2], "t": column_from_values(np.arange(8, dtype=np.float32).reshape(2, 2, 2))})
    s3.put(f"{p}/pq/a.parquet", parquet_bytes(table))
    s3.put(f"{p}/csv/a.csv", b"x,y\n1,a\n2,b\n")
    s3.put(f"{p}/json/a.jsonl", b'{"x": 1}\n{"x": 2}\n')
    s3.put(f"{p}/text/a.txt", b"hello\nworld\n")
    for i in range(3):
        s3.put(f"{p}/img/{i}.png", png_bytes(i))
    npy = io.BytesIO()
    np.save(npy, np.arange(6).reshape(3, 2))
    s3.put(f"{p}/npy/a.npy", npy.getvalue())
    s3.put(f"{p}/bin/a.bin", b"\x00\x01")

    back = rd.read_parquet(url(f"{p}/pq")).take_all()
    assert [r["x"] for r in back] == [1, 2]
    np.testing.assert_array_equal(back[1]["t"], np.arange(4, 8, dtype=np.float32).reshape(2, 2))
    assert rd.read_csv(url(f"{p}/csv/a.csv")).take_all() == [{"x": 1, "y": "a"}, {"x": 2, "y": "b"}]
    assert rd.read_json(url(f"{p}/json")).take_all() == [{"x": 1}, {"x": 2}]
    assert [r["text"] for r in rd.read_text(url(f"{p}/text")).take_all()] == ["hello", "world"]
    imgs = rd.read_images(url(f"{p}/img"), include_paths=True).take_all()
    assert [r["image"].shape for r in imgs] == [(32, 32, 3)] * 3
    assert [r["path"] for r in imgs] == [f"s3://{s3.bucket}/{p}/img/{i}.png" for i in range(3)]
    assert [r["data"].tolist() for r in rd.read_numpy(url(f"{p}/npy")).take_all()] == [[0, 1], [2, 3], [4, 5]]
    assert rd.read_binary_files(url(f"{p}/bin")).take_all() == [{"bytes": b"\x00\x01"}]


def test_globs_partitions_and_missing_paths(s3, url):
    p = s3.prefix()
    for part in ("a", "b"):
        s3.put(f"{p}/k={part}/x.csv", b"v\n1\n")
    s3.put(f"{p}/k=a/_SUCCESS", b"")
    rows = rd.read_csv(url(f"{p}")).take_all()
    assert rows == [{"v": 1, "k": "a"}, {"v": 1, "k": "b"}]
    assert len(rd.read_csv(url(f"{p}/k=*/*.csv")).take_all()) == 2
    with pytest.raises(MissingPathError, match="nope"):
        rd.read_csv(url(f"{p}/nope"))
    ds = rd.read_csv([url(f"{p}/nope"), url(f"{p}/k=a/x.csv")], ignore_missing_paths=True)
    assert ds.count() == 1


def test_corrupt_object_names_the_s3_path(s3):
    p = s3.prefix()
    s3.put(f"{p}/bad.parquet", b"PAR1 not really")
    with pytest.raises(ReadError, match=f"s3://{s3.bucket}/{p}/bad.parquet"):
        rd.read_parquet(s3.anon_url(f"{p}/bad.parquet")).take_all()


def test_parquet_count_and_column_projection_on_s3(s3, url):
    """count() from the footers (ranged reads without read-ahead), a projection by ranges; a corrupt
    object makes the count read the data, so it is named or skipped as by a read."""
    p = s3.prefix()
    tables = [pa.table({"a": np.arange(i, i + 5), "b": np.ones(5) * i}) for i in range(3)]
    for i, t in enumerate(tables):
        s3.put(f"{p}/pq/{i}.parquet", parquet_bytes(t))
    assert rd.read_parquet(url(f"{p}/pq")).count() == 15
    assert rd.read_parquet(url(f"{p}/pq"), columns=["b"]).take_all()[5:7] == [{"b": 1.0}, {"b": 1.0}]
    s3.put(f"{p}/pq/9.parquet", b"PAR1 not really")
    with pytest.raises(ReadError, match=f"s3://{s3.bucket}/{p}/pq/9.parquet"):
        rd.read_parquet(url(f"{p}/pq")).count()
    assert rd.read_parquet(url(f"{p}/pq"), on_read_error="skip", read_error_budget=1).count() == 15


def test_an_object_an_anonymous_reader_may_not_read_is_a_read_error(s3):
    """A private object under an anonymous URL: S3 refuses even its HEAD, while listing. It is named
    (raise) or skipped (skip) like any unreadable file; the readable one is still read."""
    p = s3.prefix()
    private = f"private-{p}"  # moto lets a public-read bucket's ACL open its objects: another bucket
    s3.client().create_bucket(Bucket=private)
    s3.client().put_object(Bucket=private, Key="b.csv", Body=b"id\n2\n")
    s3.put(f"{p}/a.csv", b"id\n1\n")
    both = [s3.anon_url(f"{p}/a.csv"), f"s3://anonymous@{private}/b.csv"]
    with pytest.raises(ReadError, match=rf"s3://{private}/b\.csv: "):
        rd.read_csv(both).take_all()
    ds = rd.read_csv(both, on_read_error="skip", read_error_budget=1)
    assert ds.take_all() == [{"id": 1}]
    assert [s.path for s in read_skips(ds)] == [f"s3://{private}/b.csv"]
    assert rd.read_csv(f"s3://{private}/b.csv").take_all() == [{"id": 2}]  # its owner reads it


@pytest.mark.parametrize("fmt", ["parquet", "csv", "json", "numpy"])
def test_write_to_s3_then_read_back(s3, fmt):
    p = s3.prefix()
    ds = rd.from_items([{"id": i, "v": float(i) / 2} for i in range(10)], override_num_blocks=2)
    target = s3.url(f"{p}/out")
    if fmt == "numpy":
        ds.write_numpy(target, column="v")
        back = [r["data"] for r in rd.read_numpy(target).take_all()]
        assert back == [r["v"] for r in ds.take_all()]
    else:
        getattr(ds, f"write_{fmt}")(target)
        back = getattr(rd, f"read_{fmt}")(target).take_all()
        assert back == ds.take_all()
    ext = {"numpy": "npy"}.get(fmt, fmt)
    # Exactly the final objects: no temporary (hidden) names left behind.
    assert s3.keys(f"{p}/") == [f"{p}/out/part-000000.{ext}", f"{p}/out/part-000001.{ext}"]


def test_tensor_parquet_round_trip_on_s3(s3):
    p = s3.prefix()
    data = np.random.default_rng(0).integers(0, 255, (6, 8, 8, 3), dtype=np.uint8)
    rd.from_numpy(data).write_parquet(s3.url(f"{p}/t"))
    ds = rd.read_parquet(s3.anon_url(f"{p}/t"))
    assert (
        str(ds.schema()) == "Column  Type\n------  ----\ndata    numpy.ndarray(shape=(8, 8, 3), dtype=uint8)"
    )
    np.testing.assert_array_equal(np.stack([r["data"] for r in ds.take_all()]), data)


def test_endpoint_can_come_from_an_explicit_filesystem(s3, monkeypatch):
    import s3fs

    p = s3.prefix()
    s3.put(f"{p}/a.jsonl", json.dumps({"x": 1}).encode() + b"\n")
    fs = s3fs.S3FileSystem(anon=True, endpoint_url=s3.endpoint)
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # the filesystem alone knows the server
    assert rd.read_json(f"s3://{s3.bucket}/{p}/a.jsonl", filesystem=fs).take_all() == [{"x": 1}]
    assert rd.read_json(f"{s3.bucket}/{p}/a.jsonl", filesystem=fs).take_all() == [{"x": 1}]


def test_reads_in_worker_processes(s3, fresh_data_context):
    fresh_data_context.num_workers = 2
    p = s3.prefix()
    for i in range(6):
        s3.put(f"{p}/{i:02d}.csv", f"x\n{i}\n".encode())
    ds = rd.read_csv(s3.anon_url(p), override_num_blocks=3)
    assert [r["x"] for r in ds.take_all()] == list(range(6))
    ds.write_parquet(s3.url(f"{p}/out"))
    assert rd.read_parquet(s3.url(f"{p}/out")).take_all() == [{"x": i} for i in range(6)]


def test_large_text_and_csv_objects_are_read_as_streams(s3, url, monkeypatch):
    """Objects of STREAM_MIN_BYTES or more are read in ranges as they are parsed: same rows."""
    import gzip

    from torchray_loader.io import paths

    p = s3.prefix()
    csv = "id,name\n" + "".join(f"{i},n{i}\n" for i in range(3000))
    s3.put(f"{p}/csv/a.csv", csv.encode())
    s3.put(f"{p}/text/a.txt.gz", gzip.compress(csv.encode()))
    whole_csv = rd.read_csv(url(f"{p}/csv")).take_all()
    whole_text = rd.read_text(url(f"{p}/text")).take_all()
    monkeypatch.setattr(paths, "STREAM_MIN_BYTES", 1024)
    monkeypatch.setattr(paths, "STREAM_CHUNK_BYTES", 4000)
    assert rd.read_csv(url(f"{p}/csv")).take_all() == whole_csv
    assert rd.read_text(url(f"{p}/text")).take_all() == whole_text
    assert len(whole_csv) == 3000 and len(whole_text) == 3001
