"""The LM task: loss, optimizer, schedule, EMA, checkpoints, resume, non-finite loss."""

import math

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, EMAWeightAveraging, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from lightning_sdm.callbacks.samples import SampleGeneration
from lightning_sdm.convert.export import export_checkpoint, trained_segment_frames
from lightning_sdm.data.datamodule import TokenShardsDataModule
from lightning_sdm.errors import UserInputError
from lightning_sdm.models.lm import LMConfig
from lightning_sdm.models.text_to_music import TextToMusicLM
from lightning_sdm.tasks import lm_task
from lightning_sdm.tasks.lm_task import (
    NonFiniteLossError,
    TextToMusicTask,
    masked_level_cross_entropy,
    masked_level_mean,
)
from lightning_sdm.tasks.optim import OptimConfig, build_optimizer, parameter_groups, warmup_cosine
from lightning_sdm.tasks.text_conditioned import caption_dropout_generator
from tests.conftest import ALL_PATTERNS
from tests.data.shard_fixtures import write_shards

TINY_LM = {"dim": 32, "num_layers": 2, "num_heads": 4, "ffn_dim": 64}


def tiny_task(pattern="stack_delay", interleave=3, **optim) -> TextToMusicTask:
    torch.manual_seed(0)
    lm = LMConfig(**TINY_LM, pattern=pattern, interleave=interleave)
    return TextToMusicTask(lm=lm, optim=OptimConfig(**{"lr": 3e-3, "warmup_steps": 2, **optim}))


def tiny_data(tmp_path, items=24) -> TokenShardsDataModule:
    write_shards(tmp_path / "shards", frames_per_item=[30] * items, items_per_shard=4)
    return TokenShardsDataModule(
        str(tmp_path / "shards"), batch_size=4, num_workers=0, segment_seconds=0.4, holdout_shards=1
    )


def trainer(tmp_path, max_steps, callbacks=(), **kwargs) -> L.Trainer:
    settings = {
        "accelerator": "cpu",
        "max_steps": max_steps,
        "default_root_dir": str(tmp_path),
        "logger": CSVLogger(str(tmp_path), name="logs"),
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "limit_val_batches": 1,
        "callbacks": list(callbacks),
        **kwargs,
    }
    return L.Trainer(**settings)


@pytest.mark.parametrize(("name", "k"), ALL_PATTERNS)
def test_a_few_optimisation_steps_lower_the_loss(name, k):
    task = tiny_task(name, k)
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 2048, (4, 4, 12), generator=generator)
    mask = torch.ones(4, 12, dtype=torch.bool)
    texts = ["a", "b", "c", "d"]
    optimizer, schedule = build_optimizer(task.model, task.optim_config, total_steps=20)
    losses = []
    for _ in range(12):
        loss, _ = masked_level_cross_entropy(task.model(codes, texts), codes, mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5


def test_loss_ignores_padded_frames_and_averages_levels():
    logits = torch.zeros(1, 2, 3, 5)
    logits[0, 0, :, 1] = 10.0  # level 0 predicts token 1 confidently
    codes = torch.tensor([[[1, 1, 4], [0, 0, 0]]])
    mask = torch.tensor([[True, True, False]])  # the wrong level-0 token is padding
    loss, per_level = masked_level_cross_entropy(logits, codes, mask)
    assert per_level[0] < 1e-3
    assert per_level[1] == pytest.approx(math.log(5), rel=1e-5)
    assert loss == pytest.approx((per_level[0] + per_level[1]).item() / 2, rel=1e-5)


def test_no_weight_decay_on_norms_biases_and_embeddings():
    task = tiny_task()
    decay, no_decay = parameter_groups(task.model, weight_decay=0.1)
    names = {id(p): n for n, p in task.model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert "lm.head_weight" in decayed
    assert not any("norm" in n or n.endswith("bias") or "embedding" in n for n in decayed)
    assert not any("conditioner.encoder" in n for n in decayed)  # frozen T5 is not optimised
    frozen = sum(1 for p in task.model.parameters() if not p.requires_grad)
    assert len(decay["params"]) + len(no_decay["params"]) + frozen == len(
        list(task.model.parameters())
    )


def test_warmup_then_cosine():
    assert warmup_cosine(0, 4, 20, 0.0) == pytest.approx(0.25)
    assert warmup_cosine(3, 4, 20, 0.0) == pytest.approx(1.0)
    assert warmup_cosine(12, 4, 20, 0.0) == pytest.approx(0.5)
    assert warmup_cosine(20, 4, 20, 0.1) == pytest.approx(0.1)


def test_paper_optimizer_defaults():
    config = OptimConfig()
    assert (
        config.betas == (0.9, 0.95) and config.weight_decay == 0.1 and config.warmup_steps == 4000
    )


class RecordOptimizerAtStart(Callback):
    def on_train_start(self, trainer, pl_module):
        self.step = trainer.global_step
        self.state = {k: {n: v.clone() for n, v in s.items() if torch.is_tensor(v)}
                      for k, s in trainer.optimizers[0].state_dict()["state"].items()}  # fmt: skip


def test_fit_checkpoint_resume_continues_with_the_same_state(tmp_path):
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=4)
    first = trainer(tmp_path, 4, [EMAWeightAveraging(decay=0.9), checkpoints])
    first.fit(tiny_task(), datamodule=tiny_data(tmp_path))
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == 4
    saved_state = saved["optimizer_states"][0]["state"]

    recorder = RecordOptimizerAtStart()
    second = trainer(tmp_path, 7, [EMAWeightAveraging(decay=0.9), recorder])
    second.fit(
        tiny_task(), datamodule=tiny_data(tmp_path), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"),
        weights_only=True,
    )  # fmt: skip
    assert recorder.step == 4 and second.global_step == 7
    for index, tensors in recorder.state.items():
        for name, value in tensors.items():
            assert torch.equal(value, saved_state[index][name])


def test_ema_weights_are_what_validation_samples_and_export_use(tmp_path, monkeypatch):
    ema = EMAWeightAveraging(decay=0.5)
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=3)
    seen = {}

    class CheckValidationWeights(Callback):
        def on_validation_start(self, trainer, pl_module):
            seen["average"] = ema._average_model.module.model.lm.head_weight.detach().clone()
            seen["raw"] = pl_module.model.lm.head_weight.detach().clone()

        def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
            seen["validation"] = pl_module.model.lm.head_weight.detach().clone()

    original_generate = TextToMusicLM.generate

    def spy_generate(self, *args, **kwargs):
        seen["sampling"] = self.lm.head_weight.detach().clone()
        return original_generate(self, *args, **kwargs)

    monkeypatch.setattr(TextToMusicLM, "generate", spy_generate)
    samples = SampleGeneration(["caption of item0001"], every_n_steps=0, seconds=0.1)
    # The sample callback comes first on purpose: it must not depend on callback order.
    callbacks = [samples, CheckValidationWeights(), ema, checkpoints]
    trainer(tmp_path, 3, callbacks, val_check_interval=3).fit(
        tiny_task(), datamodule=tiny_data(tmp_path)
    )
    assert not torch.equal(seen["average"], seen["raw"])
    assert torch.equal(seen["validation"], seen["average"])
    assert torch.equal(seen["sampling"], seen["average"])
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    raw = saved["current_model_state"]["model.lm.head_weight"]  # kept for resuming
    averaged = saved["state_dict"]["model.lm.head_weight"]
    assert not torch.equal(raw, averaged)
    exported = TextToMusicLM.from_pretrained(
        export_checkpoint(tmp_path / "ckpt" / "last.ckpt", tmp_path / "export")
    )
    assert torch.equal(exported.lm.head_weight, averaged)
    assert exported.generate(["caption of item0001"], 5, seed=0).shape == (1, 4, 5)


def test_non_finite_loss_stops_with_a_message_and_a_checkpoint_from_before(tmp_path, monkeypatch):
    real_loss = lm_task.masked_level_mean
    calls = {"n": 0}

    def loss_that_explodes_on_the_fourth_step(per_token, mask):
        loss, per_level = real_loss(per_token, mask)
        calls["n"] += 1
        return (loss * float("nan"), per_level) if calls["n"] == 4 else (loss, per_level)

    monkeypatch.setattr(lm_task, "masked_level_mean", loss_that_explodes_on_the_fourth_step)
    weights = {}

    class RememberWeights(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            weights["before"] = pl_module.model.lm.head_weight.detach().clone()

    task = tiny_task()
    with pytest.raises(NonFiniteLossError, match="at step 3; stopped"):
        trainer(tmp_path, 10, [RememberWeights()]).fit(task, datamodule=tiny_data(tmp_path))
    path = tmp_path / "logs" / "version_0" / "checkpoints" / "nonfinite-before-step3.ckpt"
    saved = torch.load(path, map_location="cpu", weights_only=True)
    assert saved["global_step"] == 3
    assert torch.equal(saved["state_dict"]["model.lm.head_weight"], weights["before"])
    assert all(
        torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point()
    )


def test_data_and_model_level_counts_must_agree_before_training(tmp_path):
    task = TextToMusicTask(lm=LMConfig(**TINY_LM, num_levels=2))
    started = []

    class NoticeStart(Callback):
        def on_train_start(self, trainer, pl_module):
            started.append(True)

    with pytest.raises(UserInputError, match="shards hold 4 codebooks of 2048 codes, but"):
        trainer(tmp_path, 1, [NoticeStart()]).fit(task, datamodule=tiny_data(tmp_path))
    assert not started


def test_a_batch_that_does_not_fit_the_model_is_refused():
    task = TextToMusicTask(lm=LMConfig(**TINY_LM, num_levels=2))
    codes = torch.zeros(1, 4, 6, dtype=torch.long)
    batch = {"codes": codes, "padding_mask": torch.ones(1, 6, dtype=torch.bool)}
    with pytest.raises(ValueError, match="the data has 4 codebooks, the model expects 2"):
        task._loss(batch, ["x"])


def test_checkpoints_and_exports_record_the_training_crop_length(tmp_path):
    task = tiny_task()
    trainer(tmp_path, 2).fit(task, datamodule=tiny_data(tmp_path))
    checkpoint = next(tmp_path.rglob("*.ckpt"))
    assert torch.load(checkpoint, weights_only=True)["trained_segment_frames"] == 20
    export_checkpoint(checkpoint, tmp_path / "model")
    assert trained_segment_frames(tmp_path / "model") == 20


def test_hyperparameters_are_plain_data_and_rebuild_the_task():
    task = tiny_task("delay", 1)
    rebuilt = TextToMusicTask(**task.hparams)
    assert rebuilt.model.config == task.model.config
    assert isinstance(task.hparams["lm"], dict)


def test_bf16_mixed_precision_through_the_trainer(tmp_path):
    losses = []

    class RecordLoss(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    fit = trainer(tmp_path, 3, [RecordLoss()], precision="bf16-mixed", limit_val_batches=0)
    fit.fit(tiny_task(), datamodule=tiny_data(tmp_path))
    assert fit.global_step == 3 and all(math.isfinite(loss) for loss in losses)


def test_caption_dropout_differs_between_ranks():
    conditioner = tiny_task().model.conditioner
    captions = [f"caption {i}" for i in range(200)]
    dropped = []
    for rank in (0, 1):
        torch.manual_seed(0)  # what seed_everything does on every rank
        dropped.append(conditioner.cfg_dropout(captions, caption_dropout_generator(rank)))
    assert dropped[0] != dropped[1]


def test_the_optimizer_is_fused_adamw_on_cpu_and_steps_as_the_default_path_does():
    task = tiny_task()
    fused, _ = build_optimizer(task.model, task.optim_config, total_steps=20)
    assert fused.defaults["fused"] is True
    reference_task = tiny_task()
    reference_task.load_state_dict(task.state_dict())
    plain, _ = build_optimizer(reference_task.model, task.optim_config, 20, fused=False)
    assert not plain.defaults["fused"]
    codes = torch.randint(0, 2048, (2, 4, 6), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 6, dtype=torch.bool)
    for model, optimizer in ((task.model, fused), (reference_task.model, plain)):
        for _ in range(3):
            loss, _ = masked_level_mean(model.token_losses(codes, ["a", "b"]), mask)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    for a, b in zip(task.model.parameters(), reference_task.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_clipping_under_mixed_precision_takes_the_optimizer_lightning_can_clip(tmp_path):
    """Lightning refuses to clip gradients of a fused optimizer under mixed precision."""
    task = tiny_task()
    run = trainer(tmp_path, max_steps=2, precision="bf16-mixed", gradient_clip_val=1.0)
    run.fit(task, datamodule=tiny_data(tmp_path))
    assert run.global_step == 2
    assert not run.optimizers[0].defaults["fused"]


def test_a_fused_runs_checkpoint_resumes_with_clipping_under_mixed_precision(tmp_path):
    data = tiny_data(tmp_path)
    first = trainer(tmp_path, max_steps=2, callbacks=[ModelCheckpoint(dirpath=tmp_path / "c")])
    first.fit(tiny_task(), datamodule=data)
    assert first.optimizers[0].defaults["fused"] is True
    checkpoint = next((tmp_path / "c").glob("*.ckpt"))
    resumed = trainer(tmp_path, max_steps=4, precision="bf16-mixed", gradient_clip_val=1.0)
    resumed.fit(tiny_task(), datamodule=data, ckpt_path=str(checkpoint))
    assert resumed.global_step == 4
    assert not any(group["fused"] for group in resumed.optimizers[0].param_groups)
