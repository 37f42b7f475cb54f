"""Sampling options of both families, and token sampling: temperature, top-k, top-p,
classifier-free guidance."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from lightning_sdm.errors import UserInputError

# Guidance saturates long before this (MusicGen uses 3, EzAudio 5); far larger scales
# overflow fp32 logits (or latents) and sampling fails mid-run.
MAX_CFG_SCALE = 1e6
# Below this a temperature samples as greedy decoding does, and denormal ones overflow the
# scaled logits: 0 says greedy.
MIN_TEMPERATURE = 1e-6


def check_cfg_scale(cfg_scale: float) -> None:
    """One bound for both families' guidance (NaN fails it too)."""
    if not 0 <= cfg_scale <= MAX_CFG_SCALE:
        raise UserInputError(
            f"cfg_scale must be in [0, {MAX_CFG_SCALE:g}] (1: no guidance; MusicGen uses 3), "
            f"got {cfg_scale}"
        )


@dataclass(frozen=True)
class SamplingConfig:
    """Defaults follow MusicGen and the stack-delay paper: top-k 250, temperature 1, CFG 3.

    Args:
        temperature: Softmax temperature (0: greedy; else at least 1e-6).
        top_k: Sample among the k most likely codes (0: all).
        top_p: Nucleus sampling threshold (0: off).
        cfg_scale: Classifier-free guidance scale (1: no guidance; at most 1e6).
    """

    temperature: float = 1.0
    top_k: int = 250
    top_p: float = 0.0
    cfg_scale: float = 3.0

    def __post_init__(self) -> None:
        if self.temperature < 0 or math.isnan(self.temperature):
            raise UserInputError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if 0 < self.temperature < MIN_TEMPERATURE:
            raise UserInputError(
                f"temperature {self.temperature:g} samples as greedy decoding does: use 0 "
                f"(greedy) or at least {MIN_TEMPERATURE:g}"
            )
        if self.top_k < 0:
            raise UserInputError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0.0 <= self.top_p <= 1.0:
            raise UserInputError(f"top_p must be in [0, 1] (0 = off), got {self.top_p}")
        check_cfg_scale(self.cfg_scale)

    @property
    def uses_guidance(self) -> bool:
        return self.cfg_scale != 1.0


@dataclass(frozen=True)
class DiffusionSamplingConfig:
    """DDIM steps, guidance scale and rescale φ (0: none; EzAudio's final: scale 5, φ
    0.75), and DDIM's eta (0: deterministic given the starting noise)."""

    steps: int = 50
    cfg_scale: float = 3.0
    cfg_rescale: float = 0.0
    eta: float = 0.0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise UserInputError(f"steps must be >= 1, got {self.steps}")
        check_cfg_scale(self.cfg_scale)
        if not 0.0 <= self.cfg_rescale <= 1.0:
            raise UserInputError(f"cfg_rescale must be in [0, 1], got {self.cfg_rescale}")
        if not 0.0 <= self.eta <= 1.0:
            raise UserInputError(f"eta must be in [0, 1] (0: deterministic), got {self.eta}")

    @property
    def uses_guidance(self) -> bool:
        return self.cfg_scale != 1.0


def sample_tokens(
    logits: torch.Tensor,
    config: SamplingConfig,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
) -> torch.Tensor:
    """logits [..., V] -> token ids [...].

    A sequence of generators gives each row (first dimension) its own, so a row's draws do
    not depend on which other rows share the batch.
    """
    logits = logits.float()
    if config.temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / config.temperature
    # Draw among candidates only, most likely first: the top k, or every token for top-p
    # alone. A draw costs per candidate, so 250 candidates instead of the whole vocabulary
    # make a decoding step's sampling several times cheaper.
    if 0 < config.top_k < logits.shape[-1]:
        candidates, ids = torch.topk(logits, config.top_k, dim=-1)
    elif 0 < config.top_p < 1:
        candidates, ids = torch.sort(logits, dim=-1, descending=True)
    else:
        candidates, ids = logits, None
    if 0 < config.top_p < 1:
        mass = candidates.softmax(dim=-1)
        # Drop a token once the mass before it already reaches top_p; the first always stays.
        candidates = candidates.masked_fill(
            (mass.cumsum(dim=-1) - mass) >= config.top_p, -torch.inf
        )
    probabilities = candidates.softmax(dim=-1)
    if generator is None or isinstance(generator, torch.Generator):
        choice = _draw(probabilities, generator)
    elif len(generator) != probabilities.shape[0]:
        raise ValueError(f"{len(generator)} generators for {probabilities.shape[0]} rows")
    else:
        choice = torch.stack(
            [_draw(row, g) for row, g in zip(probabilities, generator, strict=True)]
        )
    return choice if ids is None else ids.gather(-1, choice[..., None]).squeeze(-1)


def _draw(probabilities: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    flat = probabilities.reshape(-1, probabilities.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).reshape(probabilities.shape[:-1])
