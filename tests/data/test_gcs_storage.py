"""A GCS bucket's own failures (a real GCS-compatible server on 127.0.0.1): a missing
bucket to write to, refused credentials, in one line. Reading, tokenizing and a wrong
bucket to read are the bucket tests of test_bucket_shards and test_bucket_tokenize, which
run against both S3 and GCS."""

import pytest

from lightning_sdm.cli import main
from lightning_sdm.data.datamodule import TokenShardsDataModule
from lightning_sdm.errors import UserInputError
from tests.data.http_fixtures import RefusingServer
from tests.data.test_bucket_tokenize import tokenize_argv, write_clips


def test_tokenize_into_a_missing_gcs_bucket_is_one_line(gcs, codec_dir, tmp_path, capsys):
    write_clips(tmp_path / "audio", 1)
    assert main(tokenize_argv(tmp_path / "audio", "gs://nobucket/tokens", codec_dir)) == 2
    said = capsys.readouterr().err
    assert "the output gs://nobucket/tokens cannot be written: no such bucket" in said


@pytest.mark.parametrize(
    ("status", "message"),
    [(401, "no credentials accepted (set GOOGLE_APPLICATION_CREDENTIALS"),
     (403, "access denied with the credentials found")],
)  # fmt: skip
def test_refused_gcs_credentials_are_one_line_and_not_retried(gcs, monkeypatch, status, message):
    import gcsfs

    with RefusingServer(status) as server:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
        gcsfs.GCSFileSystem.clear_instance_cache()
        with pytest.raises(UserInputError) as error:
            TokenShardsDataModule("gs://music/tokens").setup("fit")
    said = str(error.value)
    assert said.startswith(f"data.train_dir gs://music/tokens cannot be read: {message}")
    assert "\n" not in said
    assert sum(server.answered.values()) == 1, server.answered  # asked once, not retried
