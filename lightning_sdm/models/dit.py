"""EzAudio-DiT: a diffusion transformer over latent frames, conditioned on text states.

One token per latent frame; its input is the noisy latent, the clean latent where it is
given (masked modelling, inpainting, continuation) and a channel saying which frames are
to be generated. No absolute positions: self-attention carries RoPE. The timestep
modulates every block through adaLN-SOLA; long skips join the input and output halves.
Each of these can be set back to the plain DiT's choice (DiTConfig) to measure what it buys.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lightning_sdm.errors import UserInputError, require_positive
from lightning_sdm.nn.adaptive_norm import MODULATIONS, AdaLNPerBlock, AdaLNSOLA, modulate
from lightning_sdm.nn.dit_block import DiTBlock

TIME_FEATURES = 256  # sinusoidal features of the diffusion timestep
MODULATION_KINDS = ("sola", "per_block")
POSITION_KINDS = ("rope", "learned")


@dataclass(frozen=True)
class DiTConfig:
    """Sizes. EzAudio-L: dim 1024, depth 24, 16 heads, rank 32, FLAN-T5-large (1024);
    EzAudio-XL: 1152, 28, 16, 36, FLAN-T5-XL (2048). `depth` counts the blocks of both
    halves; a middle block comes on top."""

    latent_channels: int = 128
    dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    ada_rank: int = 32
    ada_alpha: float | None = None  # None: the rank (LoRA scaling 1)
    context_dim: int = 1024  # width of the text encoder's states
    activation_checkpointing: bool = False
    # "sola": EzAudio's shared modulation + rank-r adjustment per block; "per_block":
    # DiT's own Linear(D, 6D) per block (the baseline of benchmarks/dit_memory.py).
    modulation: str = "sola"
    # Cross-attention to the text. EzAudio's first stage (unlabelled audio) has none; the
    # next stage adds it fresh, its output projections at zero, so it starts where the
    # first stage ended.
    text_path: bool = True
    # EzAudio's choices, each of which can be turned back to the plain DiT's (the ablations
    # of benchmarks/dit_convergence.py): U-ViT long skips between the halves; positions by
    # RoPE in self-attention ("rope") or a learned table added at the input ("learned",
    # `max_frames` long); LayerNorm over each head's queries and keys.
    long_skips: bool = True
    positions: str = "rope"
    max_frames: int = 1500  # the learned table's length (30 s at 50 Hz); unused with RoPE
    qk_norm: bool = True

    def __post_init__(self) -> None:
        if self.modulation not in MODULATION_KINDS:
            raise UserInputError(
                f"modulation must be one of {', '.join(MODULATION_KINDS)}, got {self.modulation!r}"
            )
        if self.positions not in POSITION_KINDS:
            raise UserInputError(
                f"positions must be one of {', '.join(POSITION_KINDS)}, got {self.positions!r}"
            )
        require_positive(
            "dit", dim=self.dim, depth=self.depth, num_heads=self.num_heads,
            max_frames=self.max_frames,
        )  # fmt: skip
        if self.depth % 2:
            raise UserInputError(
                f"depth must be even (two halves around a middle block), got {self.depth}"
            )
        if self.dim % self.num_heads:
            raise UserInputError(f"dim {self.dim} must split into {self.num_heads} heads")
        if self.positions == "rope" and (self.dim // self.num_heads) % 2:
            raise UserInputError(
                f"dim {self.dim} must split into {self.num_heads} heads of even size (RoPE)"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def timestep_features(timesteps: torch.Tensor, size: int = TIME_FEATURES) -> torch.Tensor:
    """[B] (possibly fractional) timesteps -> [B, size] cos/sin features."""
    half = size // 2
    frequencies = torch.exp(
        -math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    )
    angles = timesteps.float()[:, None] * frequencies[None]
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


class EzAudioDiT(nn.Module):
    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.config = config
        dim, channels = config.dim, config.latent_channels
        # noisy latent + given clean latent + "to generate" flag
        self.input = nn.Conv1d(2 * channels + 1, dim, kernel_size=1)
        self.time_embed = nn.Sequential(
            nn.Linear(TIME_FEATURES, dim), nn.SiLU(), nn.Linear(dim, dim)
        )
        sola = config.modulation == "sola"
        self.shared_modulation = nn.Linear(dim, MODULATIONS * dim) if sola else None
        self.final_modulation = nn.Linear(dim, 2 * dim)
        self.context_embed = (
            nn.Sequential(nn.Linear(config.context_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
            if config.text_path
            else None
        )
        half = config.depth // 2
        rotary = config.positions == "rope"
        self.positions = None if rotary else nn.Parameter(torch.zeros(config.max_frames, dim))

        def block(skip: bool) -> DiTBlock:
            return DiTBlock(
                dim, config.num_heads, config.mlp_ratio, config.ada_rank, config.ada_alpha,
                skip=skip, checkpointing=config.activation_checkpointing,
                shared_modulation=sola, text_path=config.text_path,
                rotary=rotary, qk_norm=config.qk_norm,
            )  # fmt: skip

        self.in_blocks = nn.ModuleList(block(False) for _ in range(half))
        self.mid_block = block(False)
        self.out_blocks = nn.ModuleList(block(config.long_skips) for _ in range(half))
        self.final_norm = nn.LayerNorm(dim)
        self.final_linear = nn.Linear(dim, channels)
        self.final_conv = nn.Conv1d(channels, channels, kernel_size=3, padding=1)
        self._initialise()

    def _initialise(self) -> None:
        """Xavier linears with zero biases (the fused key/value projection per half), then
        what must start at zero: the modulations (every block starts as identity-modulated)
        and the cross-attention outputs."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for module in self.modules():
            if isinstance(module, AdaLNSOLA | AdaLNPerBlock):
                module.reset_parameters()
            if isinstance(module, DiTBlock):
                attentions = [module.self_attention]
                if module.cross_attention is not None:
                    nn.init.zeros_(module.cross_attention.out.weight)
                    attentions.append(module.cross_attention)
                for attention in attentions:
                    # The fused key/value projection as the two projections it stands for:
                    # Xavier over [2D, D] would draw them 0.82x as wide.
                    for half in attention.key_value.weight.data.chunk(2):
                        nn.init.xavier_uniform_(half)
        weight = self.input.weight
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        nn.init.zeros_(self.input.bias)
        for linear in (self.shared_modulation, self.final_modulation):
            if linear is not None:
                nn.init.zeros_(linear.weight)
                nn.init.zeros_(linear.bias)
        nn.init.xavier_uniform_(self.final_conv.weight)
        nn.init.zeros_(self.final_conv.bias)
        if self.positions is not None:
            nn.init.normal_(self.positions, std=0.02)

    def forward(
        self,
        noisy: torch.Tensor,
        given: torch.Tensor,
        to_generate: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor | None,
        context_mask: torch.Tensor | None,
        frame_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """noisy, given [B, C, T]; to_generate [B, T] (1 where frames are generated);
        timesteps [B]; context [B, L, context_dim] with context_mask [B, L] (True = real
        token; both None without a text path); frame_mask [B, T] (True = real frame, None:
        all). -> prediction [B, C, T]."""
        flags = to_generate.to(noisy.dtype)[:, None]
        x = self.input(torch.cat([noisy, given, flags], dim=1)).transpose(1, 2)
        if self.positions is not None:
            if x.shape[1] > len(self.positions):
                raise UserInputError(
                    f"{x.shape[1]} frames exceed the learned positions' {len(self.positions)}: "
                    "raise dit.max_frames or use positions: rope"
                )
            x = x + self.positions[: x.shape[1]]
        time = F.silu(self.time_embed(timestep_features(timesteps).to(x.dtype)))
        shared = self.shared_modulation(time) if self.shared_modulation is not None else None
        context_keys = None
        if self.context_embed is not None:
            if context is None or context_mask is None:
                raise ValueError("this DiT has a text path: pass the text context")
            context = self.context_embed(context)
            context_keys = context_mask[:, None, None, :]
        frame_keys = None if frame_mask is None else frame_mask[:, None, None, :]
        common = (time, shared, context, context_keys, frame_keys)
        skips = []
        for block in self.in_blocks:
            x = block(x, *common)
            skips.append(x)
        x = self.mid_block(x, *common)
        for block in self.out_blocks:
            x = block(x, *common, skip=skips.pop() if self.config.long_skips else None)
        shift, scale = self.final_modulation(time)[:, None].chunk(2, dim=-1)
        x = self.final_linear(modulate(self.final_norm(x), shift, scale))
        return self.final_conv(x.transpose(1, 2))


def trainable_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
