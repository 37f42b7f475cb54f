"""The latent diffusion family (EzAudio-DiT): continuous codec latents, denoised with DDIM."""

from __future__ import annotations

from lightning_sdm.codecs import EncodecCodec
from lightning_sdm.errors import UserInputError
from lightning_sdm.families.registry import ModelFamily, register
from lightning_sdm.generation.family_generation import diffusion_generation
from lightning_sdm.models.text_to_audio_diffusion import TextToAudioDiffusion
from lightning_sdm.tasks.diffusion_task import TextToAudioDiffusionTask


def check_codec(codec: EncodecCodec, model: TextToAudioDiffusion) -> None:
    """The codec decodes latents as wide as the model generates."""
    if codec.latent_dim != model.latent_channels:
        raise UserInputError(
            f"the codec's latents have {codec.latent_dim} channels, the model generates "
            f"{model.latent_channels}: pass the codec the model was trained with "
            "(--codec_dir)"
        )


DIFFUSION_FAMILY = register(
    ModelFamily(
        model_class=TextToAudioDiffusion,
        task_class=TextToAudioDiffusionTask,
        description="a latent diffusion model",
        options_section="diffusion",
        generation=diffusion_generation,
        check_codec=check_codec,
    )
)
