"""Training the residual vector quantizer of transformers' `EncodecModel`.

transformers ships EnCodec's quantizer for inference only (nearest-code lookup), but keeps
the buffers EnCodec trains (`embed`, `embed_avg`, `cluster_size`, `inited`). This module
trains exactly those buffers, EnCodec's way: k-means initialisation from the first batch
that reaches a level, exponential-moving-average codebook updates, replacement of codes
that fell out of use, a commitment loss and quantiser dropout over the target bandwidths.
A model trained here saves with `save_pretrained` and encodes with transformers' own code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from transformers.models.encodec.modeling_encodec import (
    EncodecEuclideanCodebook,
    EncodecResidualVectorQuantizer,
)


@dataclass(frozen=True)
class QuantizerTraining:
    """How the codebooks learn.

    Args:
        decay: EMA decay of the codebook statistics.
        epsilon: Laplace smoothing of the cluster sizes.
        kmeans_iters: Lloyd iterations of the k-means initialisation.
        dead_code_threshold: A code whose EMA usage falls below this many vectors per
            batch is replaced by a vector of the current batch (0: never).
        commitment_weight: Weight of the commitment loss (encoder output to its codes).
        dropout: Sample the number of levels per step from the model's target bandwidths,
            so one codec serves every bandwidth (EnCodec's quantiser dropout).
        warmup_steps: Train as a plain autoencoder for this many steps first; the k-means
            initialisation then clusters latents that already describe the audio instead
            of a random encoder's (small codecs trained briefly need this).
    """

    decay: float = 0.99
    epsilon: float = 1e-5
    kmeans_iters: int = 10
    dead_code_threshold: float = 2.0
    commitment_weight: float = 1.0
    dropout: bool = True
    warmup_steps: int = 0


@dataclass
class QuantizedLatents:
    quantized: torch.Tensor  # [B, D, T], straight-through: gradients reach the encoder
    codes: torch.Tensor  # [levels, B, T]
    commitment_loss: torch.Tensor
    replaced_codes: int  # dead codes replaced during this call, all levels


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _sample_rows(vectors: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` rows of `vectors`, without repeats when there are enough."""
    if vectors.shape[0] >= count:
        order = torch.randperm(vectors.shape[0], generator=generator, device="cpu")
        return vectors[order[:count].to(vectors.device)]
    picks = torch.randint(0, vectors.shape[0], (count,), generator=generator, device="cpu")
    return vectors[picks.to(vectors.device)]


def nearest(vectors: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centroid of each vector (squared Euclidean)."""
    distances = (
        vectors.pow(2).sum(1, keepdim=True)
        - 2 * vectors @ centroids.T
        + centroids.pow(2).sum(1)[None]
    )
    return distances.argmin(dim=1)


def _kmeans_plus_plus(
    vectors: torch.Tensor, count: int, generator: torch.Generator
) -> torch.Tensor:
    """Seeds far apart (each drawn with probability by squared distance to the chosen
    ones), so Lloyd's iterations start near a good optimum, not in a local one."""
    if vectors.shape[0] <= count:
        return _sample_rows(vectors, count, generator)
    first = int(torch.randint(0, vectors.shape[0], (1,), generator=generator))
    chosen = [first]
    distance = (vectors - vectors[first]).pow(2).sum(1)
    for _ in range(count - 1):
        weights = distance.cpu().double()
        if float(weights.sum()) <= 0:
            pick = int(torch.randint(0, vectors.shape[0], (1,), generator=generator))
        else:
            pick = int(torch.multinomial(weights, 1, generator=generator))
        chosen.append(pick)
        distance = torch.minimum(distance, (vectors - vectors[pick]).pow(2).sum(1))
    return vectors[torch.tensor(chosen, device=vectors.device)]


def kmeans(
    vectors: torch.Tensor, count: int, iterations: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means++ seeding and Lloyd's iterations: (centroids [count, D], sizes [count])."""
    vectors = vectors.float()
    centroids = _kmeans_plus_plus(vectors, count, generator)
    sizes = torch.zeros(count, device=vectors.device)
    for _ in range(iterations):
        assignment = nearest(vectors, centroids)
        sizes = torch.bincount(assignment, minlength=count).float()
        sums = torch.zeros_like(centroids).index_add_(0, assignment, vectors)
        # An empty cluster keeps its centroid rather than collapsing to the origin.
        centroids = torch.where(sizes[:, None] > 0, sums / sizes.clamp(min=1)[:, None], centroids)
    return centroids, sizes


class ResidualQuantizerTrainer:
    """The training-time forward of an `EncodecResidualVectorQuantizer`.

    Not a module: the codebooks stay where transformers keeps them (and where
    `save_pretrained` finds them). Statistics are summed over DDP ranks before every update,
    and codes replaced on rank 0 are broadcast, so every rank holds the same codebooks.
    """

    def __init__(
        self,
        quantizer: EncodecResidualVectorQuantizer,
        config: QuantizerTraining | None = None,
        bandwidths: list[float] | None = None,
        seed: int = 0,
    ) -> None:
        self.quantizer = quantizer
        self.config = config or QuantizerTraining()
        self.bandwidths = list(bandwidths or [])
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def codebooks(self) -> list[EncodecEuclideanCodebook]:
        return [layer.codebook for layer in self.quantizer.layers]

    def reset(self) -> None:
        """Mark every codebook uninitialised: the first batch of each level runs k-means."""
        for codebook in self.codebooks:
            codebook.inited.fill_(0)
            codebook.cluster_size.zero_()

    def levels_for(self, bandwidth: float | None) -> int:
        return self.quantizer.get_num_quantizers_for_bandwidth(bandwidth)

    @property
    def full_levels(self) -> int:
        """Levels at the highest target bandwidth (all of them without targets)."""
        return self.levels_for(max(self.bandwidths) if self.bandwidths else None)

    def sample_levels(self, step: int) -> int:
        """Levels used at `step`: a bandwidth drawn from the targets (the same on every rank,
        since it depends on the step only), or all levels without dropout."""
        if not self.config.dropout or len(self.bandwidths) < 2:
            return self.full_levels
        generator = torch.Generator().manual_seed(step)
        choice = int(torch.randint(0, len(self.bandwidths), (1,), generator=generator))
        return self.levels_for(self.bandwidths[choice])

    def __call__(
        self, latents: torch.Tensor, levels: int | None = None, update: bool = False
    ) -> QuantizedLatents:
        """latents [B, D, T] -> quantized with `levels` levels (default all); with `update`,
        the codebooks learn from this batch (initialised first if they never have)."""
        levels = levels or self.full_levels
        batch, dim, frames = latents.shape
        vectors = latents.permute(0, 2, 1).reshape(-1, dim).float()
        residual = vectors
        quantized_sum = torch.zeros_like(vectors)
        codes, losses, replaced = [], [], 0
        for codebook in self.codebooks[:levels]:
            plain = residual.detach()
            if update and not bool(codebook.inited.item()):
                self._initialise(codebook, plain)
            indices = nearest(plain, codebook.embed)
            quantized = codebook.embed[indices]  # a copy: the update below is in place
            # Commitment (EnCodec's): each level's input is pulled towards its code; the
            # inputs carry the encoder's gradient, the codes none.
            losses.append(nn.functional.mse_loss(residual, quantized))
            if update:
                replaced += self._update(codebook, plain, indices)
            quantized_sum = quantized_sum + quantized
            residual = residual - quantized
            codes.append(indices.view(batch, frames))
        straight_through = vectors + (quantized_sum - vectors).detach()
        return QuantizedLatents(
            quantized=straight_through.view(batch, frames, dim).permute(0, 2, 1).to(latents.dtype),
            codes=torch.stack(codes),
            commitment_loss=torch.stack(losses).mean(),
            replaced_codes=replaced,
        )

    @torch.no_grad()
    def _initialise(self, codebook: EncodecEuclideanCodebook, vectors: torch.Tensor) -> None:
        count = codebook.embed.shape[0]
        centroids, sizes = kmeans(vectors, count, self.config.kmeans_iters, self.generator)
        if _distributed():
            dist.broadcast(centroids, src=0)
            dist.broadcast(sizes, src=0)
        codebook.embed.copy_(centroids)
        codebook.embed_avg.copy_(centroids * sizes[:, None])
        codebook.cluster_size.copy_(sizes)
        codebook.inited.fill_(1)

    @torch.no_grad()
    def _update(
        self, codebook: EncodecEuclideanCodebook, vectors: torch.Tensor, indices: torch.Tensor
    ) -> int:
        """One EMA step of the cluster sizes and sums; then dead codes are replaced."""
        count = codebook.embed.shape[0]
        sizes = torch.bincount(indices, minlength=count).float()
        sums = torch.zeros_like(codebook.embed).index_add_(0, indices, vectors)
        if _distributed():
            dist.all_reduce(sizes)
            dist.all_reduce(sums)
        decay = self.config.decay
        codebook.cluster_size.mul_(decay).add_(sizes, alpha=1 - decay)
        codebook.embed_avg.mul_(decay).add_(sums, alpha=1 - decay)
        total = codebook.cluster_size.sum()
        eps = self.config.epsilon
        smoothed = (codebook.cluster_size + eps) / (total + count * eps) * total
        codebook.embed.copy_(codebook.embed_avg / smoothed[:, None])
        return self._replace_dead(codebook, vectors)

    @torch.no_grad()
    def _replace_dead(self, codebook: EncodecEuclideanCodebook, vectors: torch.Tensor) -> int:
        threshold = self.config.dead_code_threshold
        if threshold <= 0:
            return 0
        dead = codebook.cluster_size < threshold
        dead_count = int(dead.sum())  # the same on every rank: cluster sizes are synced
        if dead_count == 0:
            return 0
        fresh = _sample_rows(vectors, dead_count, self.generator).to(codebook.embed.dtype)
        if _distributed():
            dist.broadcast(fresh, src=0)
        # The statistics restart with the new vector at the threshold's weight, so the next
        # EMA step keeps it instead of averaging it away.
        codebook.embed[dead] = fresh
        codebook.embed_avg[dead] = fresh * threshold
        codebook.cluster_size[dead] = threshold
        return dead_count


def codebook_usage(codes: torch.Tensor, cardinality: int) -> tuple[list[float], list[int]]:
    """Perplexity and unused-code count per level of codes [levels, ...]."""
    perplexities, unused = [], []
    for level in codes:
        counts = torch.bincount(level.reshape(-1), minlength=cardinality).float()
        probabilities = counts / counts.sum().clamp(min=1)
        entropy = -(probabilities * probabilities.clamp(min=1e-12).log()).sum()
        perplexities.append(float(entropy.exp()))
        unused.append(int((counts == 0).sum()))
    return perplexities, unused


def bits_per_second(levels: int, cardinality: int, frame_rate: float) -> float:
    return levels * math.log2(cardinality) * frame_rate
