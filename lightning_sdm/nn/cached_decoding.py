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
from dataclasses import dataclass

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
    they are, with their input in that dtype. `extra` weights (an LM's output heads) are
    prepared alongside the decoder's, with the same dtype and path choice, and handed
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
    ) -> None:
        self.dtype = dtype
        warn_if_emulated(dtype, decoder.final_norm.weight.device)
        self.num_heads = decoder.num_heads
        self.head_dim = decoder.head_dim
        layers = list(decoder.layers)
        for layer in layers:
            _require_plain_attention(layer)
        entries = [entry for layer in layers for entry in _step_entries(layer, dtype, module_dtype)]
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
            _step_layer(layer, dtype, resolved[i * STEP_PROJECTIONS : (i + 1) * STEP_PROJECTIONS])
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


def _entry(linear: nn.Module, dtype: torch.dtype, module_dtype: torch.dtype) -> Entry:
    """A plain layer's weights to prepare; any other projection called as it is."""
    if _is_plain(linear):
        return (_cast(linear.weight, dtype), _cast_optional(linear.bias, dtype))
    return lambda x: linear(x.to(module_dtype)).to(dtype)


def _fixed(linear: nn.Module, dtype: torch.dtype, module_dtype: torch.dtype) -> Projection:
    """A projection used once per decode (cross-attention keys/values of the text): read
    in place, not measured or packed."""
    entry = _entry(linear, dtype, module_dtype)
    if isinstance(entry, tuple):
        weight, bias = entry
        return lambda x: F.linear(x, weight, bias)
    return entry


def _step_entries(layer: DecoderLayer, dtype: torch.dtype, module_dtype: torch.dtype) -> list[Step]:
    """The layer's projections in the order a step calls them, each with its epilogue.
    Self-attention's query and key/value weights are fused into one where both are plain
    layers."""
    attention = layer.self_attention
    if _is_plain(attention.query) and _is_plain(attention.key_value):
        fused_bias = None
        if attention.query.bias is not None or attention.key_value.bias is not None:
            fused_bias = torch.cat(
                [_bias_or_zeros(attention.query), _bias_or_zeros(attention.key_value)]
            )
        fused = torch.cat([attention.query.weight.detach(), attention.key_value.weight.detach()])
        query_key_value: Entry = (_cast(fused, dtype), _cast_optional(fused_bias, dtype))
    else:
        query = _fixed(attention.query, dtype, module_dtype)
        key_value = _fixed(attention.key_value, dtype, module_dtype)
        query_key_value = lambda x: torch.cat([query(x), key_value(x)], dim=-1)  # noqa: E731
    gelu: Epilogue = "gelu_tanh" if layer.ffn[1].approximate == "tanh" else "gelu"
    return [
        (query_key_value, "none"),
        (_entry(attention.out, dtype, module_dtype), "add"),
        (_entry(layer.cross_attention.query, dtype, module_dtype), "none"),
        (_fixed(layer.cross_attention.key_value, dtype, module_dtype), "none"),
        (_entry(layer.cross_attention.out, dtype, module_dtype), "add"),
        (_entry(layer.ffn[0], dtype, module_dtype), gelu),
        (_entry(layer.ffn[3], dtype, module_dtype), "add"),
    ]


def _bias_or_zeros(linear: nn.Linear) -> torch.Tensor:
    if linear.bias is not None:
        return linear.bias.detach()
    return linear.weight.new_zeros(linear.out_features)


def _step_layer(
    layer: DecoderLayer, dtype: torch.dtype, projections: list[Callable[..., torch.Tensor]]
) -> StepLayer:
    self_qkv, self_out, cross_query, cross_key_value, cross_out, ffn_in_gelu, ffn_out = projections
    return StepLayer(
        num_heads=layer.self_attention.num_heads,
        self_norm=Norm.of(layer.self_norm, dtype),
        self_query_key_value=self_qkv,
        self_out=self_out,
        cross_norm=Norm.of(layer.cross_norm, dtype),
        cross_query=cross_query,
        cross_key_value=cross_key_value,
        cross_out=cross_out,
        ffn_norm=Norm.of(layer.ffn_norm, dtype),
        ffn_in_gelu=ffn_in_gelu,
        ffn_out=ffn_out,
        cross_fold_weights=_cross_fold_weights(layer, dtype),
    )


def _cross_fold_weights(
    layer: DecoderLayer, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor] | None:
    query, out = layer.cross_attention.query, layer.cross_attention.out
    if not (_is_plain(query) and _is_plain(out)) or out.bias is not None:
        return None  # a wrapped projection (LoRA) is called as it is
    return _cast(query.weight, dtype), _cast(out.weight, dtype)
