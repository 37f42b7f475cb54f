"""Turn a training checkpoint into a self-contained model directory for `generate` (an LM)
or for `tokenize --codec-dir` (a codec)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightning_sdm.atomic import write_directory
from lightning_sdm.codecs import CodecConfig, load_codec
from lightning_sdm.codecs.identity import (
    TRAINED_CODEC_KEY,
    CodecIdentity,
    check_trained_codec,
    recorded_codec,
)
from lightning_sdm.errors import UserInputError
from lightning_sdm.runs.run_codec import CODEC_DIR, checkpoint_codec

EXPORT_FILE = "export.json"


def _provenance(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / EXPORT_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def trained_segment_frames(model_dir: str | Path) -> int | None:
    """The crop length the exported model was trained on, when its export says so."""
    return _provenance(model_dir).get("trained_segment_frames")


def recorded_trained_codec(model_dir: str | Path) -> CodecIdentity | None:
    """The codec whose tokens the exported (or imported) model was trained on, when known."""
    return recorded_codec(_provenance(model_dir))


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
    from lightning_sdm.runs.checkpoints import (
        load_checkpoint,
        require_checkpoint,
        require_readable,
    )

    checkpoint_path = Path(checkpoint_path)
    require_checkpoint(checkpoint_path)
    require_readable(checkpoint_path)
    checkpoint = load_checkpoint(checkpoint_path)  # a file, or FSDP's folder of shards
    write_directory(
        output,
        lambda folder: _export_into(checkpoint, checkpoint_path, folder, codec_dir, merge),
        overwrite,
        inputs=[checkpoint_path, codec_dir],
        purpose="export",
    )
    return Path(output)


def _export_into(
    checkpoint: dict, checkpoint_path: Path, output: Path, codec_dir: str | None, merge: bool
) -> Path:
    from lightning_sdm.families import family_of_checkpoint
    from lightning_sdm.tasks.autoencoder_task import export_autoencoder

    exported = export_autoencoder(checkpoint, output)  # a codec's or a VAE's checkpoint
    if exported is not None:
        return exported
    family = family_of_checkpoint(checkpoint, checkpoint_path)
    task = family.task_class.from_checkpoint(checkpoint)
    try:
        output = task.export_model(output, merge)
    except UserInputError as error:
        raise UserInputError(f"{checkpoint_path}: {error}") from error
    return _finish_export(checkpoint, checkpoint_path, output, codec_dir)


def _finish_export(
    checkpoint: dict, checkpoint_path: Path, output: Path, codec_dir: str | None
) -> Path:
    """The codec beside the model (when given) and where the weights came from."""
    from lightning_sdm.models.adapters import adapter_base
    from lightning_sdm.tasks.text_conditioned import TRAINED_FRAMES_KEY

    trained = recorded_codec(checkpoint)
    role = "--codec_dir"
    if codec_dir is None and adapter_base(output) is None:  # an adapter uses its base's
        found = checkpoint_codec(checkpoint_path, trained)
        codec_dir, role = (str(found), f"the run's codec {found}") if found else (None, role)
    if codec_dir is not None:
        codec = load_codec(CodecConfig(pretrained=codec_dir))
        check_trained_codec(trained, codec.identity(), str(checkpoint_path), role)
        codec.save_pretrained(output / CODEC_DIR)
    provenance = {
        "checkpoint": str(checkpoint_path.resolve()),
        "global_step": checkpoint.get("global_step"),
        "ema_weights": "current_model_state" in checkpoint,
        TRAINED_FRAMES_KEY: checkpoint.get(TRAINED_FRAMES_KEY),
        TRAINED_CODEC_KEY: checkpoint.get(TRAINED_CODEC_KEY),
    }
    (output / EXPORT_FILE).write_text(json.dumps(provenance, indent=2))
    return output
