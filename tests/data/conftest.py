"""Fixtures shared by the data tests."""

import pytest
import torch

from lightning_sdm.codecs import EncodecCodec
from tests.data.gcs_fixtures import gcs  # noqa: F401 - a GCS server on 127.0.0.1
from tests.data.s3_fixtures import s3  # noqa: F401 - an S3 server on 127.0.0.1


@pytest.fixture(scope="module")
def codec_dir(tmp_path_factory):
    """One saved random codec: a fresh random codec per run would be another codec."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("codec")
    EncodecCodec().save_pretrained(path)
    return str(path)


@pytest.fixture(params=["s3", "gs"])
def bucket(request):
    """A fresh bucket server of each kind (moto's S3, the GCS emulator): (filesystem, the
    scheme of its URLs)."""
    server = request.getfixturevalue("s3" if request.param == "s3" else "gcs")
    return server, request.param
