"""Turn a training checkpoint into a self-contained model directory for `generate` (an LM)
or for `tokenize --codec-dir` (a codec)."""

from __future__ import annotations

import json
from pathlib import Path

from lightning_sdm.atomic import write_directory
from lightning_sdm.codecs import CodecConfig, EncodecCodec
from lightning_sdm.errors import UserInputError

CODEC_DIR = "codec"
EXPORT_FILE = "export.json"


def trained_segment_frames(model_dir: str | Path) -> int | None:
    """The crop length the exported model was trained on, when its export says so."""
    path = Path(model_dir) / EXPORT_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("trained_segment_frames")


def export_checkpoint(
    checkpoint_path: str | Path,
    output: str | Path,
    codec_dir: str | None = None,
    merge: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write config.json + model.safetensors (+ text_encoder/, codec/) from a checkpoint.

    An existing non-empty `output` is refused unless `overwrite`, and then replaced whole:
    the export is written beside it and swapped in, so no file of the old model remains.

    With EMA weight averaging, Lightning stores the averaged weights as the checkpoint's
    state_dict (the raw ones under current_model_state), so the export carries EMA weights.
    A LoRA run's checkpoint exports as its adapter alone (over the directory it started
    from), or with `merge` as a whole model with the adapter folded in.
    """
    from lightning_sdm.checkpoints import is_checkpoint, load_checkpoint, require_readable

    checkpoint_path = Path(checkpoint_path)
    if not is_checkpoint(checkpoint_path):
        raise FileNotFoundError(f"checkpoint {checkpoint_path} not found")
    require_readable(checkpoint_path)
    checkpoint = load_checkpoint(checkpoint_path)  # a file, or FSDP's folder of shards
    write_directory(
        output,
        lambda folder: _export_into(checkpoint, checkpoint_path, folder, codec_dir, merge),
        overwrite,
    )
    return Path(output)


def _export_into(
    checkpoint: dict, checkpoint_path: Path, output: Path, codec_dir: str | None, merge: bool
) -> Path:
    from lightning_sdm.tasks.diffusion_task import (
        DIFFUSION_FAMILY_KEY,
        diffusion_task_from_checkpoint,
    )
    from lightning_sdm.tasks.lm_task import ADAPTER_BASE_KEY, task_from_checkpoint

    if "encodec_config" in checkpoint.get("hyper_parameters", {}):
        return _export_codec(checkpoint, output)
    if DIFFUSION_FAMILY_KEY in checkpoint.get("hyper_parameters", {}):
        if merge:
            raise UserInputError(f"{checkpoint_path} is a diffusion model: it has no adapter")
        output = diffusion_task_from_checkpoint(checkpoint).model.save_pretrained(output)
        return _finish_export(checkpoint, checkpoint_path, output, codec_dir)
    model = task_from_checkpoint(checkpoint).model
    if model.config.adapter is None and merge:
        raise UserInputError(f"{checkpoint_path} has no adapter: export it without --merge")
    if model.config.adapter is not None and not merge:
        base = checkpoint.get(ADAPTER_BASE_KEY)
        if base is None:
            raise UserInputError(
                f"{checkpoint_path}'s adapter run did not start from a model directory "
                "(model.init_from), so there is no base to load it over: export with --merge"
            )
        output = model.save_adapter(output, base)
    else:
        if merge:
            model.merge_adapter()
        output = model.save_pretrained(output)
    return _finish_export(checkpoint, checkpoint_path, output, codec_dir)


def _finish_export(
    checkpoint: dict, checkpoint_path: Path, output: Path, codec_dir: str | None
) -> Path:
    """The codec beside the model (when given) and where the weights came from."""
    from lightning_sdm.tasks.lm_task import TRAINED_FRAMES_KEY

    if codec_dir is not None:
        EncodecCodec(CodecConfig(pretrained=codec_dir)).save_pretrained(output / CODEC_DIR)
    provenance = {
        "checkpoint": str(checkpoint_path.resolve()),
        "global_step": checkpoint.get("global_step"),
        "ema_weights": "current_model_state" in checkpoint,
        TRAINED_FRAMES_KEY: checkpoint.get(TRAINED_FRAMES_KEY),
    }
    (output / EXPORT_FILE).write_text(json.dumps(provenance, indent=2))
    return output


def _export_codec(checkpoint: dict, output: str | Path) -> Path:
    """A codec task's checkpoint becomes an EncodecModel directory (EMA weights when kept)."""
    from lightning_sdm.tasks.codec_task import CodecTask

    task = CodecTask(**checkpoint["hyper_parameters"])
    task.load_state_dict(checkpoint["state_dict"])
    return task.save_codec(output)
