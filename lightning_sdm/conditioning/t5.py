"""Frozen T5 text conditioning with a projection to the decoder width and CFG dropout."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoTokenizer,
    ByT5Tokenizer,
    PreTrainedTokenizerBase,
    T5Config,
    T5EncoderModel,
)

from lightning_sdm.captions import any_cut
from lightning_sdm.errors import MissingFile, UserInputError
from lightning_sdm.local_weights import load_whole
from lightning_sdm.presets import is_random

# The condition the generator uses for its unconditional rows, and CFG dropout's stand-in.
EMPTY_CONDITION = ""

UNCONDITIONAL_KINDS = ("empty_text", "zeros")


class CaptionCutWarning(UserWarning):
    """A caption longer than the encoder reads (`max_length` tokens): its tail is lost."""


TINY_T5 = {"vocab_size": 384, "d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 1, "num_heads": 4}


FROZEN_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class TextConditionerConfig:
    """`pretrained`: a local T5 directory (e.g. a copy of t5-base), or `random` for a small
    random T5 built from `t5_config` (its captions mean nothing; `fit` refuses an unset
    `pretrained` rather than train with one unasked).

    A random T5's tokenizer is ByT5's, which needs no vocabulary file.
    """

    pretrained: str | None = None
    t5_config: dict[str, Any] = field(default_factory=lambda: dict(TINY_T5))
    freeze: bool = True
    cfg_dropout: float = 0.1
    max_length: int = 256
    # What the empty condition (CFG's unconditional rows, dropped captions) becomes:
    # "empty_text" encodes "" with T5; "zeros" is a zero state that cross-attention reads
    # as nothing (MusicGen's and audiocraft's null condition).
    unconditional: str = "empty_text"
    # The frozen encoder's weights: "bf16" halves their memory; states reach the
    # projection in fp32 either way. Only with `freeze`.
    frozen_dtype: str = "fp32"

    def __post_init__(self) -> None:
        if self.frozen_dtype not in FROZEN_DTYPES:
            raise UserInputError(
                f"frozen_dtype must be one of {sorted(FROZEN_DTYPES)}, got {self.frozen_dtype!r}"
            )
        if self.frozen_dtype != "fp32" and not self.freeze:
            raise UserInputError("frozen_dtype applies to a frozen encoder: set freeze: true")
        if not 0.0 <= self.cfg_dropout <= 1.0:
            raise UserInputError(f"cfg_dropout must be in [0, 1], got {self.cfg_dropout}")
        if self.unconditional not in UNCONDITIONAL_KINDS:
            raise UserInputError(
                f"unconditional must be one of {UNCONDITIONAL_KINDS}, got {self.unconditional!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TextCondition:
    states: torch.Tensor  # [B, L, D] at the decoder width
    mask: torch.Tensor  # [B, L] bool, True for real tokens


def load_t5(config: TextConditionerConfig) -> tuple[T5EncoderModel, PreTrainedTokenizerBase]:
    """Load from a local directory only: this never reaches a model hub."""
    if is_random(config.pretrained):
        return T5EncoderModel(T5Config(**config.t5_config)), ByT5Tokenizer()
    path = Path(config.pretrained)
    if not path.is_dir():
        raise MissingFile(
            f"T5 directory {path} does not exist; download the encoder it names (e.g. "
            "t5-base) once and point `pretrained` at the local copy (this code never fetches "
            "weights)"
        )
    encoder = load_whole(T5EncoderModel, path, "T5 directory")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return encoder, tokenizer


class T5Conditioner(nn.Module):
    def __init__(
        self,
        config: TextConditionerConfig,
        output_dim: int | None,
        encoder: T5EncoderModel | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        if encoder is None or tokenizer is None:
            encoder, tokenizer = load_t5(config)
        self.encoder = encoder
        self.tokenizer = tokenizer
        # None: the states at the encoder's width (a model with its own context embedding).
        self.projection = (
            nn.Linear(encoder.config.d_model, output_dim) if output_dim is not None else None
        )
        if config.freeze:
            self.encoder.requires_grad_(False)
            self.encoder.eval()
            self.encoder.to(FROZEN_DTYPES[config.frozen_dtype])

    def train(self, mode: bool = True) -> T5Conditioner:
        super().train(mode)
        if self.config.freeze:
            self.encoder.eval()  # a frozen encoder keeps its dropout off
        return self

    def cfg_dropout(self, texts: list[str], generator: torch.Generator | None = None) -> list[str]:
        """Replace each text by the empty condition with probability `cfg_dropout`."""
        if self.config.cfg_dropout == 0:
            return list(texts)
        draws = torch.rand(len(texts), generator=generator)
        return [
            EMPTY_CONDITION if drop else text
            for text, drop in zip(texts, draws < self.config.cfg_dropout, strict=True)
        ]

    def forward(self, texts: list[str]) -> TextCondition:
        if isinstance(texts, str):
            raise TypeError("pass a list of texts, not a single string")
        reference = (
            self.projection.weight if self.projection is not None else self.encoder.shared.weight
        )
        device = reference.device
        batch = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.config.max_length,
            return_tensors="pt",
        ).to(device)
        self._warn_if_cut(texts, batch["attention_mask"])
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze):
            states = self.encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].bool()
        if self.projection is not None:
            states = self.projection(states.to(self.projection.weight.dtype))
        else:
            states = states.float()
        projected = states * mask[..., None]
        if self.config.unconditional == "zeros":
            empty = torch.tensor([text == EMPTY_CONDITION for text in texts], device=device)
            projected = projected * ~empty[:, None, None]
            # One zero key/value left visible: attention to it adds exactly nothing, and no
            # row is fully masked (which would make attention NaN).
            mask = torch.where(
                empty[:, None], torch.arange(mask.shape[1], device=device) == 0, mask
            )
        return TextCondition(projected, mask)

    def _warn_if_cut(self, texts: list[str], attention_mask: torch.Tensor) -> None:
        """Say (once per process: the message is fixed) that a caption lost its tail."""
        limit = self.config.max_length
        if any_cut(self.tokenizer, texts, attention_mask, limit):
            warnings.warn(
                f"a caption is longer than the text encoder reads (text.max_length: {limit} "
                "tokens); it and any like it are cut to their first tokens. Raise "
                "text.max_length to read more.",
                CaptionCutWarning,
                stacklevel=2,
            )

    def save_pretrained(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
