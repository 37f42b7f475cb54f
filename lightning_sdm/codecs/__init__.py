"""Audio codecs: EnCodec tokens and latents, the waveform VAE's latents, and the identity of
the codec shards hold.

The names load their module when first used (PEP 562): EnCodec pulls in transformers and
the VAE diffusers, which the command line's light commands and `--help` never need."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lightning_sdm.codecs.config import TINY_ENCODEC_32KHZ, CodecConfig
    from lightning_sdm.codecs.encodec import EncodecCodec, save_random_codec
    from lightning_sdm.codecs.identity import CodecIdentity
    from lightning_sdm.codecs.loading import Codec, is_vae_directory, load_codec
    from lightning_sdm.codecs.waveform_vae import WaveformVAE

_MODULE_OF = {
    "TINY_ENCODEC_32KHZ": "config",
    "CodecConfig": "config",
    "EncodecCodec": "encodec",
    "save_random_codec": "encodec",
    "CodecIdentity": "identity",
    "Codec": "loading",
    "is_vae_directory": "loading",
    "load_codec": "loading",
    "WaveformVAE": "waveform_vae",
}

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


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_MODULE_OF])
