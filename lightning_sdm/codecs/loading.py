"""The one place that tells codec directories apart: an EnCodec (transformers'
`EncodecModel`: codes and latents) or a waveform VAE (diffusers' `AutoencoderOobleck`:
latents only). Everything else loads a codec through `load_codec` and uses what both give:
rates, `latent_dim`, `identity()`, `encode_with_latents`, `decode_latents`."""

from __future__ import annotations

import json
from pathlib import Path

from lightning_sdm.codecs.encodec import CodecConfig, EncodecCodec
from lightning_sdm.codecs.waveform_vae import VAE_CLASS_NAME, WaveformVAE
from lightning_sdm.errors import UserInputError
from lightning_sdm.presets import is_random

Codec = EncodecCodec | WaveformVAE


def is_vae_directory(directory: str | Path) -> bool:
    """Whether `directory` holds a saved waveform VAE (diffusers names its class there)."""
    try:
        config = json.loads((Path(directory) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("_class_name") == VAE_CLASS_NAME


def load_codec(config: CodecConfig) -> Codec:
    """The codec `config.pretrained` names: a waveform VAE directory or an EnCodec one (or
    a random EnCodec from `config.encodec_config`)."""
    if not is_random(config.pretrained) and is_vae_directory(str(config.pretrained)):
        try:
            return WaveformVAE.from_pretrained(str(config.pretrained))
        except UserInputError:
            raise  # names the directory already
        except (OSError, ValueError) as error:
            raise UserInputError(f"waveform VAE {config.pretrained}: {error}") from error
    return EncodecCodec(config)
