"""The depth decoder: a temporal transformer once per frame, a small depth transformer over
the frame's levels (Moshi's Depformer, UniAudio's local transformer, CSM's depth decoder).

The temporal transformer reads one position per frame, the sum of the previous frame's
level embeddings plus the frame's sinusoid, and cross-attends to the text as the pattern
LM does. For each frame, the depth transformer predicts levels 0 … C-1 one after another;
its input at level k is the temporal output (projected to the depth width), the embedding
of level k-1's token of the same frame (a start vector at k = 0) and a level embedding.
Each depth layer also cross-attends to the frame's temporal output, its one context token,
so the frame's summary reaches every depth layer (a single key: the attention is a learned
projection of it).

Teacher forcing runs the depth transformer over all frames at once (frames are its batch),
so a training step is one temporal pass plus one small batched pass; `decode` runs the same
two networks step by step with a temporal cache of T keys and a depth cache of C keys that
every frame starts afresh. Both read the same weights the same way, which keeps their logits
equal.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lightning_sdm.errors import UserInputError
from lightning_sdm.models.level_heads import LevelHeads
from lightning_sdm.models.lm import (
    DEPTH_DECODER,
    CodebookLM,
    LMConfig,
    TokenPicker,
    _inference_dtype,
)
from lightning_sdm.nn.cached_decoding import StepDecoder
from lightning_sdm.nn.kv_cache import SlotKVCache
from lightning_sdm.nn.level_embedding import level_lookup, summed_level_embedding
from lightning_sdm.nn.packed_linear import PackChoice, Projection, summary
from lightning_sdm.nn.positional import sinusoidal_encoding
from lightning_sdm.nn.positionwise_linear import PositionwiseLinear, position_view
from lightning_sdm.nn.transformer import TransformerDecoder


class DepthLM(LevelHeads):
    """Temporal + depth transformers over codes [B, C, T]; the pattern LM's interface."""

    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        self.config = config
        self.special_token = config.cardinality
        vocab = config.cardinality + 1
        levels, width = config.num_levels, config.depth_dim
        self.token_embedding = nn.Parameter(torch.randn(levels, vocab, config.dim) * 0.02)
        self.decoder = TransformerDecoder(
            config.dim,
            config.num_layers,
            config.num_heads,
            config.ffn_dim,
            config.dropout,
            config.ffn_bias,
            config.activation_checkpointing,
        )
        self.depth_input = nn.Linear(config.dim, width)
        self.depth_context = nn.Linear(config.dim, width)
        # Level k's input carries level k-1's token (row `vocab - 1` of table 0: the start).
        self.depth_token_embedding = nn.Parameter(torch.randn(levels, vocab, width) * 0.02)
        self.depth_level_embedding = nn.Parameter(torch.randn(levels, width) * 0.02)
        per_level = config.depth_weights_per_level
        self.depth_decoder = TransformerDecoder(
            width,
            config.depth_layers,
            config.depth_heads,
            config.depth_ffn_dim,
            config.dropout,
            config.ffn_bias,
            config.activation_checkpointing,
            linear=functools.partial(PositionwiseLinear, levels) if per_level else nn.Linear,
        )
        self.init_level_heads(levels, config.cardinality, width, config.head_bias)

    @property
    def acoustic_delay(self) -> int:
        return self.config.depth_acoustic_delay

    def decoding_steps(self, num_timesteps: int) -> int:
        plan = decoding_plan(num_timesteps, self.config.num_levels, self.acoustic_delay)
        return int(plan["decoding_steps"])

    def token_steps(self, num_timesteps: int) -> torch.Tensor:
        """[C, T]: the order tokens are predicted in, frame by frame, level by level (the
        temporal steps between frames predict nothing, so they are not counted)."""
        levels = self.config.num_levels
        # Levels >= 1 of frame t come `acoustic_delay` frames after its level 0.
        frame_of = torch.arange(num_timesteps)[None] + self.acoustic_delay * (
            torch.arange(levels)[:, None] > 0
        )
        return frame_of * levels + torch.arange(levels)[:, None]

    def max_cache_keys(self, num_timesteps: int) -> int:
        plan = decoding_plan(num_timesteps, self.config.num_levels, self.acoustic_delay)
        return int(plan["max_cache_keys"])

    def cache_values(self, rows: int, num_timesteps: int) -> int:
        """Values the two caches hold: T keys and values per temporal layer, C per depth one."""
        config = self.config
        temporal = config.num_layers * (num_timesteps + self.acoustic_delay) * config.dim
        depth = config.depth_layers * config.num_levels * config.depth_dim
        return 2 * rows * (temporal + depth)

    def set_inference_precision(self, precision: str) -> DepthLM:
        return self.to(_inference_dtype(precision))

    def _to_grid(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, C, T] -> the frames the decoder runs over, [B, C, T + delay]: level 0
        as it is, levels >= 1 `acoustic_delay` frames later; the special token elsewhere."""
        delay = self.acoustic_delay
        if not delay:
            return codes
        batch, levels, frames = codes.shape
        grid = codes.new_full((batch, levels, frames + delay), self.special_token)
        grid[:, 0, :frames] = codes[:, 0]
        grid[:, 1:, delay:] = codes[:, 1:]
        return grid

    def _from_grid(self, grid: torch.Tensor, frames: int) -> torch.Tensor:
        """The inverse of `_to_grid` on dims 1 (levels) and 2 (frames) of any tensor."""
        delay = self.acoustic_delay
        if not delay:
            return grid
        return torch.cat([grid[:, :1, :frames], grid[:, 1:, delay : delay + frames]], dim=1)

    def _frame_inputs(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, C, T] -> temporal inputs [B, T, D]: frame t reads frame t-1's tokens."""
        batch, levels, frames = codes.shape
        start = codes.new_full((batch, levels, 1), self.special_token)
        previous = torch.cat([start, codes[:, :, :-1]], dim=2)
        positions = sinusoidal_encoding(
            torch.arange(frames, device=codes.device), self.config.dim, kind=self.config.positional
        )
        summed = summed_level_embedding(previous, self.token_embedding)
        return summed + positions.to(summed.dtype)

    def _depth_inputs(self, hidden: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """hidden [N, D], codes [N, C] of N frames -> depth inputs [N, C, d]."""
        frames = codes.shape[0]
        start = codes.new_full((frames, 1), self.special_token)
        previous = torch.cat([start, codes[:, :-1]], dim=1)  # level k reads level k-1
        tokens = level_lookup(previous, self.depth_token_embedding)
        return self.depth_input(hidden)[:, None] + tokens + self.depth_level_embedding

    def head_inputs(
        self, codes: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor
    ) -> torch.Tensor:
        """codes [B, C, T] -> the depth state predicting each of them, [B, C, T, depth_dim]."""
        if codes.shape[1] != self.config.num_levels:
            raise ValueError(
                f"codes have {codes.shape[1]} levels, model expects {self.config.num_levels}"
            )
        real_frames = codes.shape[2]
        codes = self._to_grid(codes)
        batch, num_levels, frames = codes.shape
        hidden = self.decoder(self._frame_inputs(codes), None, context, context_mask)
        hidden = hidden.reshape(batch * frames, -1)  # frames become the depth pass's batch
        per_frame = codes.permute(0, 2, 1).reshape(batch * frames, num_levels)
        depth_context = self.depth_context(hidden)[:, None]
        one_key = depth_context.new_ones(batch * frames, 1, dtype=torch.bool)
        if self.config.depth_weights_per_level:
            # Level k's cross-attention projects the context with its own weights: the
            # context at every level, each level seeing its own projection only.
            depth_context = depth_context.expand(-1, num_levels, -1)
            own = torch.eye(num_levels, dtype=torch.bool, device=codes.device)
            one_key = own.expand(batch * frames, -1, -1)
        depth = self.depth_decoder(
            self._depth_inputs(hidden, per_frame), None, depth_context, one_key
        )  # [B*T, C, d]
        return self._from_grid(
            depth.view(batch, frames, num_levels, -1).transpose(1, 2), real_frames
        )

    def step_decoders(
        self,
        batch_rows: int,
        pack_weights: PackChoice = "auto",
        precision: str | None = None,
    ) -> tuple[StepDecoder, list[StepDecoder], list[Projection]]:
        """The temporal transformer and, per level, the depth transformer with that level's
        head, prepared for decoding `batch_rows` rows (one depth decoder for all levels
        unless each level has its own weights) and the level heads prepared with them; the
        model's weights are read, never changed."""
        from lightning_sdm.models.adapters import merged_projection  # as in CodebookLM

        own_dtype = self.token_embedding.dtype
        dtype = own_dtype if precision is None else _inference_dtype(precision)
        temporal = StepDecoder(
            self.decoder, batch_rows, dtype, own_dtype, pack_weights, merge=merged_projection
        )
        heads = list(zip(self.head_weight, self.head_bias, strict=True))
        if not self.config.depth_weights_per_level:
            depth = StepDecoder(
                self.depth_decoder, batch_rows, dtype, own_dtype, pack_weights, extra=heads
            )
            return temporal, [depth] * len(heads), depth.extra_projections
        depths = [
            StepDecoder(
                position_view(self.depth_decoder, level),
                batch_rows,
                dtype,
                own_dtype,
                pack_weights,
                extra=[head],
            )
            for level, head in enumerate(heads)
        ]
        return temporal, depths, [depth.extra_projections[0] for depth in depths]

    def matmul_path(
        self, batch_rows: int, num_timesteps: int, pack_weights: PackChoice = "auto"
    ) -> str:
        temporal, depths, _ = self.step_decoders(batch_rows, pack_weights)
        return summary({**temporal.paths, **depths[0].paths})

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
        """Frame by frame: one temporal step, then C depth steps; returns codes [R, C, T].
        Arguments as `CodebookLM.decode` (`pick` gets one level of one frame per call)."""
        with torch.inference_mode():
            decoders = self.step_decoders(context.shape[0], pack_weights, precision)
            codes = self._decode(
                context, context_mask, num_timesteps, pick, on_step, static_shapes,
                *decoders,
            )  # fmt: skip
        return codes.clone()

    def _decode(
        self,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        num_timesteps: int,
        pick: TokenPicker,
        on_step: Callable[[], None] | None,
        static_shapes: bool,
        temporal: StepDecoder,
        depths: list[StepDecoder],
        heads: list[Projection],
    ) -> torch.Tensor:
        device, rows, levels = context.device, context.shape[0], self.config.num_levels
        dtype = temporal.dtype
        delay = self.acoustic_delay
        grid_frames = num_timesteps + delay  # levels >= 1 run `delay` frames behind level 0
        codes = torch.full(
            (rows, levels, grid_frames), self.special_token, dtype=torch.long, device=device
        )
        cache = temporal.new_cache(grid_frames, context, context_mask)
        positions = sinusoidal_encoding(
            torch.arange(grid_frames, device=device), self.config.dim, kind=self.config.positional
        ).to(dtype)
        blocked = torch.tensor(float("-inf"), dtype=dtype, device=device)
        slot_of = torch.arange(max(grid_frames, levels), device=device)
        token_tables = self.token_embedding.to(dtype)
        depth_tables = self.depth_token_embedding.to(dtype)
        depth_levels = self.depth_level_embedding.to(dtype)
        depth_input = (self.depth_input.weight.to(dtype), self.depth_input.bias.to(dtype))
        depth_context = (self.depth_context.weight.to(dtype), self.depth_context.bias.to(dtype))
        one_key = torch.ones(rows, 1, dtype=torch.bool, device=device)
        start = torch.full((rows,), self.special_token, dtype=torch.long, device=device)
        levels_of = torch.arange(levels, device=device)
        for frame in range(grid_frames):
            previous = codes[:, :, frame - 1] if frame else start[:, None].expand(rows, levels)
            x = positions[frame] + level_lookup(previous, token_tables).sum(dim=1)
            extent = grid_frames if static_shapes else frame + 1
            visible = torch.where(slot_of[:extent] <= frame, 0.0, blocked).to(dtype)
            hidden = temporal.step(x[:, None], cache, slot_of[frame : frame + 1], visible, extent)
            if on_step is not None:
                on_step()
            hidden = hidden[:, 0]
            frame_caches = frame_depth_caches(
                depths, levels, F.linear(hidden, *depth_context)[:, None], one_key
            )
            frame_input = F.linear(hidden, *depth_input)
            token = start
            for level in range(levels):
                z = frame_input + F.embedding(token, depth_tables[level]) + depth_levels[level]
                width = levels if static_shapes else level + 1
                seen = torch.where(slot_of[:width] <= level, 0.0, blocked).to(dtype)
                depth, frame_cache = depths[level], frame_caches[level]
                out = depth.step(z[:, None], frame_cache, slot_of[level : level + 1], seen, width)
                if on_step is not None:
                    on_step()
                clip_frame = frame - delay if level else frame  # the frame the token is of
                if 0 <= clip_frame < num_timesteps:
                    logits = heads[level](out[:, 0]).float()[:, None]
                    levels_now = levels_of[level : level + 1]
                    times = slot_of[clip_frame : clip_frame + 1]
                    token = pick(logits, levels_now, times)[:, 0]
                else:  # outside the clip: the special token, as in training
                    token = start
                codes[:, level, frame] = token
        return self._from_grid(codes, num_timesteps)


def frame_depth_caches(
    depths: list[StepDecoder], levels: int, context: torch.Tensor, context_mask: torch.Tensor
) -> list[SlotKVCache]:
    """One frame's depth caches, one per level: the self-attention slots shared by all
    levels, the cross-attention keys/values of each level's own decoder (one cache for all
    when the levels share the decoder)."""
    first = depths[0].new_cache(levels, context, context_mask)
    caches = {id(depths[0]): first}
    for depth in depths[1:]:
        if id(depth) not in caches:
            own = depth.new_cache(levels, context, context_mask)
            caches[id(depth)] = dataclasses.replace(own, keys=first.keys, values=first.values)
    return [caches[id(depth)] for depth in depths]


def decoding_plan(
    num_timesteps: int, num_levels: int, acoustic_delay: int = 0
) -> dict[str, int | str]:
    """The depth decoder's row of `patterns table`: T temporal steps plus C depth steps per
    frame; the temporal cache holds up to T keys, the depth cache C (emptied every frame).
    An acoustic delay d runs T + d frames."""
    frames = num_timesteps + acoustic_delay
    return {
        "pattern": DEPTH_DECODER,
        "schedule": "frame, then level",
        "representation": "temporal + depth",
        "T": num_timesteps,
        "C": num_levels,
        "decoding_steps": frames * (1 + num_levels),
        "positions": frames * (1 + num_levels),
        "max_cache_keys": frames + num_levels,
    }


def draw_depth(num_timesteps: int, num_levels: int) -> str:
    """`patterns show` for the depth decoder: the step at which each token is sampled, and
    what each step reads."""
    from lightning_sdm.patterns.render import GRID_LIMIT

    plan = decoding_plan(num_timesteps, num_levels)
    shown = min(num_timesteps, GRID_LIMIT)
    width = len(str(shown * num_levels - 1)) + 1
    header = "  i\\t" + "".join(f"{t:>{width}}" for t in range(shown))
    rows = [
        f"{level:>5}" + "".join(f"{t * num_levels + level:>{width}}" for t in range(shown))
        for level in range(num_levels)
    ]
    if shown < num_timesteps:
        rows.append(f"  ... timesteps {shown} to {num_timesteps - 1} not shown")
    return "\n".join(
        [
            f"{DEPTH_DECODER} [{plan['schedule']}, {plan['representation']}]  "
            f"T={num_timesteps} C={num_levels}",
            f"decoding steps: {num_timesteps} temporal + {num_timesteps * num_levels} depth"
            f"   max cache keys: {num_timesteps} temporal + {num_levels} depth (emptied"
            " every frame)",
            "",
            "Depth step at which each token c[i, t] is sampled:",
            header,
            *rows,
            "",
            "Each frame t: one temporal step reads frame t-1's tokens (their level embeddings",
            "summed) and the text; then C depth steps sample c[0, t] ... c[C-1, t], level k",
            "reading the frame's temporal output and c[k-1, t]. No token waits for a later",
            "frame, and none sees a token of its own frame above its level.",
        ]
    )


def draw_decoder(
    pattern: str, k: int, schedule: str | None, num_timesteps: int, num_levels: int, matrix: bool
) -> str:
    """`patterns show` for any `lm.pattern`: a pattern's steps, plan and visibility, or
    the depth decoder's steps."""
    if pattern != DEPTH_DECODER:
        from lightning_sdm.patterns import make_pattern
        from lightning_sdm.patterns.render import render

        built = make_pattern(pattern, k=k, schedule=schedule)
        return render(built, built.layout(num_timesteps, num_levels), show_matrix=matrix)
    if k != 1 or schedule is not None:
        raise UserInputError(
            "the depth decoder has no interleave or schedule: it samples frame by frame, "
            "level by level (drop --k and --schedule)"
        )
    return draw_depth(num_timesteps, num_levels)


def build_lm(config: LMConfig) -> CodebookLM | DepthLM:
    """The decoder `config.pattern` names: the depth decoder, or an interleaving pattern."""
    return DepthLM(config) if config.is_depth else CodebookLM(config)
