"""What names an EnCodec, apart from the model: the command line's types import this
without loading transformers, so `lightning-sdm --help` and the light commands start fast."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Shaped like facebook/encodec_32khz (32 kHz, hop 640 = 50 Hz, 4 x 2048 codes at 2.2 kbps)
# but a few hundred thousand parameters: for tests and the CPU demo.
TINY_ENCODEC_32KHZ: dict[str, Any] = {
    "sampling_rate": 32000,
    "audio_channels": 1,
    "normalize": False,
    "chunk_length_s": None,
    "codebook_size": 2048,
    "codebook_dim": 16,
    "hidden_size": 16,
    "num_filters": 4,
    "num_lstm_layers": 2,
    "upsampling_ratios": [8, 5, 4, 4],
    "target_bandwidths": [2.2],
    "use_causal_conv": False,
    "use_conv_shortcut": False,
}


@dataclass(frozen=True)
class CodecConfig:
    """A local EnCodec, or a small random one built from `encodec_config`.

    Args:
        pretrained: A local save_pretrained copy of facebook/encodec_32khz (nothing is
            downloaded), or `random` for a small random codec built from encodec_config
            (its tokens are not music; `fit` refuses shards of one unless asked).
        encodec_config: transformers EncodecConfig fields of a random codec.
        bandwidth: kbps; None takes the model's highest target bandwidth (all codebooks).
        chunk_seconds: Long audio is encoded in chunks of this length.
        context_seconds: Context on each side of a chunk.
    """

    pretrained: str | None = None
    encodec_config: dict[str, Any] = field(default_factory=lambda: dict(TINY_ENCODEC_32KHZ))
    bandwidth: float | None = None  # kbps; None takes the model's highest target bandwidth
    chunk_seconds: float = 60.0
    context_seconds: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
