"""What generation needs from a model family: how one window is made and what it costs in
model calls, what the codec turns its output into, what an audio prompt becomes, and what
the sidecar records. The runner is the same for every family; the registry
(lightning_sdm.families) says which of these a model gets."""

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


def _window_seeds(seeds: Sequence[int], index: int) -> list[int]:
    return [seed + index * WINDOW_SEED_STEP for seed in seeds]


@dataclass
class LMGeneration:
    """Codebook tokens, decoded step by step through the model's pattern."""

    model: TextToMusicLM
    sampling: SamplingConfig
    pack_weights: PackChoice = "auto"
    precision: str | None = None  # the weights' dtype while decoding (None: as they are)
    output_name = "codes"
    steps_name = "decoding_steps"

    def steps(self, length: int) -> int:
        return self.model.lm.decoding_steps(length)

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


@dataclass(frozen=True)
class DecodingChoices:
    """How a model runs while generating, apart from what it samples: the codebook LM's
    weight precision and matmul path (other families take the defaults only)."""

    precision: str | None = None  # None: the weights as they are
    pack_weights: PackChoice = "auto"

    def refuse_for(self, description: str) -> None:
        """One line naming a choice set away from its default for a family that has none."""
        if self.precision not in (None, "fp32"):
            raise UserInputError(
                f"--precision {self.precision} is for codebook LMs, not {description}"
            )
        if self.pack_weights != "auto":
            shown = str(self.pack_weights).lower()
            raise UserInputError(f"--pack_weights {shown} is for codebook LMs, not {description}")


def lm_generation(
    model: TextToMusicLM, sampling: SamplingConfig, decoding: DecodingChoices
) -> LMGeneration:
    return LMGeneration(model, sampling, decoding.pack_weights, decoding.precision)


def diffusion_generation(
    model: TextToAudioDiffusion, sampling: DiffusionSamplingConfig, decoding: DecodingChoices
) -> DiffusionGeneration:
    decoding.refuse_for("diffusion models")
    return DiffusionGeneration(model, sampling)
