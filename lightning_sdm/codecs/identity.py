"""Which codec made a token grid: stored in index.json and every shard's sidecar, compared
before training, sampling and adding shards, so codecs are never mixed."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lightning_sdm.errors import UserInputError

# Where checkpoints and export.json keep the codec whose tokens a model was trained on.
TRAINED_CODEC_KEY = "trained_codec"


def weights_fingerprint(module: nn.Module) -> str:
    """A hash of a module's weights (names and bytes, 16 hex): two randomly built codecs of
    one architecture never pass for one another."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class CodecIdentity:
    """What a token grid depends on. `pretrained` says where the weights were read from,
    not what they are: the same codec copied elsewhere is the same codec."""

    sample_rate: int
    frame_rate: float
    num_codebooks: int
    cardinality: int
    latent_dim: int | None = None
    bandwidth: float | None = None
    weights_sha256: str | None = None  # None: shards written without one (synthetic)
    pretrained: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CodecIdentity:
        """From index.json (unknown fields from other versions are left out)."""
        known = {field.name for field in dataclasses.fields(cls)}
        try:
            return cls(**{name: value for name, value in data.items() if name in known})
        except TypeError as error:  # a required field is missing
            raise UserInputError(
                f"a codec identity without its rates and sizes: {error}"
            ) from error

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def checkable(self) -> bool:
        """Whether the weights are known, so another codec can be told apart."""
        return self.weights_sha256 is not None

    def differences(self, other: CodecIdentity) -> list[str]:
        """The fields that differ, location aside (for error messages)."""
        names = [field.name for field in dataclasses.fields(self) if field.name != "pretrained"]
        return sorted(name for name in names if getattr(self, name) != getattr(other, name))

    def describe(self) -> str:
        where = self.pretrained or "an unsaved random codec"
        return f"{where} (weights {self.weights_sha256})" if self.weights_sha256 else where


def recorded_codec(record: Mapping[str, Any]) -> CodecIdentity | None:
    """The codec a checkpoint or an export.json records under `TRAINED_CODEC_KEY`, if any."""
    saved = record.get(TRAINED_CODEC_KEY)
    return CodecIdentity.from_dict(saved) if saved else None


def check_trained_codec(
    trained: CodecIdentity | None, given: CodecIdentity, model: str, role: str
) -> None:
    """A model's tokens (or latents) mean something only to the codec they were made with;
    another of the same shape decodes them to noise without an error. Models and
    checkpoints that recorded no codec, or one without a weights hash, pass."""
    if trained is None or not trained.checkable or not given.checkable:
        return
    differing = trained.differences(given)
    if differing:
        raise UserInputError(
            f"{model} was trained on the tokens of {trained.describe()}, but {role} is "
            f"{given.describe()} (differs in {', '.join(differing)}): use the codec it was "
            "trained with"
        )
