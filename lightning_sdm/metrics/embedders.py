"""Audio embedders and classifiers behind the evaluation metrics, each loaded from a local
directory (nothing downloads) and named by the weights that produced its numbers."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Protocol

import numpy as np
import soxr
import torch

from lightning_sdm.captions import any_cut
from lightning_sdm.errors import UserInputError
from lightning_sdm.local_weights import load_whole


def resample(wav: torch.Tensor, source_rate: int, target_rate: int) -> torch.Tensor:
    """A mono clip [N] at `target_rate` (soxr HQ: band-limited, not interpolation)."""
    wav = wav.detach().float().cpu().reshape(-1)
    if source_rate == target_rate:
        return wav
    out = soxr.resample(wav.numpy().astype(np.float32), source_rate, target_rate, quality="HQ")
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))


def weights_identity(directory: Path) -> str:
    """`name (sha256 of the weights, 16 hex)`: which weights produced a number."""
    files = sorted(directory.glob("*.safetensors")) or sorted(directory.glob("*.bin"))
    digest = hashlib.sha256()
    for file in files:
        with file.open("rb") as handle:
            digest.update(handle.read(1 << 26))
    return f"{directory} (weights {digest.hexdigest()[:16]})"


def _require_directory(directory: str | Path, metric: str, example: str) -> Path:
    path = Path(directory)
    if not (path / "config.json").is_file():
        raise UserInputError(
            f"{metric} needs a local model directory: {path} has no config.json "
            f"(e.g. a save_pretrained copy of {example}; nothing is downloaded)"
        )
    return path


class AudioEmbedder(Protocol):
    sample_rate: int
    dim: int
    name: str

    def embed(self, clips: list[torch.Tensor]) -> list[torch.Tensor]:
        """Mono clips [N] at `sample_rate` -> one [frames, dim] tensor per clip."""
        ...


class CodecLatentEmbedder:
    """The codec's continuous latents, one frame per codec frame: always available."""

    def __init__(self, codec) -> None:
        self.codec = codec
        self.sample_rate = codec.sample_rate
        self.dim = int(codec.model.config.hidden_size)
        where = codec.config.pretrained or "random codec"
        self.name = f"codec latents: {where} (weights {codec.identity().weights_sha256 or '-'})"

    @torch.no_grad()
    def embed(self, clips: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for clip in clips:
            _, latents = self.codec.encode_with_latents(clip[None].to(self.codec.device))
            out.append(latents[0].T.float().cpu())
        return out


class ClapEmbedder:
    """transformers' `ClapModel`: one audio embedding per window of the feature extractor's
    length (long clips are chunked), and text embeddings for the CLAP score."""

    def __init__(self, directory: str | Path) -> None:
        from transformers import AutoFeatureExtractor, AutoTokenizer, ClapModel

        path = _require_directory(directory, "CLAP", "laion/larger_clap_music")
        self.model = load_whole(ClapModel, path, "CLAP directory").eval()
        self.features = AutoFeatureExtractor.from_pretrained(path, local_files_only=True)
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.sample_rate = int(self.features.sampling_rate)
        self.dim = int(self.model.config.projection_dim)
        self.window = int(self.features.nb_max_samples)
        # windows are never longer than the extractor's length: no random crops either way
        self.truncation = "fusion" if self.model.config.audio_config.enable_fusion else "rand_trunc"
        self.name = weights_identity(path)
        # The text model's positions start after its padding index (RoBERTa's layout), so a
        # caption longer than this has no position to take: it is cut, and said to be.
        text = self.model.config.text_config
        self.text_tokens = text.max_position_embeddings - (text.pad_token_id or 0) - 1

    @torch.no_grad()
    def embed(self, clips: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for clip in clips:
            windows = [
                clip[start : start + self.window] for start in range(0, len(clip), self.window)
            ]
            windows = [w for w in windows if len(w) >= self.window // 4] or windows[:1]
            inputs = self.features(
                [w.numpy() for w in windows],
                sampling_rate=self.sample_rate,
                truncation=self.truncation,
                return_tensors="pt",
            )
            out.append(_features(self.model.get_audio_features(**inputs)))
        return out

    @torch.no_grad()
    def embed_text(self, texts: list[str]) -> torch.Tensor:
        limit = self.text_tokens
        tokens = self.tokenizer(
            texts, padding=True, truncation=True, max_length=limit, return_tensors="pt"
        )
        if any_cut(self.tokenizer, texts, tokens["attention_mask"], limit):
            warnings.warn(
                f"a caption is longer than CLAP's text model reads ({limit} tokens); its CLAP "
                "score is of its first tokens",
                stacklevel=2,
            )
        return _features(self.model.get_text_features(**tokens))


def _features(output) -> torch.Tensor:
    """transformers returns a tensor or (newer versions) an output with pooler_output."""
    tensor = output if isinstance(output, torch.Tensor) else output.pooler_output
    return tensor.float()


class ASTClassifier:
    """transformers' `ASTForAudioClassification` (e.g. AudioSet-finetuned AST): label logits
    per clip, for the KL divergence."""

    def __init__(self, directory: str | Path) -> None:
        from transformers import ASTForAudioClassification, AutoFeatureExtractor

        path = _require_directory(directory, "KLD", "MIT/ast-finetuned-audioset-10-10-0.4593")
        self.model = load_whole(ASTForAudioClassification, path, "AST directory").eval()
        self.features = AutoFeatureExtractor.from_pretrained(path, local_files_only=True)
        self.sample_rate = int(self.features.sampling_rate)
        self.num_labels = int(self.model.config.num_labels)
        self.name = weights_identity(path)

    @torch.no_grad()
    def logits(self, clips: list[torch.Tensor]) -> torch.Tensor:
        inputs = self.features(
            [clip.numpy() for clip in clips], sampling_rate=self.sample_rate, return_tensors="pt"
        )
        return self.model(**inputs).logits.float()
