"""Where a training run lives: one folder per run under the config's `default_root_dir`.

    ROOT/version_N/  checkpoints/  samples/step-*/  metrics.csv  metrics.png  config.yaml  wandb/

`--ckpt_path last` resumes the newest run under ROOT in its own folder (same W&B run id,
samples continue beside the earlier ones); any other fit starts `version_{N+1}`.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lightning_sdm.errors import UserInputError
from lightning_sdm.ranks import is_first_process
from lightning_sdm.runs.checkpoints import require_readable, unreadable_reason

RUN_DIR_ENV = "LIGHTNING_SDM_RUN_DIR"  # hands rank 0's choice to the ranks Lightning spawns
WANDB_ID_FILE = "wandb_run_id"
_VERSION = re.compile(r"^version_(\d+)$")


@dataclass(frozen=True)
class RunPlan:
    run_dir: Path
    ckpt_path: str | None  # what to pass to trainer.fit: a file, or None
    resumed: bool
    made: bool = False  # the folder was made for this run, by this process

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"


def run_versions(root: Path) -> list[tuple[int, Path]]:
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _VERSION.match(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    return sorted(found)


def next_run_dir(root: Path) -> Path:
    versions = run_versions(root)
    return root / f"version_{versions[-1][0] + 1 if versions else 0}"


def claim_run_dir(root: Path) -> Path:
    """The next `version_N`, made here. `mkdir` fails for all but one process, so fits
    started together under one root get a folder each instead of sharing one (its
    checkpoints, its W&B run). A launch's other processes make nothing: they take the
    folder rank 0 names (Lightning's spawned ranks through RUN_DIR_ENV; checkpoints and
    loggers write from rank 0)."""
    if not is_first_process():
        return next_run_dir(root)
    root.mkdir(parents=True, exist_ok=True)
    while True:
        candidate = next_run_dir(root)
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:  # another fit took it a moment ago: take the next
            continue


def _newest_first(paths: Iterator[Path]) -> list[Path]:
    return sorted((p for p in paths if p.is_file()), key=lambda p: -p.stat().st_mtime)


def _resume_candidates(root: Path) -> list[Path]:
    """`last*.ckpt` newest first; after the newest, its own run's other checkpoints (what a
    torn `last.ckpt` falls back to), then the other runs' `last*.ckpt`. Runs that kept no
    `last.ckpt` (a checkpoint callback without `save_last`, Lightning's default one): their
    checkpoints newest first, so that "last" continues them instead of starting over."""
    checkpoints = [run / "checkpoints" for _, run in run_versions(root)]
    lasts = _newest_first(path for folder in checkpoints for path in folder.glob("last*.ckpt"))
    if not lasts:
        return _newest_first(path for folder in checkpoints for path in folder.glob("*.ckpt"))
    same_run = [p for p in _newest_first(lasts[0].parent.glob("*.ckpt")) if p not in lasts]
    return [lasts[0], *same_run, *lasts[1:]]


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


def find_last_checkpoint(root: Path, report: Callable[[str], None] = _to_stderr) -> Path | None:
    """The newest readable `last*.ckpt` of any run under `root` (by modification time).

    An empty or torn one (a kill or a full disk) is reported in one line and passed over
    for the newest readable checkpoint, so a preempted job never crash-loops on it.
    """
    for candidate in _resume_candidates(root):
        reason = unreadable_reason(candidate)
        if reason is None:
            return candidate
        report(f"warning: checkpoint {candidate} {reason}; trying the next newest")
    return None


def _run_dir_of(checkpoint: Path, root: Path) -> Path | None:
    """The run folder a checkpoint belongs to, when it is one of ours under `root`."""
    run = checkpoint.parent.parent  # as given: the checkpoint callback keeps its folder name
    ours = checkpoint.parent.name == "checkpoints" and _VERSION.match(run.name)
    return run if ours and run.resolve().parent == root.resolve() else None


def plan_run(root: str | Path, ckpt_path: str | None) -> RunPlan:
    """Resolve `ckpt_path` ("last", a file or None) and pick the run folder.

    "last" with no checkpoint yet starts a new run (a preempted job's first attempt).
    """
    root = Path(root)
    inherited = os.environ.get(RUN_DIR_ENV)
    if ckpt_path == "last":
        last = find_last_checkpoint(root)
        if last is None:
            return _new_run(root, inherited, None)
        ckpt_path = str(last)
    if ckpt_path is not None:
        checkpoint = Path(ckpt_path)
        if not checkpoint.exists():
            raise UserInputError(f"checkpoint {checkpoint} does not exist")
        require_readable(checkpoint)
        run = _run_dir_of(checkpoint, root)
        if run is not None:
            return RunPlan(run, str(checkpoint), True)
    return _new_run(root, inherited, ckpt_path)


def _new_run(root: Path, inherited: str | None, ckpt_path: str | None) -> RunPlan:
    """A new run folder: rank 0's (handed down), else one claimed under `root`."""
    resumed = ckpt_path is not None
    if inherited:
        return RunPlan(Path(inherited), ckpt_path, resumed)
    return RunPlan(claim_run_dir(root), ckpt_path, resumed, made=is_first_process())
