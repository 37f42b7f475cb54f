"""The EMA callbacks ramp their decay up: a short run's average is its recent weights, not
its starting ones, and a resumed run averages as an uninterrupted one."""

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from lightning_sdm.callbacks.ema import WarmupEMA, warmed_decay
from lightning_sdm.callbacks.trainable_ema import TrainableEMA


class Drift(L.LightningModule):
    """One weight that SGD moves by 0.01 a step (a constant gradient): 0 -> 0.01 x steps."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))

    def training_step(self, batch, batch_idx):
        return -self.weight

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit(callback, steps: int, root, ckpt_path=None) -> Drift:
    module = Drift()
    trainer = L.Trainer(
        max_steps=steps, accelerator="cpu", logger=False, default_root_dir=root,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[callback],
    )  # fmt: skip
    trainer.fit(module, DataLoader([0] * 1000, batch_size=None), ckpt_path=ckpt_path)
    return module


def test_the_decay_ramps_up_to_the_one_asked_for():
    assert warmed_decay(0.999, 0) == pytest.approx(0.1)
    assert warmed_decay(0.999, 90) == pytest.approx(0.91)
    assert warmed_decay(0.999, 10**6) == 0.999
    assert warmed_decay(0.5, 3) == pytest.approx(4 / 13) and warmed_decay(0.5, 10) == 0.5


@pytest.mark.parametrize("kind", ["whole", "trainable"])
def test_a_short_run_exports_where_it_went_not_where_it_started(tmp_path, kind):
    """200 steps at decay 0.999: a fixed decay kept the average at 10 % of the way the
    weight moved (the recipes' 1000-step fine-tunes at 37 %); ramped, 90 %."""
    make = {"whole": WarmupEMA, "trainable": TrainableEMA}[kind]
    moved = {}
    for warmup in (False, True):
        module = fit(make(decay=0.999, warmup=warmup), 200, tmp_path / str(warmup))
        # after training, the module holds the average (whole) or the callback does
        callback = module.trainer.callbacks[0]
        average = module.weight if kind == "whole" else callback.shadow["weight"]
        moved[warmup] = float(average) / 2.0  # the weight itself ended at 0.01 x 200
    assert moved[False] < 0.11 and moved[True] > 0.85


@pytest.mark.parametrize("kind", ["whole", "trainable"])
def test_a_resumed_run_averages_as_an_uninterrupted_one(tmp_path, kind):
    make = {"whole": WarmupEMA, "trainable": TrainableEMA}[kind]

    def average(module):
        callback = module.trainer.callbacks[0]
        return float(module.weight if kind == "whole" else callback.shadow["weight"])

    whole = average(fit(make(decay=0.99), 30, tmp_path / "whole"))
    first = make(decay=0.99)
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    module = Drift()
    trainer = L.Trainer(
        max_steps=12, accelerator="cpu", logger=False, default_root_dir=tmp_path,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[first, checkpoint],
    )  # fmt: skip
    trainer.fit(module, DataLoader([0] * 1000, batch_size=None))
    resumed = fit(make(decay=0.99), 30, tmp_path / "resumed", tmp_path / "ckpt" / "last.ckpt")
    assert average(resumed) == pytest.approx(whole, rel=1e-5)


def test_the_trainable_average_is_updated_once_per_optimizer_step(tmp_path):
    """With gradient accumulation the batch hook runs per micro-batch: averaging the same
    weights 4 times a step made a 0.999 decay act as 0.996 (the LoRA recipes accumulate 8)."""
    ema = TrainableEMA(decay=0.999)
    trainer = L.Trainer(
        max_steps=10, accelerator="cpu", logger=False, default_root_dir=tmp_path,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[ema],
        accumulate_grad_batches=4, enable_checkpointing=False,
    )  # fmt: skip
    trainer.fit(Drift(), DataLoader([0] * 1000, batch_size=None))
    assert trainer.global_step == 10 and ema.updates == 10
