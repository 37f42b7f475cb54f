"""Classifier-free guidance for diffusion outputs, with rescaling.

Strong guidance inflates the prediction's scale (over-saturated, harsh audio). Rescaling
(Lin et al., 2024; EzAudio's setting: scale 5, φ 0.75) brings its standard deviation
back to the conditional prediction's and mixes the two by φ.
"""

from __future__ import annotations

import torch


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
