"""Writing files and folders so that a kill at any moment leaves the old one or the new one.

A file is written beside its destination under a recognisable temporary name, flushed to
disk, moved into place with `os.replace` (atomic within one filesystem) and its folder
synced. Temporary files a killed writer left behind carry `PARTIAL_MARK` in their names and
are removed by `remove_partials` at the next start.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

from lightning_sdm.errors import UserInputError

PARTIAL_MARK = ".sdm-partial-"
RETIRED_MARK = ".sdm-retired-"  # an old folder moved aside while a new one takes its place


def partial_name(destination: Path, mark: str = PARTIAL_MARK) -> Path:
    """A unique temporary name beside `destination`, recognisable as ours."""
    return destination.with_name(f".{destination.name}{mark}{uuid.uuid4().hex[:8]}")


def destination_of(path: str | Path) -> Path:
    """The file or folder a temporary name stands for (`partial_name`'s inverse), so that
    an error names what the user asked for, not `.x.sdm-partial-1a99fcfe`."""
    return Path(*(_destination_name(part) for part in Path(path).parts))


def _destination_name(name: str) -> str:
    """One path component: a file in a folder being built is named in its final folder."""
    for mark in (PARTIAL_MARK, RETIRED_MARK):
        stem, found, _ = name.partition(mark)
        if found and stem.startswith("."):
            return stem[1:]
    return name


def fsync_directory(folder: Path) -> None:
    """Make a rename inside `folder` durable (a no-op where folders cannot be opened)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


@contextlib.contextmanager
def atomic_file(destination: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside `destination`; on a clean exit it replaces it whole.

    On an error the temporary file is removed and `destination` is untouched.
    """
    destination = Path(destination)
    temporary = partial_name(destination)
    encoding = None if "b" in mode else "utf-8"
    try:
        with open(temporary, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, destination)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(destination.parent)


def write_text_atomically(destination: str | Path, text: str) -> None:
    with atomic_file(destination, "w") as handle:
        handle.write(text)


def write_bytes_naming(path: Path, data: bytes) -> None:
    """`path.write_bytes`, with the path in the error of a write that fails midway (a full
    disk names no file there otherwise)."""
    try:
        path.write_bytes(data)
    except OSError as error:
        if error.filename is None:
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_partials(folder: str | Path, of: str | None = None) -> list[Path]:
    """Delete the temporary files and folders a killed writer left in `folder` (only those
    of the entry named `of`, when given: a sibling's writer may be at work).

    An old folder set aside by `replace_directory` goes back to its name when a kill came
    between the two renames (nothing took its place); otherwise it is deleted.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.iterdir():
        if of is not None and not path.name.startswith(f".{of}.sdm-"):
            continue
        if RETIRED_MARK in path.name:
            original = destination_of(path)
            if not original.exists():
                os.replace(path, original)
                continue
        elif PARTIAL_MARK not in path.name:
            continue
        _remove(path)
        removed.append(path)
    return removed


def replace_directory(destination: str | Path, build: Callable[[Path], None]) -> None:
    """Build a folder beside `destination`, then swap it in for the old one.

    `build` fills the empty folder it is given. Readers see the old folder or the new one;
    a kill leaves the old one (plus a partial folder that `remove_partials` clears).
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    remove_partials(destination.parent, of=destination.name)
    staging = partial_name(destination)
    staging.mkdir()
    try:
        build(staging)
        if destination.exists():
            retired = partial_name(destination, RETIRED_MARK)
            os.replace(destination, retired)  # folders cannot be replaced in one rename
            os.replace(staging, destination)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_directory(destination.parent)


def check_output_folder(
    destination: str | Path, overwrite: bool, inputs: Sequence[str | Path | None] = ()
) -> None:
    """An existing folder that holds anything is refused unless `overwrite`; and even
    then when replacing it would delete one of the command's `inputs` (a model, a
    checkpoint, a codec) or the folder the command runs in."""
    destination = Path(destination)
    if destination.exists() and not destination.is_dir():
        raise UserInputError(f"{destination} is a file; give a folder")
    if not destination.is_dir() or not any(destination.iterdir()):
        return
    if not overwrite:
        raise UserInputError(
            f"{destination} already holds files: pass --overwrite to replace it whole, or "
            "choose another folder"
        )
    replaced = destination.resolve()
    for given in [Path.cwd(), *(Path(i) for i in inputs if i is not None)]:
        if given.exists() and given.resolve().is_relative_to(replaced):
            what = "the folder this command runs in" if given == Path.cwd() else str(given)
            where = "is" if given.resolve() == replaced else "is inside"
            raise UserInputError(
                f"--overwrite would delete {what}, which {where} the output folder "
                f"{destination}: choose another output folder"
            )


def write_directory(
    destination: str | Path,
    build: Callable[[Path], None],
    overwrite: bool,
    inputs: Sequence[str | Path | None] = (),
    purpose: str = "lightning-sdm command",
) -> None:
    """Fill a new folder with `build`; an existing one that holds anything is refused
    unless `overwrite`, and then replaced whole (no stale file of the old one survives),
    unless that would delete one of `inputs` (`check_output_folder`). One writer at a
    time: a second `purpose` writing there meanwhile is refused in one line (it cleared
    the first's half-built folder, or swapped its own in over the first's finished one)."""
    from lightning_sdm.folder_lock import output_lock

    with output_lock(destination, purpose):
        check_output_folder(destination, overwrite, inputs)
        replace_directory(destination, build)
