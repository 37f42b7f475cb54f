"""Transformer building blocks: attention, slot KV cache, positional encodings."""
