"""Audio codecs: EnCodec tokens and latents."""

from lightning_sdm.codecs.encodec import TINY_ENCODEC_32KHZ, CodecConfig, EncodecCodec

__all__ = ["TINY_ENCODEC_32KHZ", "CodecConfig", "EncodecCodec"]
