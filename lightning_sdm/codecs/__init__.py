"""Audio codecs: EnCodec tokens and latents."""

from lightning_sdm.codecs.encodec import (
    TINY_ENCODEC_32KHZ,
    CodecConfig,
    EncodecCodec,
    codec_mismatch,
    describe_codec,
    save_random_codec,
)

__all__ = [
    "TINY_ENCODEC_32KHZ",
    "CodecConfig",
    "EncodecCodec",
    "codec_mismatch",
    "describe_codec",
    "save_random_codec",
]
