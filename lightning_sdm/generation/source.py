"""What to generate with: an exported model directory or a training checkpoint, its codec,
and an identity that says exactly which weights made a file."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lightning_sdm.checkpoints import (
    checkpoint_extras,
    is_checkpoint,
    is_sharded_checkpoint,
    load_checkpoint,
)
from lightning_sdm.codecs import CodecConfig, EncodecCodec
from lightning_sdm.errors import UserInputError
from lightning_sdm.export import CODEC_DIR, trained_segment_frames
from lightning_sdm.generation.families import check_codec_fits
from lightning_sdm.models.text_to_audio_diffusion import TextToAudioDiffusion
from lightning_sdm.models.text_to_music import (
    ADAPTER_FILE,
    ADAPTER_WEIGHTS_FILE,
    CONFIG_FILE,
    WEIGHTS_FILE,
    TextToMusicLM,
)

GenerativeModel = TextToMusicLM | TextToAudioDiffusion

DEFAULT_FRAME_RATE = 50.0  # EnCodec 32 kHz, when no codec says otherwise


@dataclass
class GenerationSource:
    model: GenerativeModel  # a codebook LM or a latent diffusion model
    codec: EncodecCodec | None
    trained_frames: int | None  # the crop length seen in training, when known
    identity: dict[str, Any] = field(default_factory=dict)

    @property
    def frame_rate(self) -> float:
        return self.codec.frame_rate if self.codec is not None else DEFAULT_FRAME_RATE


def file_digest(path: Path, limit: int = 1 << 30) -> str:
    """sha256 of the file's first `limit` bytes (a model's identity, cheap for large ones);
    of a folder's files in name order (a sharded checkpoint)."""
    digest = hashlib.sha256()
    remaining = limit
    for file in sorted(path.iterdir()) if path.is_dir() else [path]:
        with file.open("rb") as handle:
            while remaining > 0 and (chunk := handle.read(min(1 << 20, remaining))):
                digest.update(chunk)
                remaining -= len(chunk)
    return digest.hexdigest()[:16]


def load_source(
    model_dir: str | None = None, ckpt: str | None = None, codec_dir: str | None = None
) -> GenerationSource:
    """The model from exactly one of `model_dir` / `ckpt`, with the codec from `codec_dir`,
    else the model directory's codec/, else the codec the checkpoint's run trained on."""
    if (model_dir is None) == (ckpt is None):
        raise UserInputError("give either --model DIR (from export) or --ckpt FILE (from fit)")
    if model_dir is not None:
        model, trained, identity, default_codec = _from_directory(Path(model_dir))
    else:
        model, trained, identity, default_codec = _from_checkpoint(Path(str(ckpt)))
    codec_path = Path(codec_dir) if codec_dir else default_codec
    codec = None
    if codec_path is not None:
        if not (codec_path / "config.json").is_file():
            raise UserInputError(f"codec directory {codec_path} has no config.json")
        codec = EncodecCodec(CodecConfig(pretrained=str(codec_path)))
        check_codec_fits(codec, model)
        identity["codec"] = str(codec_path)
    return GenerationSource(model.eval(), codec, trained, identity)


def source_family(path: str | Path) -> str:
    """ "lm" or "diffusion" for a model directory or checkpoint, without building the model
    (a checkpoint is memory-mapped, not read)."""
    path = Path(path)
    if path.is_dir() and not is_sharded_checkpoint(path):
        return "diffusion" if _is_diffusion_directory(path) else "lm"
    if not is_checkpoint(path):
        raise UserInputError(f"{path} is neither a model directory nor a checkpoint")
    from lightning_sdm.tasks.diffusion_task import DIFFUSION_FAMILY_KEY

    try:
        checkpoint = checkpoint_extras(path)
    except Exception as error:  # torch raises several types for corrupt files
        raise UserInputError(f"checkpoint {path} is unreadable: {error}") from error
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not hparams:
        raise UserInputError(f"{path} is not a lightning-sdm fit checkpoint")
    return "diffusion" if DIFFUSION_FAMILY_KEY in hparams else "lm"


def load_path(path: str | Path, codec_dir: str | None = None) -> GenerationSource:
    """A model directory or a checkpoint, told apart by what the path is."""
    path = Path(path)
    if path.is_dir() and not is_sharded_checkpoint(path):
        return load_source(model_dir=str(path), codec_dir=codec_dir)
    return load_source(ckpt=str(path), codec_dir=codec_dir)


def _is_diffusion_directory(directory: Path) -> bool:
    config = directory / CONFIG_FILE
    return config.is_file() and "dit" in json.loads(config.read_text())


def _from_directory(directory: Path) -> tuple[GenerativeModel, int | None, dict, Path | None]:
    adapter = (directory / ADAPTER_FILE).is_file()
    if not adapter and not (directory / CONFIG_FILE).is_file():
        raise UserInputError(
            f"{directory} is not a saved lightning_sdm model (no {CONFIG_FILE}); "
            "make one with `lightning-sdm export CKPT DIR`, or pass --ckpt"
        )
    family = TextToAudioDiffusion if _is_diffusion_directory(directory) else TextToMusicLM
    try:
        model = family.from_pretrained(directory)
    except FileNotFoundError as error:
        raise UserInputError(str(error)) from error
    except (RuntimeError, KeyError, TypeError, ValueError) as error:
        raise UserInputError(f"{directory}: weights and config do not match ({error})") from error
    identity = {
        "model": str(directory),
        "weights_sha256": file_digest(
            directory / (ADAPTER_WEIGHTS_FILE if adapter else WEIGHTS_FILE)
        ),
    }
    codec = directory / CODEC_DIR
    if adapter:
        base = Path(json.loads((directory / ADAPTER_FILE).read_text())["base"])
        identity["adapter_over"] = str(base)
        if not codec.is_dir():  # an adapter directory uses its base model's codec
            codec = base / CODEC_DIR
    return model, trained_segment_frames(directory), identity, codec if codec.is_dir() else None


def _from_checkpoint(path: Path) -> tuple[GenerativeModel, int | None, dict, Path | None]:
    from lightning_sdm.tasks.diffusion_task import (
        DIFFUSION_FAMILY_KEY,
        diffusion_task_from_checkpoint,
    )
    from lightning_sdm.tasks.lm_task import TRAINED_FRAMES_KEY, task_from_checkpoint

    if not is_checkpoint(path):
        raise UserInputError(f"checkpoint {path} not found")
    try:
        checkpoint = load_checkpoint(path)
    except Exception as error:  # torch raises several types for corrupt files
        raise UserInputError(f"checkpoint {path} is unreadable: {error}") from error
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not hparams or "state_dict" not in checkpoint:
        raise UserInputError(f"{path} is not a lightning-sdm fit checkpoint")
    if "encodec_config" in hparams:
        raise UserInputError(f"{path} is a codec checkpoint; generation needs the model's")
    from_checkpoint = (
        diffusion_task_from_checkpoint if DIFFUSION_FAMILY_KEY in hparams else task_from_checkpoint
    )
    try:
        task = from_checkpoint(checkpoint)
    except (RuntimeError, TypeError, ValueError) as error:
        raise UserInputError(
            f"{path}: its weights do not match its config ({str(error).splitlines()[0]})"
        ) from error
    identity = {
        "checkpoint": str(path),
        "global_step": checkpoint.get("global_step"),
        # With EMA weight averaging the checkpoint's state_dict holds the averaged weights.
        "ema_weights": "current_model_state" in checkpoint,
        "checkpoint_sha256": file_digest(path),
    }
    return task.model, checkpoint.get(TRAINED_FRAMES_KEY), identity, _run_codec(path)


def _run_codec(checkpoint: Path) -> Path | None:
    """The codec named by the run's config.yaml (RUN/checkpoints/x.ckpt -> RUN/config.yaml)."""
    config_path = checkpoint.resolve().parent.parent / "config.yaml"
    if not config_path.is_file():
        return None
    data = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    section = data.get("data") or {}
    section = section.get("init_args", section)
    pretrained = (section.get("codec") or {}).get("pretrained")
    if not pretrained:
        return None
    # A relative path is relative to where fit ran: here, or an ancestor of the run folder.
    path = Path(pretrained)
    candidates = [path] if path.is_absolute() else [path, *(a / path for a in config_path.parents)]
    for candidate in candidates:
        if (candidate / "config.json").is_file():
            return candidate
    print(
        f"the run trained with the codec {pretrained}, which is not found from here: "
        "pass --codec_dir to write audio"
    )
    return None
