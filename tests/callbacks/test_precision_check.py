"""fit warns in one line before a bf16 run on a CPU where bf16 is measured slower."""

from __future__ import annotations

import warnings

import lightning as L
import pytest
from torch import nn

import lightning_sdm.callbacks.precision_check as precision_check
from lightning_sdm.callbacks.precision_check import SlowPrecisionCheck, bf16_matmul_speedup
from lightning_sdm.nn.cached_decoding import SlowPrecisionWarning


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 2)


def check(precision: str, speedup: float, monkeypatch, stage: str = "fit") -> list[str]:
    """The SlowPrecisionWarnings setup gives when bf16 measures `speedup`x fp32."""
    monkeypatch.setattr(precision_check, "bf16_matmul_speedup", lambda: speedup)
    trainer = L.Trainer(accelerator="cpu", precision=precision, logger=False, barebones=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        SlowPrecisionCheck().setup(trainer, Tiny(), stage)
    slow = [str(w.message) for w in caught if issubclass(w.category, SlowPrecisionWarning)]
    return slow


def test_bf16_measured_slower_warns_in_one_line(monkeypatch):
    (message,) = check("bf16-mixed", 0.5, monkeypatch)
    assert "2.0x slower than fp32" in message and "precision 32-true" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("precision", "speedup", "stage"),
    [("bf16-mixed", 1.6, "fit"), ("32-true", 0.5, "fit"), ("bf16-mixed", 0.5, "validate")],
)
def test_no_warning_where_bf16_pays_or_is_not_asked(precision, speedup, stage, monkeypatch):
    assert check(precision, speedup, monkeypatch, stage) == []


def test_the_measurement_is_a_positive_ratio():
    assert bf16_matmul_speedup() > 0
