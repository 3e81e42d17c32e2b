"""A real S3 server for tests: moto in server mode on 127.0.0.1, started once per test session.

Import the fixtures into a test module or conftest (``from conftest_s3 import s3, s3_server``).
``s3_server`` (session) starts ``moto.server.ThreadedMotoServer`` on a free loopback port and creates
the bucket :data:`BUCKET` with a public-read ACL. ``s3`` (per test) points the AWS environment
(``AWS_ENDPOINT_URL``, fake credentials, no config files, no proxy for loopback) at it with
``monkeypatch``, so only the tests that ask for it see S3, and nothing ever leaves loopback.
Objects uploaded with :meth:`S3.upload_dir` / :meth:`S3.put` are public-read, as anonymous reads
(``s3://anonymous@bucket/...``) need on real S3.
"""

from __future__ import annotations

import logging
import os
import pathlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

BUCKET = "torchray-test"

_FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/nonexistent/torchray-aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/torchray-aws-credentials",
}


def _no_proxy(value: str | None) -> str:
    hosts = [h for h in (value or "").split(",") if h]
    return ",".join(hosts + [h for h in ("127.0.0.1", "localhost") if h not in hosts])


@dataclass
class S3:
    """Handle on the test server: endpoint, a boto3 client and upload helpers."""

    endpoint: str
    bucket: str

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )

    def prefix(self) -> str:
        """A fresh key prefix, so tests never see each other's objects."""
        return f"t-{uuid.uuid4().hex[:10]}"

    def put(self, key: str, body: bytes) -> None:
        self.client().put_object(Bucket=self.bucket, Key=key, Body=body, ACL="public-read")

    def upload_dir(self, local: pathlib.Path, prefix: str) -> None:
        """Upload every file under ``local`` to ``prefix/<relative path>``, public-read."""
        client = self.client()
        for path in sorted(p for p in pathlib.Path(local).rglob("*") if p.is_file()):
            key = f"{prefix}/{path.relative_to(local).as_posix()}"
            client.put_object(Bucket=self.bucket, Key=key, Body=path.read_bytes(), ACL="public-read")

    def keys(self, prefix: str) -> list[str]:
        resp = self.client().list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return sorted(o["Key"] for o in resp.get("Contents", []))

    def anon_url(self, key: str) -> str:
        return f"s3://anonymous@{self.bucket}/{key}"

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3]:
    """Start moto's S3 server on loopback for the whole session; create the public test bucket."""
    pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no request log on stderr
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        handle = S3(endpoint=f"http://{host}:{port}", bucket=BUCKET)
        with pytest.MonkeyPatch.context() as mp:  # creating the bucket must not need real config
            for k, v in _FAKE_ENV.items():
                mp.setenv(k, v)
            handle.client().create_bucket(Bucket=BUCKET, ACL="public-read")
        yield handle
    finally:
        server.stop()


@pytest.fixture
def s3(s3_server: S3, monkeypatch: pytest.MonkeyPatch) -> S3:
    """The S3 server, with this test's AWS environment pointed at it (undone after the test)."""
    for k, v in _FAKE_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(var, _no_proxy(os.environ.get(var)))
    return s3_server
