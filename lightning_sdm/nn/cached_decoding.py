"""Step-by-step decoding of a `TransformerDecoder` through weights prepared for it.

A decoding step multiplies a few rows by every weight, so how the weights are held decides
its speed: in the dtype asked for (bf16 halves the bytes a step streams), on the matmul
path measured fastest on this machine for each weight shape at this row count
(`nn.packed_linear`), and with each self-attention's query, key and value weights fused
into one matrix (one call per layer instead of two); for a few rows over a short caption,
with the cross-attention's query and output weights folded into the caption's keys and
values once per decode (`nn.folded_attention`: rows × heads × caption tokens ≤ width / 2,
so a step reads fewer bytes and does fewer multiply-adds). The prepared weights live in this
object, apart from the module: the module's parameters are never cast or patched, so a
bf16 decode cannot leave an fp32 caller bf16-rounded weights, and decodes of one model at
different settings share no state.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from lightning_sdm.nn.folded_attention import attend_folded, fold_context, folding_pays_per_step
from lightning_sdm.nn.kv_cache import SlotKVCache
from lightning_sdm.nn.packed_linear import (
    Epilogue,
    PackChoice,
    Projection,
    ResidualProjection,
    chosen_paths,
    packs,
    projections_for,
    with_epilogue,
)
from lightning_sdm.nn.transformer import DecoderLayer, TransformerDecoder

Pair = tuple[torch.Tensor, torch.Tensor | None]
# A projection that is not a plain nn.Linear seen as one weight and bias (a LoRA layer's
# base plus its low-rank product), or None where it cannot be.
Merge = Callable[[nn.Module], Pair | None]


class SlowPrecisionWarning(UserWarning):
    """Decoding in a reduced precision that this CPU multiplies no faster than fp32."""


def warn_if_emulated(dtype: torch.dtype, device: torch.device) -> None:
    """bf16 on a CPU whose oneDNN has no bf16 matmul (AVX2 alone) is emulated: it halves
    the weights' memory, but decodes slower than fp32 there. Say so rather than let a
    user who asked for speed wait longer."""
    if dtype == torch.bfloat16 and device.type == "cpu" and not packs(dtype):
        warnings.warn(
            "precision bf16: this CPU has no bf16 matrix units oneDNN can use (AVX2 alone), "
            "so bf16 decoding is emulated and slower than fp32 here; it still halves the "
            "weights' memory. Use precision fp32 for speed.",
            SlowPrecisionWarning,
            stacklevel=3,
        )


@dataclass(frozen=True)
class Norm:
    """A LayerNorm's affine weights in the decoding dtype."""

    weight: torch.Tensor
    bias: torch.Tensor
    eps: float

    @classmethod
    def of(cls, norm: nn.LayerNorm, dtype: torch.dtype) -> Norm:
        return cls(_cast(norm.weight, dtype), _cast(norm.bias, dtype), norm.eps)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # torch.layer_norm, not F.layer_norm: a step calls this 3 x layers times, and the
        # functional wrapper's checks cost as much as the norm of a few rows.
        return torch.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


@dataclass(frozen=True)
class StepLayer:
    """One decoder layer's cached step: `DecoderLayer.forward` for this step's positions
    against the keys and values in the cache. The output projections add onto the residual
    stream and the FFN's first projection applies its GELU, each within its matmul where
    the path allows (`nn.packed_linear`'s epilogues)."""

    num_heads: int
    self_norm: Norm
    self_query_key_value: Projection
    self_out: ResidualProjection
    cross_norm: Norm
    cross_query: Projection
    cross_key_value: Projection
    cross_out: ResidualProjection
    ffn_norm: Norm
    ffn_in_gelu: Projection
    ffn_out: ResidualProjection
    # Cross-attention's query and output weights, where both are plain layers without a
    # bias (the LM's): what a short caption's keys and values fold with
    # (`nn.folded_attention`).
    cross_fold_weights: tuple[torch.Tensor, torch.Tensor] | None = None

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        rows, positions, width = x.shape
        return x.view(rows, positions, self.num_heads, width // self.num_heads).transpose(1, 2)

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2).flatten(-2)

    def cross_keys_values(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.cross_key_value(context).chunk(2, dim=-1)
        return self.heads(keys), self.heads(values)

    def folded(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The caption's scorer and mixer (`fold_context`)."""
        assert self.cross_fold_weights is not None  # new_cache folds only when all have them
        return fold_context(*self.cross_fold_weights, keys, values)

    def __call__(
        self,
        x: torch.Tensor,
        cache: SlotKVCache,
        layer: int,
        slots: torch.Tensor,
        visible: torch.Tensor,
        extent: int,
    ) -> torch.Tensor:
        queries, keys, values = self.self_query_key_value(self.self_norm(x)).chunk(3, dim=-1)
        cache.write(layer, slots, self.heads(keys), self.heads(values))
        cached_keys, cached_values = cache.read(layer, extent)
        attended = F.scaled_dot_product_attention(
            self.heads(queries), cached_keys, cached_values, attn_mask=visible
        )
        x = self.self_out(self.merge(attended), x)
        if cache.cross_folded:  # a short caption's projections folded into it
            x = self._cross_folded(x, cache, layer)
            return self.ffn_out(self.ffn_in_gelu(self.ffn_norm(x)), x)
        crossed = F.scaled_dot_product_attention(
            self.heads(self.cross_query(self.cross_norm(x))),
            cache.cross_keys[layer],
            cache.cross_values[layer],
            attn_mask=cache.cross_mask,
        )
        x = self.cross_out(self.merge(crossed), x)
        return self.ffn_out(self.ffn_in_gelu(self.ffn_norm(x)), x)

    def _cross_folded(self, x: torch.Tensor, cache: SlotKVCache, layer: int) -> torch.Tensor:
        return attend_folded(
            self.cross_norm(x),
            cache.cross_keys[layer],
            cache.cross_values[layer],
            self.num_heads,
            cache.cross_mask,
            residual=x,
        )


class StepDecoder:
    """A `TransformerDecoder`'s cached incremental path over prepared weights.

    `module_dtype` is the dtype the decoder's own forward runs in: projections that are
    not plain `nn.Linear`s (LoRA adapters, low-precision frozen layers) are called as
    they are, with their input in that dtype, unless `merge` sees one as a single weight
    (a LoRA layer's base plus its low-rank product): then it is prepared like a plain
    layer. That holds one more copy of those weights, which a CPU decode makes of every
    weight anyway (packed, or cast), so it is done on CPUs only; on an accelerator a
    training run's memory is not charged for it. `extra` weights (an LM's output heads)
    are prepared alongside the decoder's, with the same dtype and path choice, and handed
    back as `extra_projections`.
    """

    def __init__(
        self,
        decoder: TransformerDecoder,
        rows: int,
        dtype: torch.dtype,
        module_dtype: torch.dtype,
        pack: PackChoice = "auto",
        extra: list[Pair] | None = None,
        merge: Merge | None = None,
    ) -> None:
        self.dtype = dtype
        device = decoder.final_norm.weight.device
        warn_if_emulated(dtype, device)
        self.num_heads = decoder.num_heads
        self.head_dim = decoder.head_dim
        layers = list(decoder.layers)
        for layer in layers:
            _require_plain_attention(layer)
        weights = _Weights(dtype, module_dtype, merge if device.type == "cpu" else None)
        entries = [entry for layer in layers for entry in weights.step_entries(layer)]
        entries += [(pair, "none") for pair in _cast_pairs(extra or [], dtype)]
        pairs = [(entry, then) for entry, then in entries if isinstance(entry, tuple)]
        self.paths = chosen_paths([weight for (weight, _), _ in pairs], rows, pack)
        prepared = iter(
            projections_for([pair for pair, _ in pairs], rows, self.paths, [e for _, e in pairs])
        )
        resolved = [
            next(prepared) if isinstance(entry, tuple) else with_epilogue(entry, then)
            for entry, then in entries
        ]
        count = STEP_PROJECTIONS * len(layers)
        self.extra_projections = resolved[count:]
        self.layers = [
            weights.step_layer(layer, resolved[i * STEP_PROJECTIONS : (i + 1) * STEP_PROJECTIONS])
            for i, layer in enumerate(layers)
        ]
        self.final_norm = Norm.of(decoder.final_norm, dtype)

    def new_cache(
        self, num_slots: int, context: torch.Tensor, context_mask: torch.Tensor
    ) -> SlotKVCache:
        """Preallocate the self-attention slots and compute the cross-attention keys/values."""
        context = context.to(self.dtype)
        cross = [layer.cross_keys_values(context) for layer in self.layers]
        rows, num_keys = context.shape[:2]
        folds = all(layer.cross_fold_weights is not None for layer in self.layers)
        folds = folds and folding_pays_per_step(rows, self.num_heads, num_keys, context.shape[2])
        if folds:  # the caption's scorer and mixer stand in for its keys and values
            cross = [layer.folded(*pair) for layer, pair in zip(self.layers, cross, strict=True)]
        return SlotKVCache.allocate(
            num_layers=len(self.layers),
            rows=rows,
            num_heads=self.num_heads,
            num_slots=num_slots,
            head_dim=self.head_dim,
            cross_keys=[keys for keys, _ in cross],
            cross_values=[values for _, values in cross],
            # Additive, made once: SDPA takes a float mask faster than a boolean one.
            cross_mask=torch.zeros_like(context_mask, dtype=self.dtype).masked_fill(
                ~context_mask, float("-inf")
            )[:, None, None, :],
            cross_folded=folds,
        )

    def step(
        self,
        x: torch.Tensor,
        cache: SlotKVCache,
        slots: torch.Tensor,
        visible: torch.Tensor,
        extent: int,
    ) -> torch.Tensor:
        """x [R, P, D] of this step's positions -> hidden states [R, P, D]. visible
        [extent]: which slots hold keys alive at this step, as an additive float mask."""
        x = x.to(self.dtype)
        mask = visible[None, None, None, :]
        for index, layer in enumerate(self.layers):
            x = layer(x, cache, index, slots, mask, extent)
        return self.final_norm(x)


# What a layer's step multiplies through, in call order: a weight to prepare (and measure)
# or a projection used as it is.
Entry = Pair | Projection
# An entry and what the step does to its product right after (`nn.packed_linear`).
Step = tuple[Entry, Epilogue]
STEP_PROJECTIONS = 7


def _cast(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return tensor.detach().to(dtype)


def _cast_optional(tensor: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return None if tensor is None else _cast(tensor, dtype)


def _cast_pairs(pairs: list[Pair], dtype: torch.dtype) -> list[Entry]:
    return [(_cast(weight, dtype), _cast_optional(bias, dtype)) for weight, bias in pairs]


def _require_plain_attention(layer: DecoderLayer) -> None:
    """The step computes plain scaled dot-product attention; a layer with QK-norm or
    rotary positions must not decode silently wrong."""
    for attention in (layer.self_attention, layer.cross_attention):
        if attention.query_norm is not None or attention.rotary is not None:
            raise ValueError("cached decoding supports attention without QK-norm or rotary")


def _is_plain(linear: nn.Module) -> bool:
    return type(linear) is nn.Linear


def _bias_or_zeros(weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return bias if bias is not None else weight.new_zeros(weight.shape[0])


@dataclass(frozen=True)
class _Weights:
    """How a decoder's projections become a step's: plain layers (and those `merge` sees
    as one weight) as weights to prepare in `dtype`, any other called as it is."""

    dtype: torch.dtype
    module_dtype: torch.dtype
    merge: Merge | None
    # Each projection's pair, made once: the cross-attention's query and output are asked
    # for again for folding, and a merged pair is a new copy of the weight.
    _pairs: dict[int, Pair | None] = field(default_factory=dict)

    def pair(self, linear: nn.Module) -> Pair | None:
        """The projection's weight and bias in the decoding dtype, or None: opaque."""
        if id(linear) not in self._pairs:
            self._pairs[id(linear)] = self._made_pair(linear)
        return self._pairs[id(linear)]

    def _made_pair(self, linear: nn.Module) -> Pair | None:
        if _is_plain(linear):
            found: Pair | None = (linear.weight, linear.bias)
        else:
            found = self.merge(linear) if self.merge is not None else None
        if found is None:
            return None
        weight, bias = found
        return _cast(weight, self.dtype), _cast_optional(bias, self.dtype)

    def entry(self, linear: nn.Module) -> Entry:
        """The weights to prepare, or the projection called as it is."""
        pair = self.pair(linear)
        if pair is not None:
            return pair
        module_dtype, dtype = self.module_dtype, self.dtype
        return lambda x: linear(x.to(module_dtype)).to(dtype)

    def fixed(self, linear: nn.Module) -> Projection:
        """A projection used once per decode (cross-attention keys/values of the text):
        read in place, not measured or packed."""
        entry = self.entry(linear)
        if isinstance(entry, tuple):
            weight, bias = entry
            return lambda x: F.linear(x, weight, bias)
        return entry

    def step_entries(self, layer: DecoderLayer) -> list[Step]:
        """The layer's projections in the order a step calls them, each with its
        epilogue. Self-attention's query and key/value weights are fused into one where
        both are weights to prepare."""
        attention = layer.self_attention
        query, key_value = self.pair(attention.query), self.pair(attention.key_value)
        if query is not None and key_value is not None:
            fused_bias = None
            if query[1] is not None or key_value[1] is not None:
                fused_bias = torch.cat([_bias_or_zeros(*query), _bias_or_zeros(*key_value)])
            query_key_value: Entry = (torch.cat([query[0], key_value[0]]), fused_bias)
        else:
            project_query = self.fixed(attention.query)
            project_key_value = self.fixed(attention.key_value)
            query_key_value = lambda x: torch.cat(  # noqa: E731
                [project_query(x), project_key_value(x)], dim=-1
            )
        gelu: Epilogue = "gelu_tanh" if layer.ffn[1].approximate == "tanh" else "gelu"
        return [
            (query_key_value, "none"),
            (self.entry(attention.out), "add"),
            (self.entry(layer.cross_attention.query), "none"),
            (self.fixed(layer.cross_attention.key_value), "none"),
            (self.entry(layer.cross_attention.out), "add"),
            (self.entry(layer.ffn[0]), gelu),
            (self.entry(layer.ffn[3]), "add"),
        ]

    def step_layer(
        self, layer: DecoderLayer, projections: list[Callable[..., torch.Tensor]]
    ) -> StepLayer:
        self_qkv, self_out, cross_query, cross_key_value, cross_out, ffn_in, ffn_out = projections
        return StepLayer(
            num_heads=layer.self_attention.num_heads,
            self_norm=Norm.of(layer.self_norm, self.dtype),
            self_query_key_value=self_qkv,
            self_out=self_out,
            cross_norm=Norm.of(layer.cross_norm, self.dtype),
            cross_query=cross_query,
            cross_key_value=cross_key_value,
            cross_out=cross_out,
            ffn_norm=Norm.of(layer.ffn_norm, self.dtype),
            ffn_in_gelu=ffn_in,
            ffn_out=ffn_out,
            cross_fold_weights=self.cross_fold_weights(layer),
        )

    def cross_fold_weights(self, layer: DecoderLayer) -> tuple[torch.Tensor, torch.Tensor] | None:
        query = self.pair(layer.cross_attention.query)
        out = self.pair(layer.cross_attention.out)
        if query is None or out is None or out[1] is not None:
            return None  # an opaque projection is called as it is
        return query[0], out[0]
