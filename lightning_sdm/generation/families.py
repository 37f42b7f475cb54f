"""What generation needs from a model family: how one window is made and what it costs in
model calls, what the codec turns its output into, what an audio prompt becomes, and what
the sidecar records. The runner is the same for both families."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from lightning_sdm.codecs import EncodecCodec
from lightning_sdm.errors import UserInputError
from lightning_sdm.generation.windows import WindowGenerator
from lightning_sdm.models.sampling import DiffusionSamplingConfig, SamplingConfig
from lightning_sdm.models.text_to_audio_diffusion import TextToAudioDiffusion
from lightning_sdm.models.text_to_music import TextToMusicLM
from lightning_sdm.nn.packed_linear import PackChoice

# Window w > 0 of a request draws from seed + w * WINDOW_SEED_STEP: fixed, and apart from
# the seeds of neighbouring requests.
WINDOW_SEED_STEP = 1_000_003


class FamilyGeneration(Protocol):
    output_name: str  # what a window returns: "codes" or "latents" (and the file they go to)
    steps_name: str  # the sidecar's name for model calls per sample

    def steps(self, length: int) -> int: ...

    def window_generator(
        self, captions: list[str], seeds: list[int], on_step: Callable[[], None]
    ) -> WindowGenerator: ...

    def decode(self, codec: EncodecCodec, output: torch.Tensor) -> torch.Tensor: ...

    def encode_prompt(self, codec: EncodecCodec, wav: torch.Tensor) -> torch.Tensor: ...

    def describe(self) -> dict[str, Any]: ...

    def stored(self, output: torch.Tensor) -> torch.Tensor: ...


def check_codec_fits(codec: EncodecCodec, model: TextToMusicLM | TextToAudioDiffusion) -> None:
    """The codec decodes what the model makes: its codebooks, or its latent width."""
    if isinstance(model, TextToAudioDiffusion):
        if codec.latent_dim != model.latent_channels:
            raise UserInputError(
                f"the codec's latents have {codec.latent_dim} channels, the model generates "
                f"{model.latent_channels}: pass the codec the model was trained with "
                "(--codec_dir)"
            )
    elif codec.num_codebooks != model.num_levels or codec.cardinality != model.cardinality:
        raise UserInputError(
            f"the codec has {codec.num_codebooks} codebooks of {codec.cardinality} codes, "
            f"the model predicts {model.num_levels} of {model.cardinality}: pass the codec "
            "the model was trained with (--codec_dir)"
        )


def _window_seeds(seeds: Sequence[int], index: int) -> list[int]:
    return [seed + index * WINDOW_SEED_STEP for seed in seeds]


@dataclass
class LMGeneration:
    """Codebook tokens, decoded step by step through the model's pattern."""

    model: TextToMusicLM
    sampling: SamplingConfig
    pack_weights: PackChoice = "auto"
    precision: str = "fp32"  # the weights' dtype while decoding; the model keeps its own
    output_name = "codes"
    steps_name = "decoding_steps"

    def steps(self, length: int) -> int:
        return self.model.lm.layout(length).num_decoding_steps

    def window_generator(
        self, captions: list[str], seeds: list[int], on_step: Callable[[], None]
    ) -> WindowGenerator:
        def window(length: int, context: torch.Tensor | None, index: int) -> torch.Tensor:
            return self.model.generate(
                captions,
                length,
                sampling=self.sampling,
                prompt_tokens=context,
                seed=_window_seeds(seeds, index),
                on_step=on_step,
                pack_weights=self.pack_weights,
                precision=self.precision,
            )

        return window

    def decode(self, codec: EncodecCodec, output: torch.Tensor) -> torch.Tensor:
        return codec.decode(output)

    def encode_prompt(self, codec: EncodecCodec, wav: torch.Tensor) -> torch.Tensor:
        return codec.encode(wav)

    def describe(self) -> dict[str, Any]:
        lm = self.model.config.lm
        return {
            "family": "lm",
            "pattern": lm.pattern,
            "interleave": lm.interleave,
            "schedule": lm.schedule,
            "sampling": dataclasses.asdict(self.sampling),
        }

    def stored(self, output: torch.Tensor) -> torch.Tensor:
        return output.to(torch.int16)


@dataclass
class DiffusionGeneration:
    """Continuous latents, denoised together; a window continues the previous one by
    inpainting: its first frames are given, the rest generated."""

    model: TextToAudioDiffusion
    sampling: DiffusionSamplingConfig
    output_name = "latents"
    steps_name = "denoising_steps"

    def steps(self, length: int) -> int:
        return self.sampling.steps

    def window_generator(
        self, captions: list[str], seeds: list[int], on_step: Callable[[], None]
    ) -> WindowGenerator:
        model = self.model

        def window(length: int, context: torch.Tensor | None, index: int) -> torch.Tensor:
            given = to_generate = None
            if context is not None:
                batch, channels, known = context.shape
                given = torch.zeros(batch, channels, length, device=context.device)
                given[..., :known] = context
                to_generate = torch.arange(length, device=context.device) >= known
                to_generate = to_generate.expand(batch, -1)
            return model.generate(
                captions,
                length,
                sampling=self.sampling,
                seed=_window_seeds(seeds, index),
                given=given,
                to_generate=to_generate,
                on_step=on_step,
            )

        return window

    def decode(self, codec: EncodecCodec, output: torch.Tensor) -> torch.Tensor:
        return codec.decode_latents(output)

    def encode_prompt(self, codec: EncodecCodec, wav: torch.Tensor) -> torch.Tensor:
        latents = codec.encode_with_latents(wav)[1]
        assert latents is not None
        return latents

    def describe(self) -> dict[str, Any]:
        return {"family": "diffusion", "sampling": dataclasses.asdict(self.sampling)}

    def stored(self, output: torch.Tensor) -> torch.Tensor:
        return output.float()


def family_generation(
    model: TextToMusicLM | TextToAudioDiffusion,
    sampling: SamplingConfig,
    diffusion: DiffusionSamplingConfig,
    precision: str,
    cfg_scale: float | None = None,
    pack_weights: PackChoice = "auto",
) -> FamilyGeneration:
    """The model's family with its sampling options (`cfg_scale`, when given, for either),
    refusing options that belong to the other family: they would be silently ignored."""
    if isinstance(model, TextToAudioDiffusion):
        if sampling != SamplingConfig():
            raise UserInputError(
                "--sampling.* (temperature, top_k, top_p) are for codebook LMs; this is a "
                "diffusion model: use --diffusion.steps, --diffusion.cfg_rescale, "
                "--diffusion.eta and --cfg"
            )
        if precision != "fp32":
            raise UserInputError(f"--precision {precision} is for codebook LMs' decoding")
        if pack_weights != "auto":
            shown = str(pack_weights).lower()
            raise UserInputError(f"--pack_weights {shown} is for codebook LMs' decoding")
        if cfg_scale is not None:
            diffusion = dataclasses.replace(diffusion, cfg_scale=cfg_scale)
        return DiffusionGeneration(model, diffusion)
    if diffusion != DiffusionSamplingConfig():
        raise UserInputError(
            "--diffusion.* options are for diffusion models; this is a codebook LM: use "
            "--sampling.temperature, --sampling.top_k, --sampling.top_p and --cfg"
        )
    if cfg_scale is not None:
        sampling = dataclasses.replace(sampling, cfg_scale=cfg_scale)
    return LMGeneration(model, sampling, pack_weights, precision)
