"""The shards' continuous latents for the diffusion family: the token DataModule's splits,
crops and padding, with latents always loaded."""

from __future__ import annotations

from lightning_sdm.data.datamodule import TokenShardsDataModule


class LatentShardsDataModule(TokenShardsDataModule):
    """Batches of `latents` [B, D, T] (with codes, padding_mask and captions) from shards
    written by `lightning-sdm tokenize --latents`; the arguments are the token
    DataModule's, and `prepare_from` tokenizes with latents."""

    always_loads_latents = True
