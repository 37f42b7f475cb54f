"""VGGish, the embedding network of the original Fréchet audio distance, in torch: the
architecture and 16 kHz log-mel frontend of Google's release, weights from a local state
dict (the module names match torchvggish's `vggish-10086976.pth`).

Written here because no maintained package loads it offline: the usual ones fetch weights
at run time.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch
from torch import nn

from lightning_sdm.errors import UserInputError

SAMPLE_RATE = 16000
WINDOW = 400  # 25 ms
HOP = 160  # 10 ms
FFT = 512
MEL_BANDS = 64
MEL_LOW_HZ, MEL_HIGH_HZ = 125.0, 7500.0
LOG_OFFSET = 0.01
PATCH_FRAMES = 96  # 0.96 s per embedding, patches without overlap


def _hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log1p(hz / 700.0)  # HTK, as the original


def mel_matrix() -> torch.Tensor:
    """[FFT // 2 + 1, 64] triangular HTK mel weights over 125-7500 Hz; the DC bin unused,
    as in the original frontend."""
    bins = FFT // 2 + 1
    spectrum_mel = _hz_to_mel(torch.linspace(0, SAMPLE_RATE / 2, bins, dtype=torch.float64))
    edges = torch.linspace(
        float(_hz_to_mel(torch.tensor(MEL_LOW_HZ))),
        float(_hz_to_mel(torch.tensor(MEL_HIGH_HZ))),
        MEL_BANDS + 2,
        dtype=torch.float64,
    )
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (spectrum_mel[:, None] - lower) / (center - lower)
    falling = (upper - spectrum_mel[:, None]) / (upper - center)
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)
    weights[0] = 0.0
    return weights.float()


def log_mel_patches(wav: torch.Tensor) -> torch.Tensor:
    """A 16 kHz mono clip [N] -> patches [P, 1, 96, 64] of log mel frames (P = whole 0.96 s
    patches; a clip shorter than one is zero-padded to one)."""
    wav = wav.float().reshape(-1)
    minimum = WINDOW + (PATCH_FRAMES - 1) * HOP
    if wav.numel() < minimum:
        wav = torch.nn.functional.pad(wav, (0, minimum - wav.numel()))
    frames = wav.unfold(0, WINDOW, HOP)  # [F, 400], no centring, as the original
    window = torch.hann_window(WINDOW, periodic=True)
    magnitude = torch.fft.rfft(frames * window, n=FFT).abs()  # [F, 257]
    log_mel = torch.log(magnitude @ mel_matrix() + LOG_OFFSET)  # [F, 64]
    count = log_mel.shape[0] // PATCH_FRAMES
    return log_mel[: count * PATCH_FRAMES].reshape(count, 1, PATCH_FRAMES, MEL_BANDS)


class VGGish(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        for width, convs in ((64, 1), (128, 1), (256, 2), (512, 2)):
            for _ in range(convs):
                layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
                channels = width
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(
            nn.Linear(512 * 4 * 6, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, 128), nn.ReLU(inplace=True),
        )  # fmt: skip

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """[P, 1, 96, 64] -> [P, 128]; flattened channels-last, as the TF original."""
        x = self.features(patches)  # [P, 512, 6, 4]
        return self.embeddings(x.permute(0, 2, 3, 1).flatten(1))


class VGGishEmbedder:
    """One 128-d embedding per 0.96 s of audio (the FAD paper's embeddings, before PCA)."""

    sample_rate = SAMPLE_RATE
    dim = 128

    def __init__(self, weights: str | Path) -> None:
        path = Path(weights)
        if not path.is_file():
            raise UserInputError(
                f"FAD with VGGish needs its weights as a local state dict: {path} not found "
                "(e.g. torchvggish's vggish-10086976.pth; nothing is downloaded)"
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.model = VGGish().eval()
        try:
            self.model.load_state_dict(state)
        except RuntimeError as error:
            raise UserInputError(f"{path} is not a VGGish state dict: {error}") from error
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        self.name = f"vggish: {path} (weights {digest})"

    @torch.no_grad()
    def embed(self, clips: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self.model(log_mel_patches(clip)) for clip in clips]


def patches_for(seconds: float) -> int:
    """How many embeddings a clip of `seconds` gives."""
    frames = 1 + max(0, math.floor((seconds * SAMPLE_RATE - WINDOW) / HOP))
    return max(1, frames // PATCH_FRAMES)
