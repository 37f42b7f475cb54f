"""EnCodec's multi-scale STFT discriminator and its losses (hinge and feature matching).

Each scale looks at the complex STFT (real and imaginary parts as two channels) through
2-D convolutions dilated in time and strided in frequency, as in Défossez et al. (2022).
It sharpens a codec's high frequencies; on a CPU it costs more than it gives, so the codec
task trains without it unless asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Args:
    filters: Channels of every convolution.
    n_ffts: STFT sizes, one sub-discriminator each (hop a quarter of the size).
    dilations: Time dilations of the middle convolutions.
    lr: Learning rate of the discriminator's Adam.
    betas: Adam betas (EnCodec: 0.5, 0.9).
    adversarial_weight: Weight of the generator's hinge loss.
    feature_weight: Weight of the feature-matching loss.
    """

    filters: int = 32
    n_ffts: tuple[int, ...] = (2048, 1024, 512)
    dilations: tuple[int, ...] = (1, 2, 4)
    lr: float = 3e-4
    betas: tuple[float, float] = (0.5, 0.9)
    adversarial_weight: float = 3.0
    feature_weight: float = 3.0


class STFTDiscriminator(nn.Module):
    def __init__(self, n_fft: int, filters: int, dilations: Sequence[int]) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        layers = [weight_norm(nn.Conv2d(2, filters, (3, 9), padding=(1, 4)))]
        for dilation in dilations:
            layers.append(
                weight_norm(
                    nn.Conv2d(
                        filters,
                        filters,
                        (3, 9),
                        stride=(1, 2),
                        dilation=(dilation, 1),
                        padding=(dilation, 4),
                    )
                )
            )
        layers.append(weight_norm(nn.Conv2d(filters, filters, (3, 3), padding=(1, 1))))
        self.layers = nn.ModuleList(layers)
        self.head = weight_norm(nn.Conv2d(filters, 1, (3, 3), padding=(1, 1)))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """wav [B, N] -> (logits [B, 1, frames, bins], feature maps)."""
        spec = torch.stft(
            wav.float(), self.n_fft, self.n_fft // 4, window=self.window, return_complex=True
        )
        x = torch.stack([spec.real, spec.imag], dim=1).transpose(2, 3)  # [B, 2, frames, bins]
        features = []
        for layer in self.layers:
            x = nn.functional.leaky_relu(layer(x), 0.2)
            features.append(x)
        return self.head(x), features


class MultiScaleSTFTDiscriminator(nn.Module):
    def __init__(self, config: DiscriminatorConfig | None = None) -> None:
        super().__init__()
        config = config or DiscriminatorConfig()
        self.scales = nn.ModuleList(
            STFTDiscriminator(n_fft, config.filters, config.dilations) for n_fft in config.n_ffts
        )

    def forward(self, wav: torch.Tensor) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        return [scale(wav) for scale in self.scales]


def discriminator_hinge_loss(
    real: list[tuple[torch.Tensor, list[torch.Tensor]]],
    fake: list[tuple[torch.Tensor, list[torch.Tensor]]],
) -> torch.Tensor:
    losses = [
        nn.functional.relu(1 - r).mean() + nn.functional.relu(1 + f).mean()
        for (r, _), (f, _) in zip(real, fake, strict=True)
    ]
    return torch.stack(losses).mean()


def generator_losses(
    real: list[tuple[torch.Tensor, list[torch.Tensor]]],
    fake: list[tuple[torch.Tensor, list[torch.Tensor]]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """(hinge adversarial loss, feature matching: L1 of every feature map relative to the
    real one's mean magnitude), each averaged over scales."""
    adversarial, matching = [], []
    for (_, real_features), (fake_logits, fake_features) in zip(real, fake, strict=True):
        adversarial.append(nn.functional.relu(1 - fake_logits).mean())
        terms = [
            (f - r.detach()).abs().mean() / r.detach().abs().mean().clamp(min=1e-8)
            for r, f in zip(real_features, fake_features, strict=True)
        ]
        matching.append(torch.stack(terms).mean())
    return torch.stack(adversarial).mean(), torch.stack(matching).mean()
