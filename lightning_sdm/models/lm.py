"""The codebook language model: pattern-aware embeddings, a transformer decoder, level heads.

One forward computes teacher-forced logits for the whole grid; `decode` runs the same
network step by step from the pattern's plan with a slot KV cache. Both read the same
layout, which is what keeps their logits equal.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lightning_sdm.errors import UserInputError, require_positive
from lightning_sdm.models.level_heads import LevelHeads
from lightning_sdm.nn.attention import AttentionMask
from lightning_sdm.nn.cached_decoding import StepDecoder
from lightning_sdm.nn.level_embedding import summed_level_embedding
from lightning_sdm.nn.packed_linear import PackChoice, Projection, summary
from lightning_sdm.nn.positional import POSITIONAL_KINDS, sinusoidal_encoding
from lightning_sdm.nn.sparse_attention import BlockSparseMask
from lightning_sdm.nn.transformer import TransformerDecoder
from lightning_sdm.patterns import (
    PATTERN_NAMES,
    Pattern,
    PatternLayout,
    Representation,
    make_pattern,
)

ATTENTION_BACKENDS = ("auto", "dense", "causal", "block_sparse")
# Earlier names of the backends (configs and saved models keep working).
OLD_ATTENTION_NAMES = {"flex": "block_sparse"}
# "auto" takes the block-sparse path when it scores at most this share of the dense mask's
# scores; above it, gathering key blocks costs more than the skipped scores save.
SPARSE_SCORES_LIMIT = 0.5


# How token patterns may number their positions (`LMConfig.token_positions`).
TOKEN_POSITIONS = ("step", "frame")

# The `pattern` value that selects the depth decoder (`models.depth_lm`) over a pattern.
DEPTH_DECODER = "depth"


@dataclass(frozen=True)
class LMConfig:
    """Decoder sizes and pattern. The paper's model: dim 1024, 24 layers, 16 heads."""

    dim: int = 1024
    num_layers: int = 24
    num_heads: int = 16
    ffn_dim: int = 4096
    num_levels: int = 4
    cardinality: int = 2048
    dropout: float = 0.0
    pattern: str = "stack_delay"
    interleave: int = 3
    schedule: str | None = None
    # Layout details that differ between checkpoints (MusicGen: "tensor2tensor", no FFN and
    # no output-head biases).
    positional: str = "sinusoidal"
    # What a token pattern's position encodes: "step", its decoding step (MusicGen's), or
    # "frame", the frame of the lowest level it predicts plus a learned embedding of that
    # level, as stack positions carry (flat's step numbers repeat no frame structure).
    token_positions: str = "step"
    ffn_bias: bool = True
    head_bias: bool = True
    # Recompute each decoder layer's activations in the backward pass instead of keeping
    # them: training memory for activations falls to about one layer's, for ~30 % more time.
    activation_checkpointing: bool = False
    # Training attention: "dense" (the layout's [N, N] mask, the reference), "causal" (no
    # mask tensor, SDPA's causal kernels; layouts whose mask is plain causal),
    # "block_sparse" (only the key blocks each query block sees: FlexAttention on CUDA,
    # chunked SDPA elsewhere; "flex" is its earlier name), or "auto" (causal where the
    # layout allows it, else block_sparse where it skips at least half the scores, else
    # dense).
    attention: str = "auto"
    # The depth decoder (`pattern: depth`, `models.depth_lm`): its transformer over each
    # frame's levels, much smaller than the temporal one. Unused by the patterns.
    depth_dim: int = 512
    depth_layers: int = 4
    depth_heads: int = 8
    depth_ffn_dim: int = 2048
    # Acoustic delay (Moshi's): levels >= 1 of a frame are predicted this many frames after
    # its level 0, so the temporal transformer has read that much of level 0 ahead.
    depth_acoustic_delay: int = 0
    # Weights per level (Moshi's): every projection of the depth transformer has its own
    # weights for each level (norms shared), C times its projection parameters.
    depth_weights_per_level: bool = False

    def __post_init__(self) -> None:
        require_positive(
            "lm",
            dim=self.dim,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            ffn_dim=self.ffn_dim,
            num_levels=self.num_levels,
            cardinality=self.cardinality,
        )
        if not 0 <= self.dropout < 1:
            raise UserInputError(f"lm.dropout must be in [0, 1), got {self.dropout}")
        if self.attention in OLD_ATTENTION_NAMES:
            object.__setattr__(self, "attention", OLD_ATTENTION_NAMES[self.attention])
        if self.attention not in ATTENTION_BACKENDS:
            raise UserInputError(
                f"attention must be one of {ATTENTION_BACKENDS}, got {self.attention!r}"
            )
        if self.positional not in POSITIONAL_KINDS:
            raise UserInputError(
                f"positional must be one of {POSITIONAL_KINDS}, got {self.positional!r}"
            )
        if self.token_positions not in TOKEN_POSITIONS:
            raise UserInputError(
                f"lm.token_positions must be one of {TOKEN_POSITIONS}, got {self.token_positions!r}"
            )
        if self.dim % self.num_heads:
            raise UserInputError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.pattern.replace("-", "_") not in (*PATTERN_NAMES, DEPTH_DECODER):
            raise UserInputError(
                f"unknown pattern {self.pattern!r}; choose one of {', '.join(PATTERN_NAMES)}, "
                f"or {DEPTH_DECODER} (the depth decoder)"
            )
        if self.is_depth:
            require_positive(
                "lm",
                depth_dim=self.depth_dim,
                depth_layers=self.depth_layers,
                depth_heads=self.depth_heads,
                depth_ffn_dim=self.depth_ffn_dim,
            )
            if self.depth_dim % self.depth_heads:
                raise UserInputError(
                    f"depth_dim {self.depth_dim} is not divisible by depth_heads {self.depth_heads}"
                )
        if self.depth_acoustic_delay < 0:
            raise UserInputError(
                f"lm.depth_acoustic_delay must be >= 0 frames, got {self.depth_acoustic_delay}"
            )
        if self.token_positions != "step" and (
            self.is_depth or self.make_pattern().representation is not Representation.TOKEN
        ):
            raise UserInputError(
                f"lm.token_positions applies to token patterns (delay, flat, parallel), not "
                f"to {self.pattern}, whose positions already carry frame and level"
            )
        for option in ("depth_acoustic_delay", "depth_weights_per_level"):
            if getattr(self, option) and not self.is_depth:
                raise UserInputError(
                    f"lm.{option} applies to the depth decoder (pattern: {DEPTH_DECODER}), "
                    f"not to {self.pattern}"
                )

    @property
    def is_depth(self) -> bool:
        """A temporal + depth transformer instead of an interleaving pattern."""
        return self.pattern == DEPTH_DECODER

    def make_pattern(self) -> Pattern:
        return make_pattern(self.pattern, k=self.interleave, schedule=self.schedule)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Called once per decoding step with logits [R, K, V] and the (level, timestep) of each of
# the K tokens; returns the token ids [R, K] to write into the grid.
TokenPicker = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

# Weight dtypes decoding can run in. bf16 halves the bytes each step streams from memory,
# which is what bounds decoding a small model; logits are handed on in fp32 either way.
INFERENCE_PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


class CodebookLM(LevelHeads):
    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        self.config = config
        self.pattern = config.make_pattern()
        self.special_token = config.cardinality
        vocab = config.cardinality + 1
        self.token_embedding = nn.Parameter(
            torch.randn(config.num_levels, vocab, config.dim) * 0.02
        )
        self.stacks = self.pattern.representation is Representation.STACK
        self.frame_positions = not self.stacks and config.token_positions == "frame"
        self.level_embedding = (
            nn.Embedding(config.num_levels + 1, config.dim)
            if self.stacks or self.frame_positions
            else None
        )
        self.decoder = TransformerDecoder(
            config.dim,
            config.num_layers,
            config.num_heads,
            config.ffn_dim,
            config.dropout,
            config.ffn_bias,
            config.activation_checkpointing,
        )
        # Where each level's rows start in the flattened embedding table (one lookup a step).
        self.register_buffer(
            "_level_offsets", torch.arange(config.num_levels) * vocab, persistent=False
        )
        self.init_level_heads(config.num_levels, config.cardinality, config.dim, config.head_bias)
        self._device_layouts: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
        self._sparse_masks: dict[tuple[int, str], BlockSparseMask] = {}

    def layout(self, num_timesteps: int) -> PatternLayout:
        return self.pattern.layout(num_timesteps, self.config.num_levels)

    def decoding_steps(self, num_timesteps: int) -> int:
        return self.layout(num_timesteps).num_decoding_steps

    def token_steps(self, num_timesteps: int) -> torch.Tensor:
        """[C, T]: the decoding step at which each token is predicted."""
        return self.layout(num_timesteps).token_steps

    def max_cache_keys(self, num_timesteps: int) -> int:
        return self.layout(num_timesteps).max_live_keys

    def cache_values(self, rows: int, num_timesteps: int) -> int:
        """How many values the decoding cache holds (keys and values of every layer)."""
        config = self.config
        return 2 * config.num_layers * rows * self.layout(num_timesteps).num_slots * config.dim

    def set_inference_precision(self, precision: str) -> CodebookLM:
        """Cast the weights for good ("fp32" or "bf16"), e.g. to keep one bf16 model in
        memory; `decode(precision=...)` casts for one call instead. Training expects fp32."""
        return self.to(_inference_dtype(precision))

    def _layout_tensors(self, num_timesteps: int, device: torch.device) -> dict[str, torch.Tensor]:
        """The layout's tensors on `device`, moved once per (T, device)."""
        key = (num_timesteps, str(device))
        if key not in self._device_layouts:
            self._device_layouts[key] = self._move_layout(num_timesteps, device)
        return self._device_layouts[key]

    def _move_layout(self, num_timesteps: int, device: torch.device) -> dict[str, torch.Tensor]:
        layout = self.layout(num_timesteps)
        flat_grid = layout.num_levels * layout.num_timesteps
        time_index, level_index = (
            layout.frame_positions
            if self.frame_positions
            else (layout.time_index, layout.level_index)
        )
        return {
            # -1 (no token) points at an extra grid column that holds the special id.
            "input_index": torch.where(layout.input_index >= 0, layout.input_index, flat_grid).to(
                device
            ),
            "time_index": time_index.to(device),
            "level_index": level_index.to(device),
            "attention_mask": layout.attention_mask.to(device),
            "prediction_position": layout.prediction_position.to(device),
            "slot": layout.slot.to(device),
            "last_visible": layout.last_visible.to(device),
            "target_level": layout.target_level.to(device),
            "target_time": layout.target_time.to(device),
            "target_position": layout.target_position.to(device),
            "target_flat": (layout.target_level * layout.num_timesteps + layout.target_time).to(
                device
            ),
            # The sinusoids of every position, once: decoding slices them per step.
            "positions": sinusoidal_encoding(
                time_index.to(device), self.config.dim, kind=self.config.positional
            ),
        }

    def embed(
        self,
        grid: torch.Tensor,
        input_index: torch.Tensor,
        positions: torch.Tensor,
        level_index: torch.Tensor,
    ) -> torch.Tensor:
        """grid [R, C*T + 1] (last column = special) -> position inputs [R, P, D];
        `positions` [P, D] are the positions' sinusoids."""
        ids = grid[:, input_index]  # [R, C, P]
        # A stack sums the levels it holds; absent levels contribute nothing.
        present = (ids != self.special_token) if self.stacks else None
        summed = summed_level_embedding(ids, self.token_embedding, present)
        x = summed + positions.to(summed.dtype)
        if self.level_embedding is not None:
            x = x + self.level_embedding(level_index)
        return x

    def head_inputs(
        self, codes: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor
    ) -> torch.Tensor:
        """codes [B, C, T] -> the decoder state predicting each grid token, [B, C, T, D]."""
        batch, num_levels, num_timesteps = codes.shape
        if num_levels != self.config.num_levels:
            raise ValueError(
                f"codes have {num_levels} levels, model expects {self.config.num_levels}"
            )
        tensors = self._layout_tensors(num_timesteps, codes.device)
        grid = torch.cat([codes.flatten(1), codes.new_full((batch, 1), self.special_token)], dim=1)
        x = self.embed(grid, tensors["input_index"], tensors["positions"], tensors["level_index"])
        self_mask = self.training_attention(num_timesteps, codes.device)
        hidden = self.decoder(x, self_mask, context, context_mask)
        positions = tensors["prediction_position"]  # [C, T]
        # index_select: its backward is an index_add, several times faster than indexing's
        return hidden.index_select(1, positions.flatten()).unflatten(1, positions.shape)

    def training_attention(self, num_timesteps: int, device: torch.device) -> AttentionMask:
        """The self-attention mask the teacher-forced pass runs under, as `attention` picks
        it: the dense [N, N] mask, its block-sparse plan, or None (causal kernels)."""
        backend = self.config.attention
        tensors = self._layout_tensors(num_timesteps, device)
        if backend == "dense":
            return tensors["attention_mask"]
        if backend == "block_sparse":
            return self.sparse_mask(num_timesteps, device)
        causal = self.layout(num_timesteps).is_causal
        if backend == "causal" and not causal:
            raise ValueError(
                f"attention='causal' needs a causal layout; the {self.config.pattern} "
                "pattern's mask is not: use 'auto', 'block_sparse' or 'dense'"
            )
        if causal:
            return None
        sparse = self.sparse_mask(num_timesteps, device)
        if sparse.scores_fraction <= SPARSE_SCORES_LIMIT:
            return sparse
        return tensors["attention_mask"]

    def sparse_mask(self, num_timesteps: int, device: torch.device) -> BlockSparseMask:
        """The layout's mask planned by blocks over its key order, once per (T, device)."""
        key = (num_timesteps, str(device))
        if key not in self._sparse_masks:
            layout = self.layout(num_timesteps)
            plan = BlockSparseMask(layout.attention_mask, layout.attention_key_order)
            self._sparse_masks[key] = plan.to(device)
        return self._sparse_masks[key]

    def embed_step(
        self,
        grid: torch.Tensor,
        input_index: torch.Tensor,
        positions: torch.Tensor,
        level_index: torch.Tensor,
    ) -> torch.Tensor:
        """`embed` for the few positions of one decoding step: every level in one lookup
        (the [R, C, P, D] tensor this holds is small when P is)."""
        ids = grid[:, input_index]  # [R, C, P]
        table = self.token_embedding.view(-1, self.token_embedding.shape[-1])
        vectors = F.embedding(ids + self._level_offsets[:, None], table)  # [R, C, P, D]
        if self.stacks:
            vectors = vectors * (ids != self.special_token)[..., None]
        x = vectors.sum(dim=1) + positions.to(vectors.dtype)
        if self.level_embedding is not None:
            x = x + self.level_embedding(level_index)
        return x

    def step_logits(
        self, hidden: torch.Tensor, levels: tuple[int, ...], heads: list[Projection]
    ) -> torch.Tensor:
        """hidden [R, K, D] of K targets at `levels` -> fp32 logits [R, K, V] through each
        level's head projection (`decode` makes them once: packed, or reading the head in
        place; gathering the heads would copy K x V x D per step)."""
        return torch.stack(
            [heads[level](hidden[:, index]) for index, level in enumerate(levels)], dim=1
        ).float()

    def decode(
        self,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        num_timesteps: int,
        pick: TokenPicker,
        on_step: Callable[[], None] | None = None,
        static_shapes: bool = False,
        pack_weights: PackChoice = "auto",
        precision: str | None = None,
    ) -> torch.Tensor:
        """Cached step-by-step decoding along the pattern's plan; returns codes [R, C, T].

        `pick` chooses the tokens of each step, which makes this loop serve sampling,
        guidance, prompts and teacher-forced scoring alike. With `static_shapes`, every
        step attends over all cache slots under the visibility mask instead of the slots
        used so far: more work, but tensors of one shape (CUDA graphs, compilation).
        `pack_weights` (CPU only): True multiplies through copies of the decoder's and
        heads' weights packed for oneDNN (`nn.packed_linear`), False through `F.linear`,
        "auto" through whichever a measurement at this row count finds faster on this
        machine for each weight shape (once per machine). `precision` ("fp32", "bf16")
        decodes with weights of that dtype within this call only (`nn.cached_decoding`
        prepares them apart from the model); None decodes with the weights as they are.
        """
        # The layout and its tensors are cached for training too: build them outside
        # inference mode, whose tensors autograd refuses.
        self._layout_tensors(num_timesteps, context.device)
        with torch.inference_mode():
            stepper = self.step_decoder(context.shape[0], num_timesteps, pack_weights, precision)
            codes = self._decode(
                context, context_mask, num_timesteps, pick, on_step, static_shapes, stepper
            )
        return codes.clone()  # a normal tensor again: callers may train on it

    def step_decoder(
        self,
        batch_rows: int,
        num_timesteps: int,
        pack_weights: PackChoice = "auto",
        precision: str | None = None,
    ) -> StepDecoder:
        """The decoder and heads prepared for decoding `batch_rows` rows of `num_timesteps`
        (see `decode`); the model's own weights are read, never changed."""
        # Here, not at the top: adapters' module loads T5's, and `patterns` commands, which
        # read this module, start without transformers.
        from lightning_sdm.models.adapters import merged_projection

        own_dtype = self.token_embedding.dtype
        dtype = own_dtype if precision is None else _inference_dtype(precision)
        # The most rows a step multiplies: what packed weights are laid out for.
        rows = batch_rows * int(self.layout(num_timesteps).block_start.diff().max())
        heads = list(zip(self.head_weight, self.head_bias, strict=True))
        return StepDecoder(
            self.decoder, rows, dtype, own_dtype, pack_weights, extra=heads, merge=merged_projection
        )

    def matmul_path(
        self, batch_rows: int, num_timesteps: int, pack_weights: PackChoice = "auto"
    ) -> str:
        """ "packed", "linear", or each weight shape's path, for decoding `batch_rows` rows."""
        return summary(self.step_decoder(batch_rows, num_timesteps, pack_weights).paths)

    def _decode(
        self,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        num_timesteps: int,
        pick: TokenPicker,
        on_step: Callable[[], None] | None,
        static_shapes: bool,
        stepper: StepDecoder,
    ) -> torch.Tensor:
        layout = self.layout(num_timesteps)
        device = context.device
        tensors = self._layout_tensors(num_timesteps, device)
        rows = context.shape[0]
        flat_grid = layout.num_levels * num_timesteps
        grid = torch.full(
            (rows, flat_grid + 1), self.special_token, dtype=torch.long, device=device
        )
        dtype = stepper.dtype
        cache = stepper.new_cache(layout.num_slots, context, context_mask)
        slot_last_visible = torch.full((layout.num_slots,), -1, dtype=torch.long, device=device)
        blocked = torch.tensor(float("-inf"), dtype=dtype, device=device)
        no_bias = torch.tensor(0.0, dtype=dtype, device=device)
        input_index, positions = tensors["input_index"], tensors["positions"]
        level_index, slot, last_visible = (
            tensors["level_index"], tensors["slot"], tensors["last_visible"],
        )  # fmt: skip
        target_level, target_time = tensors["target_level"], tensors["target_time"]
        target_flat, target_position = tensors["target_flat"], tensors["target_position"]
        for step, start, end, extent, target_start, target_end, levels in _plan_lists(layout):
            if static_shapes:
                extent = layout.num_slots
            slots = slot[start:end]
            slot_last_visible[slots] = last_visible[start:end]
            # One additive mask per step, shared by every layer.
            visible = torch.where(slot_last_visible[:extent] >= step, no_bias, blocked)
            x = self.embed_step(
                grid, input_index[:, start:end], positions[start:end], level_index[start:end]
            )
            hidden = stepper.step(x, cache, slots, visible, extent)
            if on_step is not None:
                on_step()
            if target_start == target_end:
                continue
            local = target_position[target_start:target_end] - start
            logits = self.step_logits(hidden[:, local], levels, stepper.extra_projections)
            grid[:, target_flat[target_start:target_end]] = pick(
                logits,
                target_level[target_start:target_end],
                target_time[target_start:target_end],
            )
        return grid[:, :flat_grid].view(rows, layout.num_levels, num_timesteps)


def _inference_dtype(precision: str) -> torch.dtype:
    if precision not in INFERENCE_PRECISIONS:
        raise ValueError(
            f"precision must be one of {sorted(INFERENCE_PRECISIONS)}, got {precision!r}"
        )
    return INFERENCE_PRECISIONS[precision]


@functools.lru_cache(maxsize=64)
def _plan_lists(
    layout: PatternLayout,
) -> list[tuple[int, int, int, int, int, int, tuple[int, ...]]]:
    """Per decoding step as Python ints: (step, start, end, slot extent, target start,
    target end, the targets' levels)."""
    starts = layout.target_block_start.tolist()
    levels = layout.target_level.tolist()
    return list(
        zip(
            layout.block_step.tolist(),
            layout.block_start[:-1].tolist(),
            layout.block_start[1:].tolist(),
            layout.block_extent.tolist(),
            starts[:-1],
            starts[1:],
            [tuple(levels[a:b]) for a, b in itertools.pairwise(starts)],
            strict=True,
        )
    )
