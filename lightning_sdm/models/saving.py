"""A model directory: config.json, model.safetensors and text_encoder/ (the T5 copy)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Self

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from lightning_sdm.conditioning import T5Conditioner
from lightning_sdm.errors import MissingFile, UserInputError

CONFIG_FILE = "config.json"
FAMILY_KEY = "family"  # config.json's record of the model family that reads the directory
WEIGHTS_FILE = "model.safetensors"
TEXT_ENCODER_DIR = "text_encoder"
ENCODER_PREFIX = "conditioner.encoder."


def save_model_directory(
    model: nn.Module,
    conditioner: T5Conditioner,
    config: dict[str, Any],
    directory: str | Path,
    family: str,
) -> Path:
    """Weights without the T5 encoder (saved beside, with its tokenizer) and the config,
    whose text section then points at that copy, with the family that reads it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {
        name: tensor.detach().contiguous().cpu()
        for name, tensor in model.state_dict().items()
        if not name.startswith(ENCODER_PREFIX)
    }
    save_file(state, directory / WEIGHTS_FILE)
    conditioner.save_pretrained(directory / TEXT_ENCODER_DIR)
    text = {**config["text"], "pretrained": TEXT_ENCODER_DIR}
    config = {FAMILY_KEY: family, **config, "text": text}
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    return directory


def read_config_data(
    directory: str | Path, overrides: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A saved model's config (its T5 path made absolute), with `overrides` per section."""
    directory = Path(directory)
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise MissingFile(f"{config_path} not found: not a saved lightning_sdm model")
    data = json.loads(config_path.read_text())
    data.pop(FAMILY_KEY, None)  # which class reads the directory, not one of its options
    text_path = data["text"].get("pretrained")
    if text_path is not None and not Path(text_path).is_absolute():
        data["text"]["pretrained"] = str(directory / text_path)
    for section, values in (overrides or {}).items():
        data[section].update(values)
    return data


def read_weights(path: Path, map_location: str = "cpu") -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; a torn or foreign file is one line that names it
    (a copy cut short by a full disk, a download stopped half way)."""
    if not path.is_file():
        raise MissingFile(f"{path} not found: the directory has no weights")
    try:
        return load_file(path, device=map_location)
    except SafetensorError as error:
        raise UserInputError(
            f"{path} is not a whole safetensors file (truncated or damaged: {error})"
        ) from error


def load_weights(
    model: nn.Module,
    directory: str | Path,
    map_location: str = "cpu",
    fresh: Callable[[str], bool] = lambda name: False,
) -> None:
    """The directory's weights into `model`; the T5 encoder came from text_encoder/, and
    parameters `fresh` accepts keep their initialisation (a part the saved model lacks)."""
    state = read_weights(Path(directory) / WEIGHTS_FILE, map_location)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [n for n in missing if not n.startswith(ENCODER_PREFIX) and not fresh(n)]
    if missing or unexpected:
        raise RuntimeError(
            f"weights do not match the config: missing {missing}, unexpected {unexpected}"
        )


class SavedAsDirectory:
    """save_pretrained / read_config / from_pretrained for a text-conditioned model with a
    `config` (to_dict, and `config_class.from_dict`), a T5 `conditioner` and a `family`."""

    config_class: ClassVar[Any]
    family: ClassVar[str]

    def save_pretrained(self, directory: str | Path) -> Path:
        """config.json + model.safetensors + text_encoder/ (the T5 copy)."""
        return save_model_directory(
            self, self.conditioner, self.config.to_dict(), directory, self.family
        )

    @classmethod
    def read_config(
        cls, directory: str | Path, overrides: dict[str, dict[str, Any]] | None = None
    ) -> Any:
        """A saved model's config (its T5 path made absolute), with `overrides` per section."""
        return cls.config_class.from_dict(read_config_data(directory, overrides))

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        map_location: str = "cpu",
        overrides: dict[str, dict[str, Any]] | None = None,
    ) -> Self:
        """Load in eval mode (like transformers: dropout off until training asks for it);
        `overrides` change config options that leave the weights' shapes alone, or add a
        part the saved model lacks (`fresh_parameters`)."""
        config = cls.read_config(directory, overrides)
        model = cls(config)
        saved = cls.read_config(directory) if overrides else config  # what the weights are
        fresh = cls.fresh_parameters(saved, config)
        load_weights(model, directory, map_location, fresh)
        return model.eval()

    @classmethod
    def fresh_parameters(cls, saved: Any, config: Any) -> Callable[[str], bool]:
        """Which parameters of `config`'s model the `saved` one has no weights for (they
        keep their initialisation): none unless a model class says otherwise."""
        return lambda name: False
