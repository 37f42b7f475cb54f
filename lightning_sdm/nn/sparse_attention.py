"""Block-sparse attention: score only the key blocks a query block can see.

A plan is built once from a dense boolean mask and a key order in which each query's
visible keys fall into few blocks. Two kernels run the same plan:

- FlexAttention (`torch.nn.attention.flex_attention`), compiled, over the keys in that
  order with a `BlockMask`: the owner of this job wherever it can run (CUDA; any device
  when no gradient is needed).
- Chunked SDPA, written here because FlexAttention has no backward on CPU: per chunk of
  query rows, one SDPA call over the gathered visible key blocks and their slice of the
  mask. Autograd flows through the gathers, so it trains anywhere.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from torch.nn.attention.flex_attention import BlockMask

log = logging.getLogger(__name__)

SPARSE_KERNELS = ("auto", "flex", "chunked")


@dataclass(frozen=True)
class QueryChunk:
    """Query rows [start, end) attend to `keys` (positions in the original order) under
    `mask` [end - start, len(keys)]."""

    start: int
    end: int
    keys: torch.Tensor
    mask: torch.Tensor


class BlockSparseMask:
    """The visible set of a dense [N, N] mask (True = may attend), planned by blocks."""

    def __init__(
        self,
        mask: torch.Tensor,
        key_order: torch.Tensor,
        query_block: int = 256,
        key_block: int = 64,
    ) -> None:
        size = mask.shape[0]
        if mask.shape != (size, size) or mask.dtype != torch.bool:
            raise ValueError(f"mask must be a square bool tensor, got {tuple(mask.shape)}")
        if not torch.equal(torch.sort(key_order.cpu()).values, torch.arange(size)):
            raise ValueError("key_order must be a permutation of the mask's positions")
        if not bool(mask.any(dim=1).all()):
            raise ValueError("every query must see at least one key")
        self.mask = mask
        self.key_order = key_order.to(mask.device)
        self.query_block = query_block
        self.key_block = key_block
        self.chunks = _plan_chunks(mask, self.key_order, query_block, key_block)
        computed = sum((c.end - c.start) * c.keys.numel() for c in self.chunks)
        self.scores_fraction = computed / size**2

    @property
    def num_positions(self) -> int:
        return self.mask.shape[0]

    def to(self, device: torch.device | str) -> BlockSparseMask:
        moved = object.__new__(BlockSparseMask)
        moved.__dict__.update(self.__dict__)
        moved.mask = self.mask.to(device)
        moved.key_order = self.key_order.to(device)
        moved.chunks = [
            QueryChunk(c.start, c.end, c.keys.to(device), c.mask.to(device)) for c in self.chunks
        ]
        moved.__dict__.pop("flex_block_mask", None)
        return moved

    def attend(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        dropout_p: float = 0.0,
        kernel: str = "auto",
    ) -> torch.Tensor:
        """queries/keys/values [B, H, N, Dh] -> [B, H, N, Dh]."""
        if kernel not in SPARSE_KERNELS:
            raise ValueError(f"kernel must be one of {SPARSE_KERNELS}, got {kernel!r}")
        if queries.shape[2] != self.num_positions or keys.shape[2] != self.num_positions:
            raise ValueError(
                f"this mask covers {self.num_positions} positions, got queries of "
                f"{queries.shape[2]} and keys of {keys.shape[2]}"
            )
        needs_grad = torch.is_grad_enabled() and any(
            t.requires_grad for t in (queries, keys, values)
        )
        if kernel == "auto":
            fits = flex_kernel_fits(queries.device, needs_grad, dropout_p)
            kernel = "flex" if fits else "chunked"
        if kernel == "flex":
            if dropout_p:
                raise ValueError("FlexAttention has no attention dropout: use the chunked kernel")
            if needs_grad and queries.device.type == "cpu":
                raise NotImplementedError(
                    "FlexAttention has no backward on CPU in this torch: use the chunked kernel"
                )
            return self._attend_flex(queries, keys, values)
        return self._attend_chunked(queries, keys, values, dropout_p)

    def _attend_chunked(
        self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, dropout_p: float
    ) -> torch.Tensor:
        outputs = [
            F.scaled_dot_product_attention(
                queries[:, :, chunk.start : chunk.end],
                keys.index_select(2, chunk.keys),
                values.index_select(2, chunk.keys),
                attn_mask=chunk.mask,
                dropout_p=dropout_p,
            )
            for chunk in self.chunks
        ]
        return torch.cat(outputs, dim=2)

    @functools.cached_property
    def flex_block_mask(self) -> BlockMask:
        from torch.nn.attention.flex_attention import create_block_mask

        permuted = self.mask[:, self.key_order].contiguous()

        def visible(
            batch: torch.Tensor, head: torch.Tensor, query: torch.Tensor, key: torch.Tensor
        ) -> torch.Tensor:
            return permuted[query, key]

        size = self.num_positions
        return create_block_mask(visible, None, None, size, size, device=self.mask.device)

    def _attend_flex(
        self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
    ) -> torch.Tensor:
        order = self.key_order
        return compiled_flex_attention()(
            queries,
            keys.index_select(2, order),
            values.index_select(2, order),
            block_mask=self.flex_block_mask,
        )


def flex_kernel_fits(device: torch.device, needs_grad: bool, dropout_p: float) -> bool:
    """Where "auto" runs FlexAttention: a CUDA device, no attention dropout. On CPU the
    chunked kernel trains (FlexAttention has no CPU backward) and needs no compilation."""
    return device.type == "cuda" and not dropout_p


@functools.cache
def compiled_flex_attention() -> Callable[..., torch.Tensor]:
    """FlexAttention compiled once per process; uncompiled it scores every key."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def _plan_chunks(
    mask: torch.Tensor, key_order: torch.Tensor, query_block: int, key_block: int
) -> list[QueryChunk]:
    size = mask.shape[0]
    num_key_blocks = -(-size // key_block)
    padding = num_key_blocks * key_block - size
    permuted = mask[:, key_order]
    offsets = torch.arange(key_block, device=mask.device)
    chunks = []
    for start in range(0, size, query_block):
        end = min(start + query_block, size)
        rows = F.pad(permuted[start:end], (0, padding))
        seen = rows.view(end - start, num_key_blocks, key_block).any(dim=2).any(dim=0)
        columns = (torch.nonzero(seen).squeeze(1)[:, None] * key_block + offsets).flatten()
        keys = key_order[columns[columns < size]]
        chunks.append(QueryChunk(start, end, keys, mask[start:end][:, keys].contiguous()))
    return chunks
