"""Audio codecs: EnCodec tokens and latents, and the identity of the codec shards hold."""

from lightning_sdm.codecs.encodec import (
    TINY_ENCODEC_32KHZ,
    CodecConfig,
    EncodecCodec,
    save_random_codec,
)
from lightning_sdm.codecs.identity import CodecIdentity

__all__ = [
    "TINY_ENCODEC_32KHZ",
    "CodecConfig",
    "CodecIdentity",
    "EncodecCodec",
    "save_random_codec",
]
