"""Fixtures shared by the data tests."""

from tests.data.s3_fixtures import s3  # noqa: F401 - an S3 server on 127.0.0.1
