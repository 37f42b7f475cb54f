"""TrainableEMA: averages only what trains, and checkpoints, resume and sampling use it."""

import lightning as L
import torch
from torch.utils.data import DataLoader

from lightning_sdm.callbacks.trainable_ema import CURRENT_KEY, TrainableEMA
from lightning_sdm.tasks.lm_task import TextToMusicTask
from tests.conftest import tiny_config

CODES = torch.randint(0, 16, (4, 4, 8), generator=torch.Generator().manual_seed(0))
BATCH = {"codes": CODES, "padding_mask": torch.ones(4, 8, dtype=torch.bool),
         "captions": ["a", "b", "c", "d"]}  # fmt: skip


def lora_task() -> TextToMusicTask:
    config = tiny_config("delay", 1)
    torch.manual_seed(0)
    return TextToMusicTask(
        lm=config.lm, text=config.text, adapter={"r": 2, "dropout": 0.0},
        optim={"lr": 0.01, "warmup_steps": 0, "weight_decay": 0.0},
    )  # fmt: skip


def fit(task, ema, root, steps, ckpt_path=None) -> L.Trainer:
    trainer = L.Trainer(
        max_steps=steps, accelerator="cpu", logger=False, default_root_dir=root,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[ema],
    )  # fmt: skip
    trainer.fit(task, DataLoader([BATCH] * 8, batch_size=None), ckpt_path=ckpt_path)
    return trainer


def test_the_average_covers_trainables_only_and_checkpoints_hold_it(tmp_path):
    task, ema = lora_task(), TrainableEMA(decay=0.5)
    fit(task, ema, tmp_path, steps=4)
    trainable = {n for n, p in task.named_parameters() if p.requires_grad}
    assert set(ema.shadow) == trainable and all(".lora_" in n for n in trainable)
    current = {n: p.detach().clone() for n, p in task.named_parameters() if p.requires_grad}
    assert any(not torch.equal(ema.shadow[n], current[n]) for n in trainable)
    (checkpoint_path,) = tmp_path.rglob("*.ckpt")
    checkpoint = torch.load(checkpoint_path, weights_only=True)
    for name in trainable:
        assert torch.equal(checkpoint["state_dict"][name], ema.shadow[name])
        assert torch.equal(checkpoint[CURRENT_KEY][name], current[name])
    # the average is swapped in and out exactly
    with ema.averaged(task):
        assert all(
            torch.equal(p, ema.shadow[n]) for n, p in task.named_parameters() if n in trainable
        )
    assert all(torch.equal(p, current[n]) for n, p in task.named_parameters() if n in trainable)
    # resuming restores both the raw weights and the average
    resumed_task, resumed_ema = lora_task(), TrainableEMA(decay=0.5)
    fit(resumed_task, resumed_ema, tmp_path / "again", steps=4, ckpt_path=checkpoint_path)
    for name, parameter in resumed_task.named_parameters():
        if name in trainable:
            assert torch.equal(parameter.detach(), current[name])
            assert torch.equal(resumed_ema.shadow[name], ema.shadow[name])
