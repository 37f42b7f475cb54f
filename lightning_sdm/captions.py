"""Captions against the token limit of the text model that reads them."""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase


def any_cut(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], attention_mask: torch.Tensor, limit: int
) -> bool:
    """Whether tokenizing `texts` with truncation at `limit` (giving `attention_mask`) cut
    one. Only the rows that filled the limit are tokenized again, whole, to tell."""
    full = (attention_mask.sum(dim=1) >= limit).nonzero().flatten().tolist()
    return any(len(tokenizer(texts[row], verbose=False)["input_ids"]) > limit for row in full)
