"""Classifier-free guidance for both families: the captions a guided batch runs (each
caption, then as many empty ones), and the guided output, optionally rescaled.

Strong guidance inflates the prediction's scale (over-saturated, harsh audio). Rescaling
(Lin et al., 2024; EzAudio's setting: scale 5, φ 0.75) brings its standard deviation
back to the conditional prediction's and mixes the two by φ.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lightning_sdm.conditioning import EMPTY_CONDITION


def guided_captions(texts: Sequence[str], guided: bool) -> list[str]:
    """The captions one generation batch runs: `texts`, then as many unconditional ones
    when guidance is on (the first half of the output is conditional)."""
    if isinstance(texts, str):
        raise TypeError("pass a list of captions, not a single string")
    if not texts:
        raise ValueError("generate needs at least one caption")
    return list(texts) + [EMPTY_CONDITION] * len(texts) if guided else list(texts)


def guide(
    conditional: torch.Tensor, unconditional: torch.Tensor, scale: float, rescale: float = 0.0
) -> torch.Tensor:
    """v_cfg = v_neg + s (v_pos − v_neg); v_re = v_cfg std(v_pos) / std(v_cfg);
    v = φ v_re + (1 − φ) v_cfg, with std per sample over all but the batch axis."""
    guided = unconditional + scale * (conditional - unconditional)
    if rescale == 0.0:
        return guided
    dims = tuple(range(1, guided.dim()))
    rescaled = guided * conditional.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True)
    return rescale * rescaled + (1 - rescale) * guided
