"""lightning_sdm.captions: whether a truncated tokenization cut a caption."""

import torch
from transformers import ByT5Tokenizer

from lightning_sdm.captions import any_cut


def test_only_a_caption_longer_than_the_limit_counts_as_cut():
    tokenizer = ByT5Tokenizer()  # a token per byte, + the end token

    def cut(texts: list[str], limit: int) -> bool:
        batch = tokenizer(texts, padding=True, truncation=True, max_length=limit)
        return any_cut(tokenizer, texts, torch.tensor(batch["attention_mask"]), limit)

    assert not cut(["abc", "x" * 9], 10)  # 10 tokens: exactly the limit
    assert cut(["abc", "x" * 10], 10)
    assert cut(["éé" * 3, "a"], 6)  # 12 bytes of Latin letters with accents
