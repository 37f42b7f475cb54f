"""DDIM sampling steps for v-prediction, on diffusers' scheduler (its schedule, timesteps,
`add_noise` and `get_velocity`) with our own `step`.

Why our own step: on a zero-terminal-SNR schedule diffusers' step takes square roots of
quantities that are zero in exact arithmetic at the first step (t = 999: the variance and
1 - ᾱ_prev - σ²) and come out around -6e-8 in floating point, so with eta > 0 sampling
returned NaN at 39 of the step counts 1-100. Here both are clamped at zero; otherwise the
step is formula (12) of Song et al. (2021), as diffusers computes it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch

from lightning_sdm.extras import require_extra


@dataclass
class StepOutput:
    prev_sample: torch.Tensor


def _noise_like(
    sample: torch.Tensor, generator: torch.Generator | list[torch.Generator] | None
) -> torch.Tensor:
    """Standard normal noise; a list of generators draws each row from its own."""
    if isinstance(generator, list):
        rows = [
            torch.randn(sample.shape[1:], generator=g, device=g.device, dtype=sample.dtype)
            for g in generator
        ]
        return torch.stack(rows).to(sample.device)
    return torch.randn(sample.shape, generator=generator, dtype=sample.dtype).to(sample.device)


@functools.cache
def _scheduler_class() -> type:
    from diffusers import DDIMScheduler

    class VelocityDDIM(DDIMScheduler):
        def step(  # type: ignore[override]
            self,
            model_output: torch.Tensor,
            timestep: int | torch.Tensor,
            sample: torch.Tensor,
            eta: float = 0.0,
            generator: torch.Generator | list[torch.Generator] | None = None,
        ) -> StepOutput:
            """x_{t-1} from x_t and the predicted velocity v."""
            step_size = self.config.num_train_timesteps // self.num_inference_steps
            previous = int(timestep) - step_size
            alpha = self.alphas_cumprod[int(timestep)].to(sample.device)
            alpha_prev = (
                self.alphas_cumprod[previous] if previous >= 0 else self.final_alpha_cumprod
            ).to(sample.device)
            x0 = alpha.sqrt() * sample - (1 - alpha).sqrt() * model_output
            epsilon = alpha.sqrt() * model_output + (1 - alpha).sqrt() * sample
            variance = ((1 - alpha_prev) / (1 - alpha) * (1 - alpha / alpha_prev)).clamp(min=0)
            deviation = eta * variance.sqrt()
            direction = (1 - alpha_prev - deviation**2).clamp(min=0).sqrt() * epsilon
            previous_sample = alpha_prev.sqrt() * x0 + direction
            if eta > 0:
                previous_sample = previous_sample + deviation * _noise_like(sample, generator)
            return StepOutput(previous_sample)

    return VelocityDDIM


def ddim_scheduler(**config: Any) -> Any:
    """A v-prediction DDIM scheduler (diffusers' arguments) whose steps stay finite."""
    require_extra("diffusion", "the latent diffusion family")
    if config.get("prediction_type") != "v_prediction":
        raise ValueError("these DDIM steps are for v-prediction")
    return _scheduler_class()(**config)
