"""The T5-conditioned codebook LM as one unit: training forward, generation, save and load."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightning_sdm.conditioning import (
    T5Conditioner,
    TextCondition,
    TextConditionerConfig,
)
from lightning_sdm.models.adapters import (
    AdapterConfig,
    adapter_base,
    add_adapters,
    load_adapter_directory,
    merge_adapters,
    save_adapter_directory,
)
from lightning_sdm.models.depth_lm import build_lm
from lightning_sdm.models.guidance import guide, guided_captions
from lightning_sdm.models.lm import LMConfig
from lightning_sdm.models.sampling import SamplingConfig, sample_tokens
from lightning_sdm.models.saving import CONFIG_FILE, WEIGHTS_FILE, SavedAsDirectory
from lightning_sdm.nn.packed_linear import PackChoice

__all__ = ["CONFIG_FILE", "WEIGHTS_FILE", "TextToMusicConfig", "TextToMusicLM"]


@dataclass(frozen=True)
class TextToMusicConfig:
    lm: LMConfig = dataclasses.field(default_factory=LMConfig)
    text: TextConditionerConfig = dataclasses.field(default_factory=TextConditionerConfig)
    adapter: AdapterConfig | None = None  # LoRA on the decoder (fine-tuning)

    def to_dict(self) -> dict[str, Any]:
        data = {"lm": self.lm.to_dict(), "text": self.text.to_dict()}
        if self.adapter is not None:
            data["adapter"] = self.adapter.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TextToMusicConfig:
        adapter = data.get("adapter")
        return cls(
            lm=LMConfig(**data["lm"]),
            text=TextConditionerConfig(**data["text"]),
            adapter=AdapterConfig(**adapter) if adapter else None,
        )


def row_generators(
    seed: int | Sequence[int] | None, rows: int, device: torch.device
) -> list[torch.Generator] | None:
    """One generator per row: `seed[r]`, or `seed + r` for a single int; None: global RNG."""
    if seed is None:
        return None
    seeds = [seed + row for row in range(rows)] if isinstance(seed, int) else list(seed)
    if len(seeds) != rows:
        raise ValueError(f"{len(seeds)} seeds for {rows} captions")
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


class TextToMusicLM(SavedAsDirectory, nn.Module):
    family = "lm"  # recorded in its directories' config.json and its checkpoints
    config_class = TextToMusicConfig
    sampling_config_type = SamplingConfig  # what its generation samples with

    def __init__(self, config: TextToMusicConfig, conditioner: T5Conditioner | None = None) -> None:
        """`conditioner`: one already built (an imported checkpoint's T5), else from config."""
        super().__init__()
        self.config = config
        self.lm = build_lm(config.lm)
        self.conditioner = conditioner or T5Conditioner(config.text, output_dim=config.lm.dim)
        if config.adapter is not None:
            add_adapters(self.lm.decoder, config.adapter)

    def add_adapter(self, adapter: AdapterConfig) -> TextToMusicLM:
        """Put LoRA layers on this (base) model's decoder; B = 0 keeps its outputs."""
        if self.config.adapter is not None:
            raise ValueError("this model already has an adapter")
        add_adapters(self.lm.decoder, adapter)
        self.config = dataclasses.replace(self.config, adapter=adapter)
        return self

    def merge_adapter(self) -> TextToMusicLM:
        """Fold the adapter into the base weights: a plain model, as fast as the base."""
        if self.config.adapter is None:
            raise ValueError("this model has no adapter to merge")
        merge_adapters(self.lm.decoder)
        self.config = dataclasses.replace(self.config, adapter=None)
        return self

    @property
    def num_levels(self) -> int:
        return self.config.lm.num_levels

    @property
    def cardinality(self) -> int:
        return self.config.lm.cardinality

    def condition(self, texts: list[str]) -> TextCondition:
        return self.conditioner(texts)

    def forward(self, codes: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """Teacher-forced logits [B, C, T, V]; apply CFG dropout to `texts` before calling."""
        condition = self.condition(texts)
        return self.lm(codes, condition.states, condition.mask)

    def token_losses(self, codes: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """Teacher-forced cross-entropy of every token, fp32 [B, C, T] (the training loss:
        the heads fused with it, the logits never held in full)."""
        condition = self.condition(texts)
        return self.lm.token_losses(codes, condition.states, condition.mask)

    @torch.no_grad()
    def score_cached(
        self,
        codes: torch.Tensor,
        texts: list[str],
        static_shapes: bool = False,
        pack_weights: PackChoice = "auto",
        precision: str | None = None,
    ) -> torch.Tensor:
        """Logits [B, C, T, V] from cached step-by-step decoding fed the given codes."""
        condition = self.condition(texts)
        logits = codes.new_zeros((*codes.shape, self.cardinality), dtype=torch.float32)

        def teacher_force(
            step_logits: torch.Tensor, levels: torch.Tensor, times: torch.Tensor
        ) -> torch.Tensor:
            logits[:, levels, times] = step_logits.float()
            return codes[:, levels, times]

        self.lm.decode(
            condition.states,
            condition.mask,
            codes.shape[-1],
            teacher_force,
            static_shapes=static_shapes,
            pack_weights=pack_weights,
            precision=precision,
        )
        return logits

    @torch.no_grad()
    def generate(
        self,
        texts: list[str],
        num_timesteps: int,
        *,
        sampling: SamplingConfig | None = None,
        prompt_tokens: torch.Tensor | None = None,
        seed: int | Sequence[int] | None = None,
        on_step: Callable[[], None] | None = None,
        static_shapes: bool = False,
        pack_weights: PackChoice = "auto",
        precision: str | None = None,
    ) -> torch.Tensor:
        """Sample codes [B, C, T] for a batch of captions.

        Conditional and unconditional rows run as one batch when guidance is on.
        `prompt_tokens` [B, C, Tp] are kept as given (continuation); the rest is sampled.
        Each row draws from its own generator, seeded with `seed[r]` (or `seed + r` for one
        int), so a row's tokens depend on its seed and settings, not on its batch mates.
        `on_step` is called after every decoding step (progress bars). `static_shapes`
        gives every step tensors of one shape, `pack_weights` chooses the CPU matmul path
        and `precision` the weights' dtype for this call (see `CodebookLM.decode`).
        """
        sampling = sampling or SamplingConfig()
        guided = sampling.uses_guidance
        rows = guided_captions(texts, guided)
        if num_timesteps < 1:
            raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")
        batch = len(texts)
        device = self.lm.head_weight.device
        prompt = self._check_prompt(prompt_tokens, batch, num_timesteps, device)
        condition = self.condition(rows)
        generators = row_generators(seed, batch, device)

        def pick(
            step_logits: torch.Tensor, levels: torch.Tensor, times: torch.Tensor
        ) -> torch.Tensor:
            if guided:
                step_logits = guide(step_logits[:batch], step_logits[batch:], sampling.cfg_scale)
            tokens = sample_tokens(step_logits, sampling, generators)
            if prompt is not None:
                in_prompt = times < prompt.shape[-1]
                given = prompt[:, levels, times.clamp(max=prompt.shape[-1] - 1)]
                tokens = torch.where(in_prompt, given, tokens)
            return torch.cat([tokens, tokens]) if guided else tokens

        codes = self.lm.decode(
            condition.states,
            condition.mask,
            num_timesteps,
            pick,
            on_step,
            static_shapes=static_shapes,
            pack_weights=pack_weights,
            precision=precision,
        )
        return codes[:batch]

    def _check_prompt(
        self, prompt: torch.Tensor | None, batch: int, num_timesteps: int, device: torch.device
    ) -> torch.Tensor | None:
        if prompt is None:
            return None
        if prompt.dim() != 3 or prompt.shape[0] != batch or prompt.shape[1] != self.num_levels:
            raise ValueError(
                f"prompt_tokens must be [B={batch}, C={self.num_levels}, Tp], "
                f"got {tuple(prompt.shape)}"
            )
        if not 1 <= prompt.shape[-1] <= num_timesteps:
            raise ValueError(f"prompt length {prompt.shape[-1]} must be in [1, {num_timesteps}]")
        if prompt.min() < 0 or prompt.max() >= self.cardinality:
            raise ValueError(f"prompt tokens must lie in [0, {self.cardinality})")
        return prompt.to(device=device, dtype=torch.long)

    def save_adapter(
        self, directory: str | Path, base: str | Path, trained_over: str | None = None
    ) -> Path:
        """The adapter alone (a few MB), to load over the model directory `base` (whose
        weights were `trained_over`, by default those it holds now)."""
        if self.config.adapter is None:
            raise ValueError("this model has no adapter to save")
        return save_adapter_directory(self, self.config.adapter, directory, base, trained_over)

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        map_location: str = "cpu",
        overrides: dict[str, dict[str, Any]] | None = None,
    ) -> TextToMusicLM:
        """Load in eval mode; `overrides` change config options that leave the weights'
        shapes alone (dropout, cfg_dropout, ...). An adapter directory loads its base
        model and puts the adapter on it."""
        if adapter_base(directory) is not None:
            load_base = lambda base: cls.from_pretrained(base, map_location, overrides)  # noqa: E731
            return load_adapter_directory(directory, load_base, map_location).eval()
        return super().from_pretrained(directory, map_location, overrides)
