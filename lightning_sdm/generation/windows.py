"""Generation longer than the training window: each new window is prompted with the last
`window - stride` frames of what exists (MusicGen's extend_stride), for any pattern."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

# (frames to return, prompt tokens [B, C, Tp] or None, window index) -> codes [B, C, frames]
# whose first Tp frames are the prompt, unchanged.
WindowGenerator = Callable[[int, torch.Tensor | None, int], torch.Tensor]


# New frames per continuation window, as a share of the window (MusicGen: 18 of 30 s).
DEFAULT_STRIDE_SHARE = 0.6


@dataclass(frozen=True)
class WindowPlan:
    window: int  # frames per call at most
    stride: int  # new frames per continuation window

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"the window must be at least one frame, got {self.window}")
        if not 0 < self.stride < self.window:
            raise ValueError(
                f"the extend stride ({self.stride} frames) must be positive and shorter than "
                f"the window ({self.window} frames): the rest is the next window's context"
            )

    @classmethod
    def continuing(cls, window: int) -> WindowPlan:
        """Windows of `window` frames, each adding the default share of new ones."""
        stride = min(max(1, round(DEFAULT_STRIDE_SHARE * window)), window - 1)
        return cls(window=window, stride=stride)

    @property
    def context(self) -> int:
        return self.window - self.stride

    def lengths(self, total: int, prompt: int = 0) -> list[tuple[int, int]]:
        """(prompt frames, frames generated) of each call, to size progress bars and to test."""
        calls, have = [], prompt
        while have < total:
            given = have if have < self.window and len(calls) == 0 else min(have, self.context)
            length = min(self.window, given + total - have)
            calls.append((given, length))
            have += length - given
        return calls


def generate_in_windows(
    generate_window: WindowGenerator,
    total: int,
    plan: WindowPlan,
    prompt: torch.Tensor | None = None,
) -> torch.Tensor:
    """Codes [B, C, total]: the prompt (kept), then windows continuing what came before."""
    if prompt is not None and prompt.shape[-1] >= total:
        raise ValueError(
            f"the prompt has {prompt.shape[-1]} frames, the request only {total}: "
            "nothing would be generated"
        )
    have = 0 if prompt is None else prompt.shape[-1]
    codes = prompt
    for index, (given, length) in enumerate(plan.lengths(total, have)):
        context = None if given == 0 or codes is None else codes[..., codes.shape[-1] - given :]
        window = generate_window(length, context, index)
        if context is not None and not torch.equal(window[..., :given], context):
            raise RuntimeError("the window generator changed its prompt tokens")
        new = window[..., given:]
        codes = new if codes is None else torch.cat([codes, new], dim=-1)
    assert codes is not None
    return codes
