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
import functools
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from lightning_sdm.atomic import write_text_atomically
from lightning_sdm.machine import machine
from lightning_sdm.nn.step_gelu import Gelu, step_gelu

Projection = Callable[[torch.Tensor], torch.Tensor]
# x, residual -> residual + x Wᵀ + b
ResidualProjection = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# What a decoding step does to a product right after it: nothing, GELU (exact or tanh),
# or add it to the residual stream. The packed path fuses these into its matmul (oneDNN
# post-ops): the output is not read again by a separate op after the next weight evicted
# it from the caches, and there is one call less to dispatch.
Epilogue = Literal["none", "gelu", "gelu_tanh", "add"]
GELU_ALGORITHMS = {"gelu": "none", "gelu_tanh": "tanh"}  # epilogue -> F.gelu's approximate
# Decoding's matmul path: True (packed), False (F.linear) or "auto" (measured).
PackChoice = bool | Literal["auto"]
PACKABLE_DTYPES = (torch.float32, torch.bfloat16)
# Which path is faster depends on the CPU (MKL's sgemm streams a weight at a quarter of the
# bandwidth on a 2-core EPYC and is the faster path on a 2-core Xeon), on the weight's shape
# (a oneDNN call costs more before it reads anything, which small weights do not win back),
# on whether the weights fit in its caches and on the row count: `fastest_paths` measures
# it for each weight shape, so no size threshold tuned on one CPU decides.
TIMED_ROUNDS = 5  # passes over all the weights per path, interleaved; the median counts
PATHS = ("packed", "linear")
_CHOICES: dict[str, dict[str, str]] = {}  # measured choices of this process
# Measured choices are also kept on disk, keyed by `machine()` (CPU model and instructions,
# threads, torch version), so a machine pays for the timing once, not once per process.
# A folder, or "off".
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


def _valid_choice(value: object) -> bool:
    return isinstance(value, dict) and all(
        isinstance(shape, str) and path in PATHS for shape, path in value.items()
    )


def _stored_choices(path: Path) -> dict[str, dict[str, str]]:
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # none yet, unreadable or torn: measure again
        return {}
    if not isinstance(stored, dict):
        return {}
    return {key: value for key, value in stored.items() if _valid_choice(value)}


def _store_choice(path: Path, key: str, choice: dict[str, str]) -> None:
    with contextlib.suppress(OSError):  # a read-only home: keep it for this process only
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(path, json.dumps({**_stored_choices(path), key: choice}))


def can_pack(weight: torch.Tensor) -> bool:
    """oneDNN packing applies to fp32/bf16 weights on a CPU, held whole (not a DTensor
    shard), in a build that has it."""
    return (
        type(weight.detach()) is torch.Tensor
        and weight.device.type == "cpu"
        and weight.dtype in PACKABLE_DTYPES
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


@functools.cache
def packs(dtype: torch.dtype) -> bool:
    """Whether this CPU's oneDNN packs weights of `dtype` at all (bf16 needs AVX-512 or
    AVX-NE-CONVERT: a CPU with AVX2 alone refuses, and multiplies bf16 slowly)."""
    return packed_projection(torch.zeros(2, 2, dtype=dtype), None, 2) is not None


def shape_name(weight: torch.Tensor) -> str:
    return "x".join(str(size) for size in weight.shape)


def _call_seconds(projections: list[Projection], inputs: list[torch.Tensor]) -> list[float]:
    """Each projection's seconds, called in order (as a decoding step calls them)."""
    seconds = []
    for project, x in zip(projections, inputs, strict=True):
        started = time.perf_counter()
        project(x)
        seconds.append(time.perf_counter() - started)
    return seconds


def measure_paths(weights: list[torch.Tensor], rows: int) -> dict[str, dict[str, float]]:
    """Seconds per weight shape for one pass of `rows` rows through every weight, by path
    ("linear": F.linear over the weights as they are, "packed": oneDNN over packed copies).
    Every call is timed on its own but all run in the given order, in interleaved rounds,
    on these very weights: a shape's time includes the cache misses the other weights
    cause, as in decoding."""
    packed = [packed_projection(weight, None, rows) for weight in weights]
    plain: list[Projection] = [lambda x, w=weight: F.linear(x, w) for weight in weights]
    inputs = [torch.randn(rows, w.shape[1], dtype=w.dtype, device=w.device) for w in weights]
    paths: dict[str, list[Projection]] = {"linear": plain}
    if all(project is not None for project in packed):
        paths["packed"] = packed  # type: ignore[assignment]
    shapes = [shape_name(weight) for weight in weights]
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in paths}
    with torch.inference_mode():
        for projections in paths.values():
            _call_seconds(projections, inputs)  # warm-up: first calls allocate
        for _ in range(TIMED_ROUNDS):
            for name, projections in paths.items():
                per_shape: dict[str, float] = dict.fromkeys(shapes, 0.0)
                for shape, seconds in zip(shapes, _call_seconds(projections, inputs), strict=True):
                    per_shape[shape] += seconds
                rounds[name].append(per_shape)
    return {
        name: {
            shape: statistics.median(r[shape] for r in values) for shape in dict.fromkeys(shapes)
        }
        for name, values in rounds.items()
    }


def fastest_paths(weights: list[torch.Tensor], rows: int) -> dict[str, str]:
    """For each weight shape, "packed" or "linear": measured once per (machine, weight
    shapes, rows, dtype, device) and kept for this process and on disk (`choices_file`);
    "linear" for every shape where packing is not possible at all (GPUs, no oneDNN)."""
    if not weights or not all(can_pack(weight) for weight in weights):
        return {shape_name(weight): "linear" for weight in weights}
    first = weights[0]
    key = json.dumps(  # what the speed depends on; not the values (bf16 casts anew)
        [machine(), [list(w.shape) for w in weights], rows, str(first.dtype), str(first.device)]
    )
    if key in _CHOICES:
        return _CHOICES[key]
    path = choices_file()
    stored = _stored_choices(path) if path is not None else {}
    if key in stored:
        _CHOICES[key] = stored[key]
        return stored[key]
    timings = measure_paths(weights, rows)
    shapes = dict.fromkeys(shape_name(weight) for weight in weights)
    _CHOICES[key] = {
        shape: min(timings, key=lambda name, shape=shape: timings[name][shape]) for shape in shapes
    }
    if path is not None:
        _store_choice(path, key, _CHOICES[key])
    return _CHOICES[key]


def summary(choices: dict[str, str]) -> str:
    """ "packed", "linear", or which shapes took which path."""
    paths = set(choices.values())
    if len(paths) <= 1:
        return next(iter(paths), "linear")
    return ", ".join(f"{shape} {path}" for shape, path in choices.items())


def packed_projection(
    weight: torch.Tensor, bias: torch.Tensor | None, rows: int, epilogue: Epilogue = "none"
) -> Callable[..., torch.Tensor] | None:
    """x -> epilogue(x Wᵀ + b) through a copy of `weight` packed for about `rows` rows at a
    time (with "add": x, residual -> residual + x Wᵀ + b), or None where this weight cannot
    be packed."""
    if not can_pack(weight):
        return None
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), max(rows, 2))
    except RuntimeError:  # a build or CPU whose oneDNN refuses this weight
        return None
    bias = None if bias is None else bias.detach()
    if epilogue == "add":

        def project_onto(x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
            return torch.ops.mkldnn._linear_pointwise.binary(x, residual, packed, bias, "add")

        return project_onto
    attribute, algorithm = (
        ("gelu", GELU_ALGORITHMS[epilogue]) if epilogue != "none" else ("none", "")
    )

    def project(x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, packed, bias, attribute, [], algorithm)

    return project


def plain_projection(
    weight: torch.Tensor, bias: torch.Tensor | None, epilogue: Epilogue = "none", rows: int = 2
) -> Callable[..., torch.Tensor]:
    """`packed_projection`'s computation through `F.linear` over the weight as it is (the
    residual added inside the matmul, by addmm, where there is no bias; GELU by the kernel
    measured faster for about `rows` rows, `nn.step_gelu`)."""
    if epilogue == "add":
        if bias is not None:
            return lambda x, residual: residual + F.linear(x, weight, bias)
        transposed = weight.t()

        def project_onto(x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
            width = residual.shape[-1]
            flat = torch.addmm(residual.reshape(-1, width), x.reshape(-1, x.shape[-1]), transposed)
            return flat.view(residual.shape)

        return project_onto
    if epilogue != "none":
        gelu = _gelu(rows, weight.shape[0], weight, epilogue)
        return lambda x: gelu(F.linear(x, weight, bias))
    return functools.partial(F.linear, weight=weight, bias=bias)


def _gelu(rows: int, width: int, like: torch.Tensor, epilogue: Epilogue) -> Gelu:
    approximate = GELU_ALGORITHMS[epilogue]
    if like.device.type != "cpu":
        return functools.partial(F.gelu, approximate=approximate)
    return step_gelu(rows, width, like.dtype, approximate)


def with_epilogue(project: Projection, epilogue: Epilogue) -> Callable[..., torch.Tensor]:
    """An opaque projection (a LoRA adapter, say) followed by the epilogue as separate ops
    (GELU by the kernel measured faster for the product's rows and width, `nn.step_gelu`)."""
    if epilogue == "add":
        return lambda x, residual: residual + project(x)
    if epilogue != "none":

        def project_then_gelu(x: torch.Tensor) -> torch.Tensor:
            product = project(x)
            width = product.shape[-1]
            return _gelu(product.numel() // max(width, 1), width, product, epilogue)(product)

        return project_then_gelu
    return project


def projection(weight: torch.Tensor, bias: torch.Tensor | None, rows: int) -> Projection:
    """The packed projection where possible, else `F.linear` over the weight as it is."""
    return packed_projection(weight, bias, rows) or plain_projection(weight, bias)


def chosen_paths(weights: list[torch.Tensor], rows: int, pack: PackChoice) -> dict[str, str]:
    """The path of each weight shape: forced by `pack` True/False, or measured ("auto")."""
    if pack == "auto":
        return fastest_paths(weights, rows)
    forced = "packed" if pack is True else "linear"
    return {shape_name(weight): forced for weight in weights}


def projections_for(
    pairs: list[tuple[torch.Tensor, torch.Tensor | None]],
    rows: int,
    paths: dict[str, str],
    epilogues: list[Epilogue] | None = None,
) -> list[Callable[..., torch.Tensor]]:
    """epilogue(x Wᵀ + b) for each (weight, bias), through the path chosen for its shape
    (packed where that is possible, else `F.linear` over the weight as it is)."""
    epilogues = epilogues or ["none"] * len(pairs)
    prepared = []
    for (weight, bias), epilogue in zip(pairs, epilogues, strict=True):
        packed = None
        if paths.get(shape_name(weight)) == "packed":
            packed = packed_projection(weight, bias, rows, epilogue)
        prepared.append(packed or plain_projection(weight, bias, epilogue, rows))
    return prepared
