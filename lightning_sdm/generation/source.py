"""What to generate with: an exported model directory or a training checkpoint, its codec,
and an identity that says exactly which weights made a file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from lightning_sdm.codecs import Codec, CodecConfig, load_codec
from lightning_sdm.codecs.identity import CodecIdentity, check_trained_codec, recorded_codec
from lightning_sdm.convert.export import CODEC_DIR, recorded_trained_codec, trained_segment_frames
from lightning_sdm.digests import file_digest
from lightning_sdm.errors import UserInputError, first_line
from lightning_sdm.families import (
    family_of,
    family_of_checkpoint,
    family_of_directory,
)
from lightning_sdm.models.adapters import adapter_base, adapter_weights_file
from lightning_sdm.models.saving import WEIGHTS_FILE
from lightning_sdm.runs.checkpoints import (
    checkpoint_extras,
    is_checkpoint,
    is_sharded_checkpoint,
    load_checkpoint,
    load_failure,
    require_checkpoint,
)
from lightning_sdm.runs.run_codec import checkpoint_codec
from lightning_sdm.tasks.text_conditioned import TRAINED_FRAMES_KEY

GenerativeModel = Any  # a registered family's model (lightning_sdm.families)

DEFAULT_FRAME_RATE = 50.0  # EnCodec 32 kHz, when no codec says otherwise


@dataclass
class GenerationSource:
    model: GenerativeModel  # a model of a registered family
    codec: Codec | None
    trained_segment_frames: int | None  # the crop length seen in training, when known
    identity: dict[str, Any] = field(default_factory=dict)

    @property
    def frame_rate(self) -> float:
        return self.codec.frame_rate if self.codec is not None else DEFAULT_FRAME_RATE


def load_source(
    model_dir: str | None = None, ckpt: str | None = None, codec_dir: str | None = None
) -> GenerationSource:
    """The model from exactly one of `model_dir` / `ckpt`, with the codec from `codec_dir`,
    else the model directory's codec/, else the codec the checkpoint's run trained on."""
    if (model_dir is None) == (ckpt is None):
        raise UserInputError("give either --model DIR (from export) or --ckpt FILE (from fit)")
    if model_dir is not None:
        loaded = _from_directory(Path(model_dir))
    else:
        loaded = _from_checkpoint(Path(str(ckpt)))
    model, identity = loaded.model, loaded.identity
    codec_path = Path(codec_dir) if codec_dir else loaded.codec_path
    codec = None
    if codec_path is not None:
        if not (codec_path / "config.json").is_file():
            raise UserInputError(f"codec directory {codec_path} has no config.json")
        codec = load_codec(CodecConfig(pretrained=str(codec_path)))
        family_of(model).check_codec(codec, model)
        role = "--codec_dir" if codec_dir else f"the codec at {codec_path}"
        check_trained_codec(loaded.trained_codec, codec.identity(), loaded.name, role)
        identity["codec"] = str(codec_path.resolve())  # found again from anywhere (evaluate)
    return GenerationSource(model.eval(), codec, loaded.trained_frames, identity)


def source_family(path: str | Path) -> str:
    """The family's name for a model directory or checkpoint, without building the model
    (a checkpoint is memory-mapped, not read)."""
    path = Path(path)
    if path.is_dir() and not is_sharded_checkpoint(path):
        return family_of_directory(path).name
    if not is_checkpoint(path):
        raise UserInputError(f"{path} is neither a model directory nor a checkpoint")
    try:
        checkpoint = checkpoint_extras(path)
    except Exception as error:  # torch raises several types for corrupt files
        raise UserInputError(f"checkpoint {path} {load_failure(path, error)}") from error
    if not isinstance(checkpoint, dict) or not checkpoint.get("hyper_parameters"):
        raise UserInputError(f"{path} is not a lightning-sdm fit checkpoint")
    return family_of_checkpoint(checkpoint, path).name


def load_path(path: str | Path, codec_dir: str | None = None) -> GenerationSource:
    """A model directory or a checkpoint, told apart by what the path is."""
    path = Path(path)
    if path.is_dir() and not is_sharded_checkpoint(path):
        return load_source(model_dir=str(path), codec_dir=codec_dir)
    return load_source(ckpt=str(path), codec_dir=codec_dir)


class _Loaded(NamedTuple):
    model: GenerativeModel
    name: str  # the directory or checkpoint, for messages
    trained_frames: int | None
    identity: dict[str, Any]
    codec_path: Path | None  # the codec that comes with it, if any
    trained_codec: CodecIdentity | None  # the codec its training tokens came from, if known


def _from_directory(directory: Path) -> _Loaded:
    family = family_of_directory(directory)
    try:
        model = family.model_class.from_pretrained(directory)
    except FileNotFoundError as error:
        raise UserInputError(str(error)) from error
    except UserInputError:
        raise  # says what is wrong already (a torn weights file)
    except (RuntimeError, KeyError, TypeError, ValueError) as error:
        raise UserInputError(f"{directory}: weights and config do not match ({error})") from error
    base = adapter_base(directory)
    # A family that saves its weights under other names: the directory's own files.
    weights = adapter_weights_file(directory) or directory / WEIGHTS_FILE
    weights = weights if weights.is_file() else directory
    identity = {"model": str(directory), "weights_sha256": file_digest(weights)}
    codec = directory / CODEC_DIR
    trained_codec = recorded_trained_codec(directory)
    if base is not None:
        identity["adapter_over"] = str(base)
        if not codec.is_dir():  # an adapter directory uses its base model's codec
            codec = base / CODEC_DIR
        trained_codec = trained_codec or recorded_trained_codec(base)
    return _Loaded(
        model,
        str(directory),
        trained_segment_frames(directory),
        identity,
        codec if codec.is_dir() else None,
        trained_codec,
    )


def _from_checkpoint(path: Path) -> _Loaded:
    require_checkpoint(path)
    try:
        checkpoint = load_checkpoint(path)
    except Exception as error:  # torch raises several types for corrupt files
        raise UserInputError(f"checkpoint {path} {load_failure(path, error)}") from error
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not hparams or "state_dict" not in checkpoint:
        raise UserInputError(f"{path} is not a lightning-sdm fit checkpoint")
    family = family_of_checkpoint(checkpoint, path)
    try:
        task = family.task_class.from_checkpoint(checkpoint)
    except (RuntimeError, TypeError, ValueError) as error:
        if isinstance(error, UserInputError):  # named by the path given, unless it is
            if str(path) in str(error):
                raise
            raise UserInputError(f"{path}: {error}") from error
        raise UserInputError(
            f"{path}: its weights do not match its config ({first_line(error)})"
        ) from error
    identity = {
        "checkpoint": str(path),
        "global_step": checkpoint.get("global_step"),
        # With EMA weight averaging the checkpoint's state_dict holds the averaged weights.
        "ema_weights": "current_model_state" in checkpoint,
        "checkpoint_sha256": file_digest(path),
    }
    trained_codec = recorded_codec(checkpoint)
    codec = checkpoint_codec(path, trained_codec, getattr(task, "adapter_base", None))
    return _Loaded(
        task.model,
        str(path),
        checkpoint.get(TRAINED_FRAMES_KEY),
        identity,
        codec,
        trained_codec,
    )
