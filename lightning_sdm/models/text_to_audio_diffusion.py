"""The T5-conditioned latent diffusion model as one unit: training loss, sampling, save
and load. Latents come from the codec (EnCodec's pre-quantisation latents in the shards)
and go back through its decoder; the codec itself is any object with `decode_latents`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lightning_sdm.conditioning import T5Conditioner, TextConditionerConfig
from lightning_sdm.models.ddim import ddim_scheduler
from lightning_sdm.models.dit import DiTConfig, EzAudioDiT
from lightning_sdm.models.guidance import guide, guided_captions
from lightning_sdm.models.masking import MaskingConfig, span_mask
from lightning_sdm.models.sampling import DiffusionSamplingConfig
from lightning_sdm.models.saving import SavedAsDirectory
from lightning_sdm.models.text_to_music import row_generators


@dataclass(frozen=True)
class DiffusionConfig:
    """The noise schedule: scaled-linear betas rescaled to zero terminal SNR, v-prediction,
    trailing timestep spacing (EzAudio's), through diffusers' DDIMScheduler."""

    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"
    rescale_betas_zero_snr: bool = True
    timestep_spacing: str = "trailing"

    def scheduler(self) -> Any:
        """diffusers' DDIMScheduler (the diffusion extra; its variance clamped at zero)."""
        return ddim_scheduler(
            num_train_timesteps=self.num_train_timesteps,
            beta_start=self.beta_start,
            beta_end=self.beta_end,
            beta_schedule=self.beta_schedule,
            prediction_type="v_prediction",
            rescale_betas_zero_snr=self.rescale_betas_zero_snr,
            timestep_spacing=self.timestep_spacing,
            clip_sample=False,
        )


# Parameter names of the DiT's text path (cross-attention, its norms, the context embedding).
TEXT_PATH_PARTS = ("dit.context_embed.", ".cross_attention.", ".cross_norm.", ".context_norm.")


@dataclass(frozen=True)
class TextToAudioDiffusionConfig:
    dit: DiTConfig = dataclasses.field(default_factory=DiTConfig)
    text: TextConditionerConfig = dataclasses.field(default_factory=TextConditionerConfig)
    diffusion: DiffusionConfig = dataclasses.field(default_factory=DiffusionConfig)
    masking: MaskingConfig = dataclasses.field(default_factory=MaskingConfig)
    # Latents are standardised with these before diffusion; None: measured on the first
    # training batch and kept in the weights.
    latent_mean: float | None = None
    latent_std: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TextToAudioDiffusionConfig:
        return cls(
            dit=DiTConfig(**data["dit"]),
            text=TextConditionerConfig(**data["text"]),
            diffusion=DiffusionConfig(**data.get("diffusion", {})),
            masking=MaskingConfig(**data.get("masking", {})),
            latent_mean=data.get("latent_mean"),
            latent_std=data.get("latent_std"),
        )


def per_sample_masked_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Each sample's mean over its own weighted entries, then the mean over the samples
    that have any (EzAudio's averaging: a partly masked or short sample counts as much as
    a fully masked long one). values, weights [B, ...]."""
    dims = tuple(range(1, values.dim()))
    counts = weights.sum(dim=dims)
    per_sample = (values * weights).sum(dim=dims) / counts.clamp(min=1)
    present = counts > 0
    if not bool(present.any()):
        return (values * weights).sum()  # nothing to generate: zero, still in the graph
    return per_sample[present].mean()


@dataclass
class DiffusionLoss:
    loss: torch.Tensor
    generated_share: torch.Tensor  # share of real frames the batch generated (masking)


class TextToAudioDiffusion(SavedAsDirectory, nn.Module):
    family = "diffusion"  # recorded in its directories' config.json and its checkpoints
    config_class = TextToAudioDiffusionConfig
    sampling_config_type = DiffusionSamplingConfig  # what its generation samples with

    def __init__(self, config: TextToAudioDiffusionConfig) -> None:
        super().__init__()
        self.config = config
        self.conditioner = T5Conditioner(config.text, output_dim=None)
        width = self.conditioner.encoder.config.d_model
        if width != config.dit.context_dim:
            raise ValueError(
                f"dit.context_dim is {config.dit.context_dim} but the text encoder's states "
                f"are {width} wide: set dit.context_dim to {width}"
            )
        self.dit = EzAudioDiT(config.dit)
        # What the model sees in place of the latent of a frame it must generate.
        self.mask_embedding = nn.Parameter(torch.zeros(config.dit.latent_channels))
        given = config.latent_mean is not None and config.latent_std is not None
        stats = [config.latent_mean or 0.0, config.latent_std or 1.0]
        self.register_buffer("latent_stats", torch.tensor(stats))
        self.register_buffer("latent_stats_known", torch.tensor(given))
        self.scheduler = config.diffusion.scheduler()

    @classmethod
    def fresh_parameters(
        cls, saved: TextToAudioDiffusionConfig, config: TextToAudioDiffusionConfig
    ) -> Callable[[str], bool]:
        """A stage that adds the text path to a model trained without one (EzAudio's stage
        2 after stage 1): the text path starts fresh, its output projections at zero."""
        if config.dit.text_path and not saved.dit.text_path:
            return lambda name: any(part in name for part in TEXT_PATH_PARTS)
        return lambda name: False

    @property
    def latent_channels(self) -> int:
        return self.config.dit.latent_channels

    @property
    def device(self) -> torch.device:
        return self.mask_embedding.device

    def set_latent_stats(self, mean: float, std: float) -> None:
        if std <= 0:
            raise ValueError(f"latent std must be positive, got {std}")
        self.latent_stats.copy_(torch.tensor([mean, std]))
        self.latent_stats_known.fill_(True)

    def normalise(self, latents: torch.Tensor) -> torch.Tensor:
        mean, std = self.latent_stats
        return (latents - mean) / std

    def denormalise(self, latents: torch.Tensor) -> torch.Tensor:
        mean, std = self.latent_stats
        return latents * std + mean

    def _check_latents(self, latents: torch.Tensor) -> None:
        if latents.dim() != 3 or latents.shape[1] != self.latent_channels:
            raise ValueError(
                f"expected latents [B, {self.latent_channels}, T], got {tuple(latents.shape)}"
            )

    def predict(
        self,
        noisy: torch.Tensor,
        given: torch.Tensor,
        to_generate: torch.Tensor,
        timesteps: torch.Tensor,
        texts: list[str],
        frame_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The v-prediction for normalised `noisy` latents; `given` holds the clean latent
        where `to_generate` is False (elsewhere the mask embedding stands in)."""
        states, mask = self._context(texts)
        given = self._with_stand_in(given, to_generate)
        return self.dit(noisy, given, to_generate, timesteps, states, mask, frame_mask)

    def _context(self, texts: list[str]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The T5 states and mask the text path reads (none without a text path)."""
        if not self.config.dit.text_path:
            return None, None
        condition = self.conditioner(texts)
        return condition.states, condition.mask

    def _with_stand_in(self, given: torch.Tensor, to_generate: torch.Tensor) -> torch.Tensor:
        """The given latents with the mask embedding in the frames to generate."""
        stand_in = self.mask_embedding.to(given.dtype)[None, :, None]
        return torch.where(to_generate[:, None], stand_in, given)

    def training_loss(
        self,
        latents: torch.Tensor,
        frame_mask: torch.Tensor,
        texts: list[str],
        generator: torch.Generator | None = None,
    ) -> DiffusionLoss:
        """MSE on v over the frames each sample generates (all real frames when fully
        masked, the masked spans otherwise). Apply text dropout to `texts` before."""
        self._check_latents(latents)
        if not bool(self.latent_stats_known):
            raise RuntimeError("latent statistics unset: call set_latent_stats first")
        batch, _, frames = latents.shape
        device = latents.device
        clean = self.normalise(latents.float()) * frame_mask[:, None]
        to_generate = span_mask(batch, frames, self.config.masking, generator).to(device)
        to_generate &= frame_mask
        timesteps = torch.randint(
            0, self.config.diffusion.num_train_timesteps, (batch,), generator=generator
        ).to(device)
        noise = torch.randn(clean.shape, generator=generator).to(device)
        noisy = self.scheduler.add_noise(clean, noise, timesteps)
        target = self.scheduler.get_velocity(clean, noise, timesteps)
        prediction = self.predict(noisy, clean, to_generate, timesteps, texts, frame_mask)
        weights = to_generate[:, None].float().expand_as(target)
        squared = F.mse_loss(prediction.float(), target, reduction="none")
        loss = per_sample_masked_mean(squared, weights)
        share = to_generate.sum() / frame_mask.sum().clamp(min=1)
        return DiffusionLoss(loss, share.detach())

    @torch.no_grad()
    def generate(
        self,
        texts: list[str],
        num_frames: int,
        *,
        sampling: DiffusionSamplingConfig | None = None,
        seed: int | Sequence[int] | None = None,
        given: torch.Tensor | None = None,
        to_generate: torch.Tensor | None = None,
        on_step: Callable[[], None] | None = None,
    ) -> torch.Tensor:
        """Latents [B, C, T] (in the codec's scale) for a batch of captions.

        `given` [B, C, T] latents and `to_generate` [B, T] (True = generate) inpaint or
        continue: the given frames are kept exactly. Each row's noise comes from its own
        generator (`seed[r]`, or `seed + r`), so a row does not depend on its batch mates.
        """
        sampling = sampling or DiffusionSamplingConfig()
        # Without a text path the conditional and unconditional rows are the same.
        guided = sampling.uses_guidance and self.config.dit.text_path
        rows = guided_captions(texts, guided)
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        batch, device = len(texts), self.device
        shape = (batch, self.latent_channels, num_frames)
        known, generate_mask = self._known_frames(given, to_generate, shape)
        generators = row_generators(seed, batch, device)
        if generators is None:
            x = torch.randn(shape, device=device)
        else:
            x = torch.stack(
                [torch.randn(shape[1:], generator=g, device=device) for g in generators]
            )
        states, mask = self._context(rows)
        scheduler = self.config.diffusion.scheduler()
        scheduler.set_timesteps(sampling.steps, device=device)
        repeat = 2 if guided else 1
        given_input = self._with_stand_in(known, generate_mask).repeat(repeat, 1, 1)
        flags = generate_mask.repeat(repeat, 1)
        for timestep in scheduler.timesteps:
            steps = timestep.expand(batch * repeat).to(device)
            velocity = self.dit(x.repeat(repeat, 1, 1), given_input, flags, steps, states, mask)
            if guided:
                velocity = guide(
                    velocity[:batch], velocity[batch:], sampling.cfg_scale, sampling.cfg_rescale
                )
            x = scheduler.step(
                velocity, timestep, x, eta=sampling.eta, generator=generators
            ).prev_sample
            if on_step is not None:
                on_step()
        # The given frames come back bit for bit, not through normalise/denormalise.
        kept = known if given is None else given.to(device).float()
        return torch.where(generate_mask[:, None], self.denormalise(x), kept)

    def _known_frames(
        self,
        given: torch.Tensor | None,
        to_generate: torch.Tensor | None,
        shape: tuple[int, int, int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised given latents and the generate mask, checked; all-generate if none."""
        batch, _, frames = shape
        if given is None:
            if to_generate is not None:
                raise ValueError("to_generate needs the given latents")
            return (
                torch.zeros(shape, device=self.device),
                torch.ones(batch, frames, dtype=torch.bool, device=self.device),
            )
        if tuple(given.shape) != shape:
            raise ValueError(f"given latents must be {list(shape)}, got {list(given.shape)}")
        if to_generate is None or tuple(to_generate.shape) != (batch, frames):
            raise ValueError(f"to_generate must be a [{batch}, {frames}] bool mask")
        return self.normalise(given.to(self.device).float()), to_generate.to(self.device).bool()
