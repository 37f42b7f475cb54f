"""A preallocated key/value cache addressed by slots, so evicted keys free memory for reuse."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SlotKVCache:
    """Self-attention keys/values [L, R, H, slots, Dh] plus per-layer cross-attention K/V.

    The pattern plan assigns each position a slot; a slot whose key was evicted is
    overwritten by a later position, so the cache never grows past the live-key bound.
    """

    keys: torch.Tensor
    values: torch.Tensor
    cross_keys: list[torch.Tensor]
    cross_values: list[torch.Tensor]
    # [R, 1, 1, L]: True (bool) or 0 (additive) where the text token is real.
    cross_mask: torch.Tensor
    # True: the cross lists hold each layer's folded caption instead, scorers [R, D, H·L]
    # and mixers [R, H·L, D] (`nn.folded_attention.fold_context`).
    cross_folded: bool = False

    @classmethod
    def allocate(
        cls,
        num_layers: int,
        rows: int,
        num_heads: int,
        num_slots: int,
        head_dim: int,
        cross_keys: list[torch.Tensor],
        cross_values: list[torch.Tensor],
        cross_mask: torch.Tensor,
        cross_folded: bool = False,
    ) -> SlotKVCache:
        reference = cross_keys[0]
        shape = (num_layers, rows, num_heads, num_slots, head_dim)
        return cls(
            keys=reference.new_zeros(shape),
            values=reference.new_zeros(shape),
            cross_keys=cross_keys,
            cross_values=cross_values,
            cross_mask=cross_mask,
            cross_folded=cross_folded,
        )

    @property
    def num_slots(self) -> int:
        return int(self.keys.shape[3])

    def write(
        self, layer: int, slots: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
    ) -> None:
        """Store keys/values [R, H, P, Dh] of this step's positions in their slots."""
        self.keys[layer].index_copy_(2, slots, keys)
        self.values[layer].index_copy_(2, slots, values)

    def read(self, layer: int, extent: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys/values of slots [0, extent): the only slots in use so far."""
        return self.keys[layer, :, :, :extent], self.values[layer, :, :, :extent]
