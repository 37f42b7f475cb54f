"""The diffusion family through `lightning-sdm fit`: the staged recipe end to end on tiny
latent shards (stage 1 without text, stage 2 from its export), samples, export, load."""

from pathlib import Path

import pytest
import torch
import yaml

from lightning_sdm.cli import main
from lightning_sdm.conditioning import TextConditionerConfig
from lightning_sdm.data.latent_datamodule import LatentShardsDataModule
from lightning_sdm.demo.audio import write_demo_clips
from lightning_sdm.errors import UserInputError
from lightning_sdm.models.dit import DiTConfig
from lightning_sdm.models.text_to_audio_diffusion import (
    DiffusionSamplingConfig,
    TextToAudioDiffusion,
)
from lightning_sdm.tasks.diffusion_task import TextToAudioDiffusionTask
from tests.data.shard_fixtures import write_shards

LATENT_DIM = 16  # the default random codec's, which decodes the samples


def stage_config(tmp_path: Path, name: str, shards: Path, **model) -> Path:
    config = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu", "devices": 1, "max_steps": 6,
            "default_root_dir": str(tmp_path / name), "num_sanity_val_steps": 0,
            "enable_progress_bar": False, "log_every_n_steps": 1, "check_val_every_n_epoch": 2,
            "limit_val_batches": 1, "logger": False,
            "callbacks": [
                {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                 "init_args": {"save_last": True, "dirpath": str(tmp_path / name / "ckpt")}},
                {"class_path": "lightning_sdm.callbacks.samples.SampleGeneration",
                 "init_args": {"prompts": ["caption of item0001"], "every_n_steps": 0,
                               "seconds": 0.2, "sampling": {"steps": 3},
                               "at_validation_end": False}},
            ],
        },
        "model": {
            "class_path": "lightning_sdm.tasks.diffusion_task.TextToAudioDiffusionTask",
            "init_args": {
                "dit": {"latent_channels": LATENT_DIM, "dim": 32, "depth": 2, "num_heads": 4,
                        "ada_rank": 4, "context_dim": 32},
                "text": {"pretrained": "random"},
                "optim": {"lr": 0.003, "warmup_steps": 1},
                **model,
            },
        },
        "data": {
            "class_path": "lightning_sdm.data.latent_datamodule.LatentShardsDataModule",
            "init_args": {"train_dir": str(shards), "holdout_shards": 1, "batch_size": 4,
                          "num_workers": 0, "segment_seconds": 0.4,
                          "codec": {"pretrained": "random"}},
        },
    }  # fmt: skip
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_staged_training_exports_and_generates(tmp_path):
    shards = tmp_path / "shards"
    write_shards(shards, [30] * 16, items_per_shard=4, latent_dim=LATENT_DIM)
    stage1 = stage_config(
        tmp_path, "stage1", shards, use_text=False, masking={"full_mask_fraction": 0.0}
    )
    assert main(["fit", "--config", str(stage1)]) == 0
    samples = list((tmp_path / "stage1").glob("samples/step-*/*.wav"))
    assert samples, "the sample callback decodes the DiT's latents with the codec"
    generated = tmp_path / "from-ckpt"
    assert main(["generate", "--ckpt", str(tmp_path / "stage1/ckpt/last.ckpt"), "--prompt", "x",
                 "--seconds", "0.2", "--diffusion.steps", "2", "--no-progress",
                 "--output_dir", str(generated)]) == 0  # fmt: skip
    from_ckpt = torch.load(generated / "latents.pt")["latents"]
    assert from_ckpt.shape == (1, LATENT_DIM, 10) and bool(torch.isfinite(from_ckpt).all())
    first = tmp_path / "stage1-export"
    assert main(["export", "--ckpt", str(tmp_path / "stage1/ckpt/last.ckpt"),
                 "--output", str(first)]) == 0  # fmt: skip
    exported = TextToAudioDiffusion.from_pretrained(first)
    assert bool(exported.latent_stats_known) and exported.latent_stats[1] > 0

    stage2 = stage_config(tmp_path, "stage2", shards, init_from=str(first))
    assert main(["fit", "--config", str(stage2)]) == 0
    second = tmp_path / "stage2-export"
    assert main(["export", "--ckpt", str(tmp_path / "stage2/ckpt/last.ckpt"),
                 "--output", str(second)]) == 0  # fmt: skip
    model = TextToAudioDiffusion.from_pretrained(second)
    # stage 2 started from stage 1's weights (and its latent statistics) and moved on
    assert torch.equal(model.latent_stats, exported.latent_stats)
    assert not torch.equal(model.dit.input.weight, exported.dit.input.weight)
    latents = model.generate(["caption of item0002"], 10, sampling=DiffusionSamplingConfig(3))
    assert latents.shape == (1, LATENT_DIM, 10) and bool(torch.isfinite(latents).all())


def test_token_only_shards_say_to_tokenize_with_latents(tmp_path, capsys):
    shards = tmp_path / "shards"
    write_shards(shards, [30] * 8, items_per_shard=4)
    assert main(["fit", "--config", str(stage_config(tmp_path, "s", shards))]) == 2
    assert "tokenize it again with --latents" in capsys.readouterr().err


def test_a_stage_cannot_change_the_architecture_it_starts_from(tmp_path):
    shards = tmp_path / "shards"
    write_shards(shards, [30] * 8, items_per_shard=4, latent_dim=LATENT_DIM)
    assert main(["fit", "--config", str(stage_config(tmp_path, "a", shards))]) == 0
    main(["export", "--ckpt", str(tmp_path / "a/ckpt/last.ckpt"), "--output", str(tmp_path / "x")])
    dit = DiTConfig(latent_channels=LATENT_DIM, dim=32, depth=4, num_heads=4, ada_rank=4,
                    context_dim=32)  # fmt: skip
    with pytest.raises(UserInputError, match="init_from fixes the architecture"):
        TextToAudioDiffusionTask(dit=dit, init_from=str(tmp_path / "x"))
    # training options may change
    checkpointed = DiTConfig(latent_channels=LATENT_DIM, dim=32, depth=2, num_heads=4,
                             ada_rank=4, context_dim=32, activation_checkpointing=True)  # fmt: skip
    task = TextToAudioDiffusionTask(dit=checkpointed, init_from=str(tmp_path / "x"))
    assert task.model.config.dit.activation_checkpointing
    # the base config's text encoder path (ezaudio_l.yaml's) gives way to the export's copy
    later_stage = TextToAudioDiffusionTask(
        dit=checkpointed,
        text=TextConditionerConfig(pretrained="/models/flan-t5-large"),
        init_from=str(tmp_path / "x"),
    )
    assert later_stage.model.config.text.pretrained == str(tmp_path / "x" / "text_encoder")


def test_the_tiny_config_fits_on_the_demo_audio(tmp_path, monkeypatch):
    """configs/ezaudio_tiny.yaml as shipped, shortened: demo clips tokenized with latents
    by the demo codec, then a few DiT steps and decoded samples."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    root = Path(__file__).resolve().parents[2]
    write_demo_clips(tmp_path / "audio", 16, 6.0)
    code = main([
        "fit", "--config", str(root / "configs" / "ezaudio_tiny.yaml"),
        "--trainer.max_steps", "5", "--trainer.default_root_dir", str(tmp_path / "run"),
        "--data.train_dir", str(tmp_path / "latent_shards"),
        "--data.prepare_from", str(tmp_path / "audio"),
        "--data.codec.pretrained", str(root / "assets" / "demo_codec"),
    ])  # fmt: skip
    assert code == 0
    assert len(list((tmp_path / "run").glob("version_0/samples/step-0000005/*.wav"))) == 2


@pytest.mark.parametrize("size", ["l", "xl"])
@pytest.mark.parametrize(
    "stage", ["stage1_unlabeled", "stage2_synthetic_captions", "stage3_human_captions"]
)
def test_the_staged_recipes_compose(size, stage, capsys):
    root = Path(__file__).resolve().parents[2]
    configs = root / "configs"
    with pytest.raises(SystemExit):  # --print_config exits after printing
        base, stage_file = configs / f"ezaudio_{size}.yaml", configs / "ezaudio" / f"{stage}.yaml"
        main(["fit", "--config", str(base), "--config", str(stage_file), "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    task = printed["model"]["init_args"]
    assert task["use_text"] is (stage != "stage1_unlabeled")
    assert (task["init_from"] is None) is (stage == "stage1_unlabeled")
    assert task["masking"]["full_mask_fraction"] == (0.0 if stage == "stage1_unlabeled" else 0.75)
    assert printed["data"]["class_path"].endswith("LatentShardsDataModule")


@pytest.mark.slow
def test_two_process_cpu_fsdp_trains_the_dit_as_ddp_does(tmp_path):
    """The DiT's blocks as FSDP units, its loss entered through `training_loss`, samples
    from the gathered model."""
    from tests.test_training_cli import FSDP, assert_same_weights, fit_in_processes

    shards = tmp_path / "shards"
    write_shards(shards, [30] * 16, items_per_shard=4, latent_dim=LATENT_DIM)
    for name, strategy in (("ddp", "ddp"), ("fsdp", FSDP)):
        config = stage_config(tmp_path, name, shards)
        run = yaml.safe_load(config.read_text())
        run["trainer"].update(devices=2, strategy=strategy, max_steps=4)
        config.write_text(yaml.safe_dump(run))
        fit_in_processes(config)
    assert_same_weights(tmp_path / "ddp/ckpt/last.ckpt", tmp_path / "fsdp/ckpt/last.ckpt")
    assert list((tmp_path / "fsdp").glob("samples/step-*/*.wav"))


def test_stage_one_has_no_text_path_and_stage_two_adds_it_where_stage_one_ended(tmp_path):
    """EzAudio's stage 1 trains without text; stage 2 adds cross-attention fresh, its
    outputs at zero, so the first prediction of stage 2 is stage 1's."""
    dit = DiTConfig(latent_channels=LATENT_DIM, dim=32, depth=2, num_heads=4, ada_rank=4,
                    context_dim=32)  # fmt: skip
    text = TextConditionerConfig(pretrained="random")
    stage1 = TextToAudioDiffusionTask(dit=dit, text=text, use_text=False, latent_mean=0.0,
                                      latent_std=1.0)  # fmt: skip
    names = [name for name, _ in stage1.model.named_parameters()]
    assert not any("cross_attention" in n or "context_embed" in n for n in names)
    with_text = TextToAudioDiffusionTask(dit=dit, text=text, latent_mean=0.0, latent_std=1.0)
    assert sum(p.numel() for p in with_text.model.dit.parameters()) > sum(
        p.numel() for p in stage1.model.dit.parameters()
    )
    torch.manual_seed(1)
    for parameter in stage1.model.dit.parameters():  # stage 1 has trained: nothing at zero
        torch.nn.init.normal_(parameter, std=0.05)
    stage1.model.save_pretrained(tmp_path / "stage1")
    assert not TextToAudioDiffusion.from_pretrained(tmp_path / "stage1").config.dit.text_path

    stage2 = TextToAudioDiffusionTask(dit=dit, text=text, init_from=str(tmp_path / "stage1"))
    assert stage2.model.config.dit.text_path
    for block in stage2.model.dit.modules():
        if hasattr(block, "cross_attention") and block.cross_attention is not None:
            assert not block.cross_attention.out.weight.any()
    noisy, given = torch.randn(2, LATENT_DIM, 12), torch.randn(2, LATENT_DIM, 12)
    to_generate = torch.ones(2, 12, dtype=torch.bool)
    steps = torch.tensor([10, 500])
    before = stage1.model.eval().predict(noisy, given, to_generate, steps, ["a", "b"])
    after = stage2.model.eval().predict(noisy, given, to_generate, steps, ["a", "b"])
    assert torch.allclose(before, after, atol=1e-6)
    with pytest.raises(UserInputError, match=r"set model\.use_text: false"):
        TextToAudioDiffusionTask(dit=DiTConfig(text_path=False), text=text)


def test_latent_statistics_are_measured_over_the_training_split_not_one_batch(tmp_path):
    """Items 10x apart in scale: one batch of 4 can be far off the catalogue's statistics;
    fit standardises with those of the whole training split (the held-out shard left out)."""
    shards = tmp_path / "shards"
    gains = [1.0] * 8 + [10.0] * 8
    write_shards(shards, [20] * 16, items_per_shard=4, latent_dim=LATENT_DIM, gains=gains)
    config = stage_config(tmp_path, "stats", shards)
    assert main(["fit", "--config", str(config), "--trainer.max_steps", "1"]) == 0
    model = torch.load(tmp_path / "stats/ckpt/last.ckpt", weights_only=False)["state_dict"]
    stats = model["model.latent_stats"].double()
    data = LatentShardsDataModule(
        train_dir=str(shards), holdout_shards=1, batch_size=4, num_workers=0,
        segment_seconds=0.4,
    )  # fmt: skip
    data.setup("fit")
    total, squares, count = data.latent_moments().tolist()
    mean = total / count
    assert count == 12 * 20 * LATENT_DIM
    assert stats[0] == pytest.approx(mean, rel=1e-5)
    assert stats[1] == pytest.approx((squares / count - mean**2) ** 0.5, rel=1e-5)
