"""Turn a training checkpoint into a self-contained model directory for `generate`."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lightning_sdm.codecs import CodecConfig, EncodecCodec

CODEC_DIR = "codec"


def export_checkpoint(
    checkpoint_path: str | Path, output: str | Path, codec_dir: str | None = None
) -> Path:
    """Write config.json + model.safetensors (+ text_encoder/, codec/) from a checkpoint.

    With EMA weight averaging, Lightning stores the averaged weights as the checkpoint's
    state_dict (the raw ones under current_model_state), so the export carries EMA weights.
    """
    from lightning_sdm.tasks.lm_task import TextToMusicTask

    checkpoint_path = Path(checkpoint_path)
    if not checkpoint_path.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint_path} not found")
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    task = TextToMusicTask(**checkpoint["hyper_parameters"])
    task.load_state_dict(checkpoint["state_dict"])
    output = task.model.save_pretrained(output)
    if codec_dir is not None:
        EncodecCodec(CodecConfig(pretrained=codec_dir)).save_pretrained(output / CODEC_DIR)
    provenance = {
        "checkpoint": str(checkpoint_path.resolve()),
        "global_step": checkpoint.get("global_step"),
        "ema_weights": "current_model_state" in checkpoint,
    }
    (output / "export.json").write_text(json.dumps(provenance, indent=2))
    return output
