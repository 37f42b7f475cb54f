"""A GCS-compatible server (gcp-storage-emulator's, pure Python) on 127.0.0.1, started and
stopped by the tests, with STORAGE_EMULATOR_HOST pointing gcsfs at it."""

from __future__ import annotations

import pytest

from tests.data.s3_fixtures import free_port


@pytest.fixture
def gcs(monkeypatch):
    """A fresh, empty GCS server; yields a gcsfs filesystem on it (anonymous, as gcsfs
    talks to an emulator)."""
    emulator = pytest.importorskip(
        "gcp_storage_emulator.server", reason="the GCS tests need gcp-storage-emulator"
    )
    # gcsfs's default filesystem first asks Storage Control over gRPC for the bucket type,
    # which no emulator answers (a 60 s timeout per bucket): use its plain one.
    monkeypatch.setenv("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    gcsfs = pytest.importorskip("gcsfs", reason="the GCS tests need gcsfs")
    port = free_port()
    server = emulator.create_server("127.0.0.1", port, in_memory=True)
    server.start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    gcsfs.GCSFileSystem.clear_instance_cache()  # a cached client would call the last server
    try:
        yield gcsfs.GCSFileSystem()
    finally:
        gcsfs.GCSFileSystem.clear_instance_cache()
        server.stop()
