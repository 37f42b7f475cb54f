"""Linear layers over weights packed for oneDNN, for decoding on a CPU.

A decoding step multiplies a few rows by every weight of the model once, so its speed is
how fast the weights stream from memory. For 1-16 rows, MKL's sgemm (what `F.linear` calls
on a CPU) reads a weight at about a quarter of the memory bandwidth; oneDNN's matmul on a
copy of the weight reordered once for that row count reads it at close to full bandwidth
(4 MB fp32 weight, 2 rows, 2-core EPYC: 80 µs against 420 µs). PyTorch exposes that matmul
only as the ops its compiler's CPU backend uses (`torch.ops.mkldnn`), hence this module;
where they are missing or refuse a weight, layers keep `F.linear`.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from lightning_sdm.atomic import write_text_atomically
from lightning_sdm.machine import machine

Projection = Callable[[torch.Tensor], torch.Tensor]
# Decoding's matmul path: True (packed), False (F.linear) or "auto" (measured).
PackChoice = bool | Literal["auto"]
PACKABLE_DTYPES = (torch.float32, torch.bfloat16)
# A oneDNN call costs ~12 µs before it reads anything, F.linear's ~4: below about 256 x 256
# the faster read no longer pays for that (2 rows, 2-core EPYC: equal at ~200 x 200).
MIN_PACKED_ELEMENTS = 256 * 256
# Which path is faster depends on the CPU (MKL's sgemm streams a weight at a quarter of the
# bandwidth on a 2-core EPYC and is the faster path on a 2-core Xeon), on whether the
# weights fit in its caches, and on the row count: `fastest_path` measures it.
TIMED_ROUNDS = 5  # passes over all the weights per path, interleaved; the median counts
_CHOICES: dict[str, str] = {}  # measured choices of this process
# Measured choices are also kept on disk, keyed by the CPU model, threads and torch version,
# so a machine pays for the timing once, not once per process. A folder, or "off".
CACHE_ENV = "LIGHTNING_SDM_CACHE"
CACHE_FILE = "matmul_paths.json"


def choices_file() -> Path | None:
    """Where measured choices are kept ($LIGHTNING_SDM_CACHE, else ~/.cache/lightning_sdm);
    None when the variable says off."""
    setting = os.environ.get(CACHE_ENV)
    if setting == "off":
        return None
    if setting:
        return Path(setting) / CACHE_FILE
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "lightning_sdm" / CACHE_FILE


def _stored_choices(path: Path) -> dict[str, str]:
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # none yet, unreadable or torn: measure again
        return {}
    if not isinstance(stored, dict):
        return {}
    return {key: value for key, value in stored.items() if value in ("packed", "linear")}


def _store_choice(path: Path, key: str, choice: str) -> None:
    with contextlib.suppress(OSError):  # a read-only home: keep it for this process only
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(path, json.dumps({**_stored_choices(path), key: choice}))


def can_pack(weight: torch.Tensor) -> bool:
    """oneDNN packing applies to large enough fp32/bf16 weights on a CPU, held whole (not
    a DTensor shard), in a build that has it."""
    return (
        type(weight.detach()) is torch.Tensor
        and weight.numel() >= MIN_PACKED_ELEMENTS
        and weight.device.type == "cpu"
        and weight.dtype in PACKABLE_DTYPES
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


def plain_linear_layers(module: nn.Module) -> list[nn.Linear]:
    """The layers `packed_linears` would pack: plain `nn.Linear`s, not subclasses."""
    return [layer for layer in module.modules() if type(layer) is nn.Linear]


def _pass_seconds(projections: list[Projection], inputs: list[torch.Tensor]) -> float:
    started = time.perf_counter()
    for project, x in zip(projections, inputs, strict=True):
        project(x)
    return time.perf_counter() - started


def measure_paths(weights: list[torch.Tensor], rows: int) -> dict[str, float]:
    """Seconds for one pass of `rows` rows through every weight, by path ("linear": F.linear
    over the weights as they are, "packed": oneDNN over packed copies), timed in interleaved
    rounds on these very weights (so their size against the caches counts)."""
    packed = [packed_projection(weight, None, rows) for weight in weights]
    plain: list[Projection] = [lambda x, w=weight: F.linear(x, w) for weight in weights]
    inputs = [torch.randn(rows, w.shape[1], dtype=w.dtype, device=w.device) for w in weights]
    paths: dict[str, list[Projection]] = {"linear": plain}
    if all(project is not None for project in packed):
        paths["packed"] = packed  # type: ignore[assignment]
    timings: dict[str, list[float]] = {name: [] for name in paths}
    with torch.inference_mode():
        for projections in paths.values():
            _pass_seconds(projections, inputs)  # warm-up: first calls allocate
        for _ in range(TIMED_ROUNDS):
            for name, projections in paths.items():
                timings[name].append(_pass_seconds(projections, inputs))
    return {name: statistics.median(values) for name, values in timings.items()}


def fastest_path(weights: list[torch.Tensor], rows: int) -> str:
    """ "packed" or "linear": measured once per (machine, weight shapes, rows, dtype,
    device) and kept for this process and on disk (`choices_file`), where packing is
    possible at all; "linear" elsewhere (GPUs, no oneDNN)."""
    weights = [weight for weight in weights if can_pack(weight)]  # the rest stays F.linear
    if not weights:
        return "linear"
    first = weights[0]
    key = json.dumps(  # what the speed depends on; not the values (bf16 casts anew)
        [
            machine(),
            [list(w.shape) for w in weights],
            rows,
            str(first.dtype),
            str(first.device),
        ]
    )
    if key in _CHOICES:
        return _CHOICES[key]
    path = choices_file()
    stored = _stored_choices(path) if path is not None else {}
    if key in stored:
        _CHOICES[key] = stored[key]
        return stored[key]
    timings = measure_paths(weights, rows)
    _CHOICES[key] = min(timings, key=timings.__getitem__)
    if path is not None:
        _store_choice(path, key, _CHOICES[key])
    return _CHOICES[key]


def packed_projection(
    weight: torch.Tensor, bias: torch.Tensor | None, rows: int
) -> Projection | None:
    """x -> x Wᵀ + b through a copy of `weight` packed for about `rows` rows at a time, or
    None where this weight cannot be packed."""
    if not can_pack(weight):
        return None
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), max(rows, 2))
    except RuntimeError:  # a build or CPU whose oneDNN refuses this weight
        return None
    bias = None if bias is None else bias.detach()

    def project(x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")

    return project


def projection(weight: torch.Tensor, bias: torch.Tensor | None, rows: int) -> Projection:
    """The packed projection where possible, else `F.linear` over the weight as it is."""
    packed = packed_projection(weight, bias, rows)
    if packed is not None:
        return packed
    return lambda x: F.linear(x, weight, bias)


@contextlib.contextmanager
def packed_linears(module: nn.Module, rows: int) -> Iterator[int]:
    """Within the block, every plain `nn.Linear` in `module` multiplies through a packed
    copy of its weight (taken on entry: the weights must not change inside). Yields how
    many layers were packed. Subclasses of `nn.Linear` keep their own forward."""
    patched: list[nn.Linear] = []
    try:
        for layer in plain_linear_layers(module):
            project = packed_projection(layer.weight, layer.bias, rows)
            if project is not None:
                layer.forward = project  # an instance attribute: shadows the class's forward
                patched.append(layer)
        yield len(patched)
    finally:
        for layer in patched:
            del layer.forward
