"""Synthetic token shards written through the real shard writer, for fast tests."""

import itertools

import numpy as np

from lightning_sdm.codecs import CodecIdentity
from lightning_sdm.data.shards import ShardWriter, TokenizedItem
from lightning_sdm.data.tokenize import TokenizeConfig, write_index

CODEC = CodecIdentity(frame_rate=50.0, num_codebooks=4, sample_rate=32000, cardinality=2048)


def write_shards(
    folder, frames_per_item, items_per_shard, seed=0, latent_dim=0, gains=None, codec=CODEC
):
    """Synthetic shards with random codes (and `latent_dim`-channel latents, item i's
    scaled by `gains[i]`), their index naming `codec`; returns key -> codes."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    writer = ShardWriter(folder, itertools.count(), items_per_shard, 1 << 30, codec)
    codes = {}
    for number, frames in enumerate(frames_per_item):
        key = f"item{number:04d}"
        codes[key] = rng.integers(0, 2048, (4, frames)).astype(np.int16)
        latents = None
        if latent_dim:  # a slow sine per channel, so there is something to learn
            phase = rng.uniform(0, 6.28, (latent_dim, 1))
            gain = 1.0 if gains is None else gains[number]
            latents = (gain * (3 * np.sin(phase + np.arange(frames) / 5) + 1)).astype(np.float16)
        writer.write(
            TokenizedItem(
                key, codes[key], f"caption of {key}", {}, frames / 50, key, 32000, latents
            )
        )
    writer.finish()
    config = TokenizeConfig(input="", output=str(folder), keep_latents=bool(latent_dim))
    write_index(folder, codec, [], 0, 0, config)
    return codes
