"""Does a diffusion model denoise? Held-out latents are noised to a level t, the model
takes them back to t = 0, and the result is compared with the clean latent and with two
baselines that know nothing: predicting zero (the latents' mean, after standardising)
and stopping where the noise left off. A model that learnt something beats both at small
t; one that did not sits at the zero baseline (relative error 1) everywhere."""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import torch

from lightning_sdm.models.text_to_audio_diffusion import TextToAudioDiffusion

NOISE_LEVELS = (0.1, 0.3, 0.5, 0.7, 0.9)  # fractions of the training timesteps


@dataclass(frozen=True)
class ProbeRow:
    noise_level: float  # t / T
    timestep: int
    one_step: float  # relative error of the model's x0 prediction from x_t, in one call
    denoised: float  # relative error after DDIM steps from t down to 0
    noisy_input: float  # relative error of x_t rescaled to x0's scale (doing nothing)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _relative_error(estimate: torch.Tensor, clean: torch.Tensor, mask: torch.Tensor) -> float:
    """Squared error over real frames, relative to predicting zero (1.0: no better)."""
    weights = mask[:, None].expand_as(clean).float()
    error = ((estimate - clean).square() * weights).sum()
    baseline = (clean.square() * weights).sum().clamp(min=1e-12)
    return float(error / baseline)


@torch.no_grad()
def reconstruction_probe(
    model: TextToAudioDiffusion,
    latents: torch.Tensor,
    frame_mask: torch.Tensor,
    captions: list[str],
    noise_levels: tuple[float, ...] = NOISE_LEVELS,
    steps: int = 20,
    seed: int = 0,
) -> list[ProbeRow]:
    """Per noise level: one-step and `steps`-step DDIM (eta 0) reconstructions of
    `latents` [B, C, T] (the codec's scale) with every real frame to generate."""
    model.eval()
    device = model.device
    clean = model.normalise(latents.to(device).float()) * frame_mask.to(device)[:, None]
    mask = frame_mask.to(device).bool()
    to_generate = mask.clone()
    given = torch.zeros_like(clean)
    alphas = model.scheduler.alphas_cumprod.to(device)
    total = model.config.diffusion.num_train_timesteps
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(clean.shape, generator=generator).to(device)

    def velocity(x: torch.Tensor, timestep: int) -> torch.Tensor:
        steps_tensor = torch.full((len(captions),), timestep, device=device)
        return model.predict(x, given, to_generate, steps_tensor, captions, mask).float()

    rows = []
    for level in noise_levels:
        start = min(total - 1, max(1, round(level * (total - 1))))
        a_start = alphas[start]
        noisy = a_start.sqrt() * clean + (1 - a_start).sqrt() * noise

        v = velocity(noisy, start)
        one_step = a_start.sqrt() * noisy - (1 - a_start).sqrt() * v
        x, x0 = noisy, one_step
        schedule = torch.linspace(start, 0, steps + 1).round().long().tolist()
        for current, following in itertools.pairwise(schedule):
            a, a_next = alphas[current], alphas[following]
            v = velocity(x, current)
            x0 = a.sqrt() * x - (1 - a).sqrt() * v  # the estimate at this step
            epsilon = a.sqrt() * v + (1 - a).sqrt() * x
            x = a_next.sqrt() * x0 + (1 - a_next).sqrt() * epsilon
        rows.append(
            ProbeRow(
                noise_level=level,
                timestep=start,
                one_step=_relative_error(one_step, clean, mask),
                denoised=_relative_error(x0, clean, mask),
                noisy_input=_relative_error(noisy / a_start.sqrt(), clean, mask),
            )
        )
    return rows


def format_probe(rows: list[ProbeRow]) -> str:
    lines = [
        "relative squared error against the clean latent (1.00 = predicting zero)",
        f"{'t/T':>5}{'timestep':>10}{'one step':>10}{'denoised':>10}{'x_t as is':>11}",
    ]
    for row in rows:
        lines.append(
            f"{row.noise_level:>5.1f}{row.timestep:>10}{row.one_step:>10.3f}"
            f"{row.denoised:>10.3f}{row.noisy_input:>11.3f}"
        )
    return "\n".join(lines)
