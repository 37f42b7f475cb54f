"""Synthetic token shards written through the real shard writer, for fast tests."""

import itertools

import numpy as np

from lightning_sdm.data.shards import ShardWriter, TokenizedItem
from lightning_sdm.data.tokenize import TokenizeConfig, write_index

CODEC = {"frame_rate": 50.0, "num_codebooks": 4, "sample_rate": 32000, "cardinality": 2048}


def write_shards(folder, frames_per_item, items_per_shard, seed=0):
    """Synthetic shards with random codes; returns key -> codes."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    writer = ShardWriter(folder, itertools.count(), items_per_shard, 1 << 30, CODEC)
    codes = {}
    for number, frames in enumerate(frames_per_item):
        key = f"item{number:04d}"
        codes[key] = rng.integers(0, 2048, (4, frames)).astype(np.int16)
        writer.write(
            TokenizedItem(key, codes[key], f"caption of {key}", {}, frames / 50, key, 32000)
        )
    writer.finish()
    write_index(folder, CODEC, [], 0, 0, TokenizeConfig(input="", output=str(folder)))
    return codes
