"""The shards' continuous latents for the diffusion family: the token DataModule's splits,
crops and padding, with latents always loaded."""

from __future__ import annotations

import torch

from lightning_sdm.data.datamodule import TokenShardsDataModule


def latent_moments_of(latents: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
    """[sum, sum of squares, count] of latents [B, D, T] over the real frames of frame_mask
    [B, T], in float64 (sums that add up across batches and ranks)."""
    real = latents.double().transpose(1, 2)[frame_mask]
    count = torch.tensor(float(real.numel()), dtype=torch.float64, device=real.device)
    return torch.stack([real.sum(), real.square().sum(), count])


class LatentShardsDataModule(TokenShardsDataModule):
    """Batches of `latents` [B, D, T] (with codes, padding_mask and captions) from shards
    written by `lightning-sdm tokenize --latents`; the arguments are the token
    DataModule's, and `prepare_from` tokenizes with latents."""

    always_loads_latents = True

    def latent_moments(self, max_batches: int = 64) -> torch.Tensor:
        """[sum, sum of squares, count] of the latent values over the real frames of up to
        `max_batches` of this rank's training batches (their random crops, read apart from
        the training loader). A diffusion model standardises with them: one batch can be
        far off when loudness or instruments differ across the catalogue."""
        if max_batches < 1:
            raise ValueError(f"max_batches must be >= 1, got {max_batches}")
        moments = torch.zeros(3, dtype=torch.float64)
        for index, batch in enumerate(self.make_loader("train", *self._rank_and_world())):
            if index >= max_batches:
                break
            moments += latent_moments_of(batch["latents"], batch["padding_mask"])
        return moments
