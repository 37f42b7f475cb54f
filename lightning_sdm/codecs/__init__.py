"""Audio codecs: EnCodec tokens and latents, the waveform VAE's latents, and the identity of
the codec shards hold."""

from lightning_sdm.codecs.encodec import (
    TINY_ENCODEC_32KHZ,
    CodecConfig,
    EncodecCodec,
    save_random_codec,
)
from lightning_sdm.codecs.identity import CodecIdentity
from lightning_sdm.codecs.loading import Codec, is_vae_directory, load_codec
from lightning_sdm.codecs.waveform_vae import WaveformVAE

__all__ = [
    "TINY_ENCODEC_32KHZ",
    "Codec",
    "CodecConfig",
    "CodecIdentity",
    "EncodecCodec",
    "WaveformVAE",
    "is_vae_directory",
    "load_codec",
    "save_random_codec",
]
