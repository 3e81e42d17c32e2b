"""Fixtures for the file source/sink tests: the moto S3 server (see ``tests/conftest_s3.py``)."""

from __future__ import annotations

from conftest_s3 import s3, s3_server  # noqa: F401 - fixtures
