"""An S3-compatible server (moto's) on 127.0.0.1, started and stopped by the tests, with
the usual environment variables pointing the AWS clients at it."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def s3(monkeypatch):
    """A fresh S3 server; yields an s3fs filesystem on it (credentials: moto's test ones)."""
    moto_server = pytest.importorskip("moto.server", reason="the S3 tests need moto[server]")
    s3fs = pytest.importorskip("s3fs", reason="the S3 tests need s3fs")
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    # moto keeps its buckets per process, not per server: start each test empty
    reset = urllib.request.Request(f"http://127.0.0.1:{port}/moto-api/reset", method="POST")
    urllib.request.urlopen(reset, timeout=10).close()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    s3fs.S3FileSystem.clear_instance_cache()  # a cached client would call the last server
    try:
        yield s3fs.S3FileSystem()
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()


def upload(fs, folder: Path, url: str) -> str:
    """Every file of `folder` to `url` (s3:// or gs://bucket/prefix); the bucket is made."""
    bucket = url.partition("://")[2].split("/")[0]
    if not fs.exists(bucket):
        fs.mkdir(bucket)
    for path in sorted(folder.iterdir()):
        if path.is_file():
            fs.put_file(str(path), f"{url.rstrip('/')}/{path.name}")
    return url
