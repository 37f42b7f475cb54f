"""Tiny random CLAP and AST directories, built from configs (nothing downloads)."""

from pathlib import Path

import torch
from transformers import (
    ASTConfig,
    ASTFeatureExtractor,
    ASTForAudioClassification,
    ByT5Tokenizer,
    ClapConfig,
    ClapFeatureExtractor,
    ClapModel,
)


def save_tiny_clap(directory: Path) -> Path:
    torch.manual_seed(0)
    text = {
        "vocab_size": 384,
        "hidden_size": 16,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 32,
        "max_position_embeddings": 64,
        "pad_token_id": 0,
    }
    audio = {"spec_size": 64, "patch_size": 4, "patch_stride": (4, 4), "num_mel_bins": 16,
             "window_size": 4, "hidden_size": 32, "depths": [1, 1], "num_attention_heads": [2, 2],
             "patch_embeds_hidden_size": 16, "projection_hidden_size": 32,
             "enable_fusion": False}  # fmt: skip
    model = ClapModel(ClapConfig(text_config=text, audio_config=audio, projection_dim=8))
    model.save_pretrained(directory)
    ClapFeatureExtractor(
        feature_size=16, sampling_rate=16000, max_length_s=1, hop_length=160, fft_window_size=400
    ).save_pretrained(directory)
    ByT5Tokenizer().save_pretrained(directory)
    return directory


def save_tiny_ast(directory: Path, num_labels: int = 5) -> Path:
    torch.manual_seed(0)
    config = ASTConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        num_mel_bins=16, max_length=64, frequency_stride=4, time_stride=4, patch_size=8,
        num_labels=num_labels,
    )  # fmt: skip
    ASTForAudioClassification(config).save_pretrained(directory)
    ASTFeatureExtractor(num_mel_bins=16, max_length=64, sampling_rate=16000).save_pretrained(
        directory
    )
    return directory
