"""EnCodec through transformers' `EncodecModel`: codes, continuous latents and decoding.

Uses the model's encoder, residual quantizer and decoder directly, so one pass yields both
the int codes (the LM's tokens) and the pre-quantization latents (the diffusion family's
input). Long tracks are encoded in chunks with context on both sides.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn
from transformers import EncodecConfig, EncodecModel

from lightning_sdm.codecs.chunking import encode_in_chunks
from lightning_sdm.codecs.config import CodecConfig
from lightning_sdm.codecs.identity import CodecIdentity, weights_fingerprint
from lightning_sdm.errors import MissingFile
from lightning_sdm.local_weights import load_whole
from lightning_sdm.presets import is_random


class EncodecCodec(nn.Module):
    def __init__(
        self, config: CodecConfig | None = None, model: EncodecModel | None = None
    ) -> None:
        super().__init__()
        self.config = config or CodecConfig()
        self.model = model if model is not None else _load_encodec(self.config)
        self.model.eval().requires_grad_(False)
        model_config = self.model.config
        if model_config.normalize or model_config.chunk_length_s is not None:
            raise ValueError(
                "only EnCodec models without input normalisation or chunking are supported "
                "(facebook/encodec_32khz is one)"
            )
        if model_config.audio_channels != 1:
            raise ValueError("only mono EnCodec models are supported")
        self.bandwidth = self.config.bandwidth or max(model_config.target_bandwidths)
        self.num_codebooks = self.model.quantizer.get_num_quantizers_for_bandwidth(self.bandwidth)
        self._fingerprint: str | None = None

    @property
    def sample_rate(self) -> int:
        return int(self.model.config.sampling_rate)

    @property
    def hop_length(self) -> int:
        return int(math.prod(self.model.config.upsampling_ratios))

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def cardinality(self) -> int:
        return int(self.model.config.codebook_size)

    @property
    def latent_dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def fingerprint(self) -> str:
        """A hash of the weights (made once): two random codecs never pass for one another."""
        if self._fingerprint is None:
            self._fingerprint = weights_fingerprint(self.model)
        return self._fingerprint

    def identity(self) -> CodecIdentity:
        """What a token grid depends on: stored with shards to refuse mixing codecs."""
        return CodecIdentity(
            weights_sha256=self.fingerprint(),
            pretrained=self.config.pretrained,
            sample_rate=self.sample_rate,
            frame_rate=self.frame_rate,
            num_codebooks=self.num_codebooks,
            cardinality=self.cardinality,
            bandwidth=self.bandwidth,
            latent_dim=self.latent_dim,
        )

    def num_frames(self, num_samples: int) -> int:
        return math.ceil(num_samples / self.hop_length)

    @torch.no_grad()
    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """wav [B, N] (mono, codec rate) -> codes [B, C, T] long."""
        return self.encode_with_latents(wav, keep_latents=False)[0]

    @torch.no_grad()
    def encode_with_latents(
        self,
        wav: torch.Tensor,
        keep_latents: bool = True,
        before_chunk: Callable[[], None] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """wav [B, N] -> (codes [B, C, T], latents [B, D, T] or None), chunked for long input.

        `before_chunk` runs before each chunk (a stop request raises from it)."""
        if wav.dim() == 1:
            wav = wav[None]
        if wav.dim() == 3 and wav.shape[1] == 1:
            wav = wav[:, 0]
        if wav.dim() != 2:
            raise ValueError(f"expected mono audio [B, N], got shape {tuple(wav.shape)}")
        wav = wav.to(self.device, torch.float32)

        def encode_window(window: torch.Tensor) -> tuple[torch.Tensor, ...]:
            embeddings = self.model.encoder(window[:, None])
            codes = self.model.quantizer.encode(embeddings, self.bandwidth).transpose(0, 1)
            return (codes, embeddings) if keep_latents else (codes,)

        rate = self.sample_rate
        outputs = encode_in_chunks(
            wav, self.hop_length, int(self.config.chunk_seconds * rate),
            int(self.config.context_seconds * rate), encode_window, before_chunk,
        )  # fmt: skip
        return outputs[0], outputs[1] if keep_latents else None

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, C, T] -> wav [B, T * hop] at the codec rate."""
        if codes.dim() != 3 or codes.shape[1] != self.num_codebooks:
            raise ValueError(
                f"expected codes [B, {self.num_codebooks}, T], got shape {tuple(codes.shape)}"
            )
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.cardinality):
            raise ValueError(f"codes must lie in [0, {self.cardinality})")
        embeddings = self.model.quantizer.decode(codes.to(self.device, torch.long).transpose(0, 1))
        return self.model.decoder(embeddings)[:, 0]

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Continuous latents [B, D, T] (what `encode_with_latents` returns, or a diffusion
        model's output) -> wav [B, T * hop], without quantising them."""
        if latents.dim() != 3 or latents.shape[1] != self.latent_dim:
            raise ValueError(
                f"expected latents [B, {self.latent_dim}, T], got shape {tuple(latents.shape)}"
            )
        return self.model.decoder(latents.to(self.device, torch.float32))[:, 0]

    def save_pretrained(self, directory: str | Path) -> None:
        self.model.save_pretrained(Path(directory))

    # What the demo measures against: the codec's round trip, a random codec of its shape,
    # and audio decoded from random points of its space.
    display_name = "codec"
    random_audio_kind = "random codes through the codec"

    def round_trip(self, wav: torch.Tensor) -> torch.Tensor:
        """wav [B, N] -> encoded to codes and decoded, [B, N]."""
        return self.decode(self.encode(wav))[:, : wav.shape[-1]]

    def random_like(self) -> EncodecCodec:
        """A codec of this architecture with random weights (seed with torch first)."""
        architecture = self.model.config.to_dict()
        shape = {name: architecture[name] for name in CodecConfig().encodec_config}
        return EncodecCodec(CodecConfig(encodec_config=shape))

    def random_audio(
        self, count: int, frames: int, generator: torch.Generator, reference: torch.Tensor
    ) -> torch.Tensor:
        """[count, frames x hop]: uniformly random codes, decoded (`reference` unused)."""
        shape = (count, self.num_codebooks, frames)
        return self.decode(torch.randint(0, self.cardinality, shape, generator=generator))


RANDOM_CODEC_FILE = "random_codec.json"


def save_random_codec(directory: str | Path, seed: int, config: CodecConfig | None = None) -> Path:
    """A random codec built from `seed` and saved, so its tokens stay decodable and a rerun
    reuses it; an existing one is kept (a different seed there is an error)."""
    directory = Path(directory)
    marker = directory / RANDOM_CODEC_FILE
    if (directory / "config.json").is_file():
        if marker.is_file():
            saved_seed = json.loads(marker.read_text(encoding="utf-8"))["seed"]
            if saved_seed != seed:
                raise ValueError(
                    f"{directory} holds the random codec of seed {saved_seed}, not {seed}; "
                    "use that seed or another output folder"
                )
        return directory
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        codec = EncodecCodec(replace(config or CodecConfig(), pretrained=None))
    codec.save_pretrained(directory)
    marker.write_text(json.dumps({"seed": seed}), encoding="utf-8")
    return directory


@torch.no_grad()
def _spread_codebooks(model: EncodecModel, probe_seconds: float = 2.0) -> None:
    """Give a freshly built codec usable codebooks.

    transformers builds EnCodec with all-zero codebooks (training fills them by k-means on
    the first batch), so a random-weight codec would map every frame to code 0. Each level
    gets random entries at the scale of the residual it quantizes, measured on a fixed
    probe of tones and noise, so random codecs give varied, audio-dependent tokens.
    """
    rate = model.config.sampling_rate
    t = torch.arange(int(probe_seconds * rate)) / rate
    generator = torch.Generator().manual_seed(0)
    probe = sum(0.2 * torch.sin(2 * torch.pi * f * t) for f in (110.0, 440.0, 1760.0))
    probe = probe + 0.05 * torch.randn(t.shape, generator=generator)
    residual = model.encoder(probe[None, None].float())[0].T  # [frames, D]
    for layer in model.quantizer.layers:
        codebook = layer.codebook
        entries = torch.randn(codebook.embed.shape) * residual.std(dim=0) + residual.mean(dim=0)
        codebook.embed.copy_(entries)
        codebook.embed_avg.copy_(entries)
        residual = residual - codebook.decode(codebook.encode(residual))


def _load_encodec(config: CodecConfig) -> EncodecModel:
    """Local directories only: this never reaches a model hub."""
    if is_random(config.pretrained):
        model = EncodecModel(EncodecConfig(**config.encodec_config))
        _spread_codebooks(model)
        return model
    path = Path(config.pretrained)
    if not path.is_dir():
        raise MissingFile(
            f"EnCodec directory {path} does not exist; download facebook/encodec_32khz once and "
            "point `pretrained` at the local copy (this code never fetches weights)"
        )
    return load_whole(EncodecModel, path, "EnCodec directory")
