"""Where a folder of shards lives: a local directory, a URL (s3://, gs://, http(s)://), or
a `pipe:` command that prints a file named by `{}` (WebDataset's convention, e.g.
`pipe:aws s3 cp s3://bucket/shards/{} -`).

fsspec owns the protocols (s3fs and gcsfs for buckets, aiohttp for HTTP); this module only
joins names onto a location, retries transient failures with backoff, and turns a failure
into one line that says which: no such location, no index, no credentials, the server's
answer. Credentials come from the usual places (environment variables, profiles, instance
roles); nothing here stores or prints them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar

from lightning_sdm.errors import UserInputError, first_line

# URL schemes read through fsspec, and the package that brings each one's filesystem.
REMOTE_SCHEMES = {
    "s3": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "http": "aiohttp",
    "https": "aiohttp",
}
# Transient failures are retried this many times, waiting BACKOFF_SECONDS * 2**attempt.
RETRIES = 3
BACKOFF_SECONDS = 0.5

Result = TypeVar("Result")


# A location read through a shell command: PIPE_PREFIX + a command with {} for the name.
PIPE_PREFIX = "pipe:"


def is_url(location: str | Path) -> bool:
    """A URL with a remote scheme or a pipe: command (a plain path is neither)."""
    if str(location).startswith(PIPE_PREFIX):
        return True
    scheme, separator, _ = str(location).partition("://")
    return bool(separator) and scheme.lower() in REMOTE_SCHEMES


def _missing_package(scheme: str) -> str:
    package = REMOTE_SCHEMES[scheme]
    return f"{scheme}:// needs the {package} package: pip install 'lightning_sdm[remote]'"


def _http_status(error: BaseException) -> int | None:
    """The HTTP status a storage client's error carries (gcsfs: `.code`, or `.status`
    where `.code` is deprecated), if any."""
    for name in ("status", "code"):
        value = getattr(error, name, None)
        if isinstance(value, int):
            return value
    return None


def _refused(error: BaseException) -> bool:
    """Credentials missing or refused, as a GCS client reports it: 401, or an OSError
    that says Forbidden (gcsfs's 403)."""
    return _http_status(error) in (401, 403) or (
        type(error) is OSError and str(error).startswith("Forbidden")
    )


def _permanent(error: BaseException) -> bool:
    """Failures a retry cannot cure: absent files, refused credentials, missing packages."""
    if isinstance(error, (FileNotFoundError, PermissionError, ImportError, UserInputError)):
        return True
    if _refused(error):
        return True
    name = type(error).__name__
    return name in {"NoCredentialsError", "PartialCredentialsError", "NoSuchBucket"}


def why(error: BaseException) -> str:
    """A failure in a few words, without the stack (and without any credential)."""
    name = type(error).__name__
    if name in {"NoCredentialsError", "PartialCredentialsError"}:
        return "no credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE)"
    if _http_status(error) == 401:
        return (
            "no credentials accepted (set GOOGLE_APPLICATION_CREDENTIALS, or run "
            "gcloud auth application-default login)"
        )
    if isinstance(error, PermissionError) or _refused(error):
        return "access denied with the credentials found"
    text = first_line(error)
    if "NoSuchBucket" in text or "bucket does not exist" in text.lower():
        return "no such bucket"
    if isinstance(error, FileNotFoundError):
        return "not found"
    return f"{name}: {text}" if text else name


def with_retries(
    action: Callable[[], Result],
    what: str,
    retries: int | None = None,
    backoff: float | None = None,
    on_retry: Callable[[int, BaseException], None] | None = None,
) -> Result:
    """`action()`, tried again after transient failures (connection drops, 5xx answers);
    RETRIES times, BACKOFF_SECONDS apart and doubling, unless told otherwise. Each retry is
    said on stderr (`on_retry` replaces that): a client's own retries can take ten seconds
    an attempt, and an unreachable bucket should not look like a hung command."""
    retries = RETRIES if retries is None else retries
    backoff = BACKOFF_SECONDS if backoff is None else backoff
    for attempt in range(retries + 1):
        try:
            return action()
        except Exception as error:  # storage clients raise many types; classified below
            if _permanent(error) or attempt == retries:
                raise
            delay = backoff * 2**attempt
            if on_retry is not None:
                on_retry(attempt, error)
            else:
                print(
                    f"{what}: {why(error)}; trying again in {delay:g} s "
                    f"(retry {attempt + 1} of {retries})",
                    file=sys.stderr,
                    flush=True,
                )
            time.sleep(delay)
    raise AssertionError(f"unreachable: {what}")


class CommandOutput:
    """A shell command's stdout as a binary stream. Closing it waits for the command and
    raises when it failed, so output cut short by a failure is not taken for a whole file."""

    def __init__(self, command: str) -> None:
        self.command = command
        # stderr to a file: a pipe could fill and stall the command; closed in close()
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self.process = subprocess.Popen(
            command, shell=True, stdout=subprocess.PIPE, stderr=self._stderr
        )

    def read(self, size: int = -1) -> bytes:
        assert self.process.stdout is not None
        return self.process.stdout.read(size)

    def close(self) -> None:
        assert self.process.stdout is not None
        self.process.stdout.close()
        code = self.process.wait()
        self._stderr.seek(0)
        said = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
        self._stderr.close()
        if code:
            last = f": {said[-1]}" if said else ""
            raise OSError(f"`{self.command}` exited with {code}{last}")

    def __enter__(self) -> CommandOutput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _command_bytes(command: str) -> bytes:
    with CommandOutput(command) as output:
        return output.read()


class ShardLocation:
    """A folder of shards by name: `path(name)`, `exists`, `read_json`, `open`."""

    def __init__(self, location: str | Path) -> None:
        self.location = str(location).rstrip("/") if is_url(location) else str(location)
        self.remote = is_url(self.location)
        self.pipe = self.location.startswith(PIPE_PREFIX)
        self.scheme = self.location.partition("://")[0].lower() if self.remote else "file"
        if self.pipe:
            self.scheme = "pipe"
            if "{}" not in self.location:
                raise UserInputError(
                    f"{self.location}: a pipe: location names each file with {{}}, e.g. "
                    "pipe:aws s3 cp s3://bucket/shards/{} -"
                )
        self._fs: Any = None

    def __str__(self) -> str:
        return self.location

    def same_as(self, other: ShardLocation) -> bool:
        """Whether both name one folder (a local one however it is spelled or linked)."""
        if self.remote or other.remote:
            return self.location == other.location
        return Path(self.location).resolve() == Path(other.location).resolve()

    @property
    def fs(self) -> Any:
        """The fsspec filesystem of a URL (made on first use, so a local folder needs none)."""
        if self._fs is None:
            import fsspec

            try:
                self._fs = fsspec.filesystem(self.scheme)
            except ImportError as error:
                raise UserInputError(_missing_package(self.scheme)) from error
        return self._fs

    def path(self, name: str) -> str:
        if self.pipe:
            return self.location.replace("{}", name)
        return f"{self.location}/{name}" if self.remote else str(Path(self.location) / name)

    def exists(self, name: str) -> bool:
        if not self.remote:
            return Path(self.path(name)).exists()
        if self.pipe:
            try:
                self.read_bytes(name)
            except OSError:
                return False
            return True
        try:
            return bool(with_retries(lambda: self.fs.exists(self.path(name)), self.path(name)))
        except FileNotFoundError:
            return False

    def read_bytes(self, name: str) -> bytes:
        if not self.remote:
            return Path(self.path(name)).read_bytes()
        if self.pipe:
            command = self.path(name).removeprefix(PIPE_PREFIX)
            # Named by the file, not the command, which may hold a token.
            return with_retries(lambda: _command_bytes(command), name)
        return with_retries(lambda: self.fs.cat_file(self.path(name)), self.path(name))

    def read_json(self, name: str) -> Any:
        return json.loads(self.read_bytes(name).decode("utf-8"))

    def open(self, name: str) -> IO[bytes]:
        """A binary stream of one file (remote: read in blocks as it is consumed)."""
        if not self.remote:
            return open(self.path(name), "rb")
        if self.pipe:
            return CommandOutput(self.path(name).removeprefix(PIPE_PREFIX))  # type: ignore[return-value]
        # HTTP: one streamed GET (block_size 0) instead of range requests, which plain
        # servers do not answer; buckets read in ranged blocks as fsspec does.
        options = {"block_size": 0} if self.scheme in ("http", "https") else {}
        return with_retries(lambda: self.fs.open(self.path(name), "rb", **options), self.path(name))

    def names(self, pattern: str) -> list[str]:
        """Names of the files matching `pattern` (e.g. shard-*.json), sorted."""
        if not self.remote:
            return sorted(p.name for p in Path(self.location).glob(pattern))
        if self.pipe:
            raise UserInputError(f"{self.location} cannot be listed (a pipe: reads named files)")
        found = with_retries(lambda: self.fs.glob(self.path(pattern)), self.path(pattern))
        return sorted(str(p).rsplit("/", 1)[-1] for p in found)

    def upload(self, local: Path, name: str) -> None:
        """A local file to `name` here: whole or not at all (an object store writes an
        object in one piece)."""
        with_retries(lambda: self.fs.put_file(str(local), self.path(name)), self.path(name))

    def write_bytes(self, name: str, data: bytes) -> None:
        with_retries(lambda: self.fs.pipe_file(self.path(name), data), self.path(name))

    def delete(self, name: str) -> None:
        with_retries(lambda: self.fs.rm_file(self.path(name)), self.path(name))

    def writable_problem(self) -> str | None:
        """Why shards cannot be written here (None: a probe object was written and removed)."""
        if self.scheme in ("http", "https", "pipe"):
            kind = "HTTP" if self.scheme != "pipe" else "a pipe: command"
            return f"is read-only ({kind}): write shards to a bucket (s3://, gs://) or a folder"
        probe = f".write-test-{uuid.uuid4().hex}"
        try:
            self.write_bytes(probe, b"")
            self.delete(probe)
        except UserInputError as error:
            return str(error)
        except Exception as error:  # one line whatever the client raised
            return f"cannot be written: {self._why(error)}"
        return None

    def problem(self, index_name: str) -> str | None:
        """Why this location cannot be read as a shard folder (None: its index is there)."""
        try:
            self.read_bytes(index_name)
        except UserInputError as error:
            return str(error)
        except Exception as error:  # one line whatever the client raised
            reason = self._why(error)
            if reason == "not found":
                return f"has no {index_name} (not a folder of tokenize's shards, or a wrong URL)"
            return f"cannot be read: {reason}"
        return None

    def _why(self, error: BaseException) -> str:
        """`why(error)`, with a plain "not found" told apart from a missing bucket."""
        reason = why(error)
        if reason == "not found" and not self._bucket_exists():
            return "no such bucket"
        return reason

    def _bucket_exists(self) -> bool:
        """Whether a bucket URL's bucket is there (GCS answers a missing bucket's object as
        a plain 404); True for other locations, which have no bucket to miss."""
        if self.scheme not in ("s3", "gs", "gcs"):
            return True
        bucket = self.location.partition("://")[2].split("/")[0]
        try:
            return bool(self.fs.exists(bucket))
        except Exception:  # cannot tell: leave the plain "not found"
            return True


def open_shard(path: str) -> IO[bytes]:
    """A shard by its full path or URL."""
    if not is_url(path):
        return open(path, "rb")
    if path.startswith(PIPE_PREFIX):
        return CommandOutput(path.removeprefix(PIPE_PREFIX))  # type: ignore[return-value]
    folder, _, name = path.rpartition("/")
    return ShardLocation(folder).open(name)
