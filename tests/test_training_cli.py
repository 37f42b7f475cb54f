"""`lightning-sdm fit` end to end: configs, tracking, sample callback, DDP, the demo."""

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from lightning_sdm.cli import main
from lightning_sdm.codecs import CodecConfig, load_codec, save_random_codec
from lightning_sdm.codecs.encodec import RANDOM_CODEC_FILE
from lightning_sdm.models.text_to_music import TextToMusicLM
from lightning_sdm.runs.plots import read_metrics, steps_done
from tests.data.audio_fixtures import make_folder
from tests.data.shard_fixtures import write_shards

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(tmp_path: Path, codec: Path | None = None, **trainer) -> Path:
    """A tiny fit on synthetic shards, of no codec or (`codec`) as if that codec made them."""
    identity = {} if codec is None else {"codec": load_codec(CodecConfig(str(codec))).identity()}
    write_shards(tmp_path / "shards", frames_per_item=[30] * 24, items_per_shard=4, **identity)
    config = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "max_steps": 4,
            "default_root_dir": str(tmp_path / "run"),
            "num_sanity_val_steps": 0,
            "enable_progress_bar": False,
            "log_every_n_steps": 1,
            "val_check_interval": 4,
            "limit_val_batches": 1,
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.EMAWeightAveraging",
                    "init_args": {"decay": 0.99},
                },
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {"save_last": True, "every_n_train_steps": 2},
                },
                {
                    "class_path": "lightning_sdm.callbacks.samples.SampleGeneration",
                    "init_args": {
                        "prompts": ["caption of item0001"],
                        "every_n_steps": 2,
                        "seconds": 0.2,
                    },
                },
            ],
            **trainer,
        },
        "model": {
            "lm": {"dim": 32, "num_layers": 1, "num_heads": 4, "ffn_dim": 64, "interleave": 3},
            "text": {"pretrained": "random"},
            "optim": {"lr": 0.003, "warmup_steps": 1},
        },
        "data": {
            "train_dir": str(tmp_path / "shards"),
            # the synthetic shards' codec: none, or the one named
            "codec": {"pretrained": "random" if codec is None else str(codec)},
            "holdout_shards": 1,
            "batch_size": 4,
            "num_workers": 0,
            "segment_seconds": 0.4,
        },
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_print_config_shows_the_composed_configuration(capsys):
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(ROOT / "configs" / "demo.yaml"), "--print_config"])
    assert done.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"] == "lightning_sdm.tasks.lm_task.TextToMusicTask"
    assert printed["model"]["init_args"]["lm"]["pattern"] == "stack_delay"
    assert printed["data"]["init_args"]["max_shard_items"] == 16
    assert printed["model"]["init_args"]["text"]["pretrained"] == "random"


@pytest.mark.parametrize("name", ["delay", "flat", "stack", "stack_delay"])
def test_paper_recipes_compose_and_state_the_batch(name, capsys):
    configs = [
        ROOT / "configs" / "paper" / "base.yaml",
        ROOT / "configs" / "paper" / f"{name}.yaml",
    ]
    argv = ["fit", *(a for c in configs for a in ("--config", str(c))), "--print_config"]
    with pytest.raises(SystemExit):
        main(argv)
    printed = yaml.safe_load(capsys.readouterr().out)
    lm = printed["model"]["init_args"]["lm"]
    assert (lm["dim"], lm["num_layers"], lm["num_heads"]) == (1024, 24, 16)
    assert lm["pattern"] == name and (name != "stack_delay" or lm["interleave"] == 3)
    trainer = printed["trainer"]
    assert trainer["precision"] == "16-mixed" and trainer["max_steps"] == 400_000
    data = printed["data"]["init_args"]
    assert data["batch_size"] * trainer["devices"] * trainer["num_nodes"] == 192
    assert data["segment_seconds"] == 30.0


@pytest.mark.parametrize(
    ("name", "adapter"),
    [
        ("musicgen_small_lora", True),
        ("musicgen_medium_lora", True),
        ("full_small_1gpu", False),
        ("full_medium_fsdp_4gpu", False),
    ],
)
def test_finetune_recipes_compose_and_state_their_batch(name, adapter, capsys):
    path = ROOT / "configs" / "finetune" / f"{name}.yaml"
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(path), "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    model = printed["model"]["init_args"]
    assert model["init_from"].startswith("models/musicgen-")
    assert (model["adapter"] is not None) == adapter
    assert model["lm"]["activation_checkpointing"] is True
    trainer, data = printed["trainer"], printed["data"]["init_args"]
    assert trainer["precision"] == "bf16-mixed"
    stated = re.search(
        r"Effective batch: (\d+) crops? x (\d+) accumulated(?: x (\d+) GPUs)? = (\d+)",
        path.read_text(),
    )
    per_step, accumulated, gpus, effective = (int(n) if n else 1 for n in stated.groups())
    assert (data["batch_size"], trainer["accumulate_grad_batches"]) == (per_step, accumulated)
    assert trainer["devices"] == gpus and per_step * accumulated * gpus == effective
    if gpus > 1:
        assert trainer["strategy"]["init_args"]["data_parallel_size"] == gpus
    assert "GB" in path.read_text().split("seed_everything")[0]


def test_fit_writes_samples_wandb_files_and_an_exportable_checkpoint(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    main(["fit", "--config", str(tiny_config(tmp_path))])
    run = tmp_path / "run" / "version_0"
    wavs = sorted(run.glob("samples/step-*/*.wav"))
    assert {w.parent.name for w in wavs} >= {"step-0000002", "step-0000004"}
    assert sorted(run.glob("samples/step-*/*.png"))
    assert list(run.glob("wandb/offline-run-*/run-*.wandb"))
    out = capsys.readouterr().out
    assert "Run finished" in out and "samples:" in out
    last = run / "checkpoints" / "last.ckpt"
    assert main(["export", "--ckpt", str(last), "--output", str(tmp_path / "model")]) == 0
    model = TextToMusicLM.from_pretrained(tmp_path / "model")
    assert model.generate(["caption of item0003"], 6, seed=0).shape == (1, 4, 6)
    # generate reads the checkpoint directly: the same (EMA) weights as the export
    common = ["generate", "--prompt", "caption of item0003", "--timesteps", "6", "--no-progress"]
    assert main([*common, "--ckpt", str(last), "--output_dir", str(tmp_path / "a")]) == 0
    assert (
        main([*common, "--model", str(tmp_path / "model"), "--output_dir", str(tmp_path / "b")])
        == 0
    )
    from_ckpt, from_dir = (torch.load(tmp_path / d / "codes.pt")["codes"] for d in "ab")
    assert torch.equal(from_ckpt, from_dir)
    sidecar = json.loads((tmp_path / "a" / "00-caption-of-item0003.json").read_text())
    assert sidecar["model"]["global_step"] == 4 and sidecar["model"]["ema_weights"] is True

    # export onto an existing model: refused; with --overwrite replaced whole (no old codec/)
    codec = save_random_codec(tmp_path / "codec", seed=0)
    again = ["export", "--ckpt", str(last), "--output", str(tmp_path / "model")]
    assert main([*again, "--codec_dir", str(codec)]) == 2
    assert "already holds files" in capsys.readouterr().err
    assert main([*again, "--codec_dir", str(codec), "--overwrite"]) == 0
    assert (tmp_path / "model" / "codec").is_dir()
    assert main([*again, "--overwrite"]) == 0
    assert not (tmp_path / "model" / "codec").exists()  # nothing of the old export stays
    assert TextToMusicLM.from_pretrained(tmp_path / "model").config == model.config
    # empty, torn or foreign checkpoints: one line each
    for content in (b"", b"PK\x03\x04torn"):
        bad = tmp_path / "bad.ckpt"
        bad.write_bytes(content)
        assert main(["export", "--ckpt", str(bad), "--output", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: checkpoint") and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "x").exists()


def test_offline_wandb_runs_still_write_a_readable_csv_and_plot(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    main(["fit", "--config", str(tiny_config(tmp_path))])
    run = tmp_path / "run" / "version_0"
    assert list(run.glob("wandb/offline-run-*"))
    metrics = (run / "metrics.csv").read_text()
    assert "train/ce" in metrics and "val/ce" in metrics
    assert (run / "metrics.png").stat().st_size > 10_000
    # The plot counts steps as the log, checkpoints and samples do (4 steps, validated after
    # the 4th), not as Lightning's logger records them (the batch index: 3).
    series = steps_done(read_metrics(run / "metrics.csv"))
    assert series["train/ce"][0][0] == 1 and series["train/ce"][-1][0] == 4
    assert [step for step, _ in series["val/ce"]] == [4]
    redrawn = tmp_path / "again.png"
    assert main(["plot", str(run), "--output", str(redrawn)]) == 0
    assert redrawn.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_csv_logger_when_wandb_is_disabled(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    main(["fit", "--config", str(tiny_config(tmp_path)), "--trainer.max_steps", "2"])
    run = tmp_path / "run" / "version_0"
    assert not (run / "wandb").exists()
    metrics = (run / "metrics.csv").read_text()
    for name in ("train/ce", "train/ce_q3", "train/ppl", "train/grad_norm", "train/lr"):
        assert name in metrics
    assert "train/tokens_per_s" in metrics


@pytest.mark.parametrize(("steps", "every"), [(5, 2), (3, 10)])
def test_a_run_ending_between_periodic_checkpoints_saves_its_final_step(
    tmp_path, monkeypatch, steps, every
):
    """every_n_train_steps 2 and max_steps 5: last.ckpt once held step 4, and a resume
    trained step 5 again on weights that had lost it. Before any periodic save (3 of 10),
    Lightning's own final save held the EMA average as the trained weights."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    config = yaml.safe_load(tiny_config(tmp_path).read_text())
    for callback in config["trainer"]["callbacks"]:
        if callback["class_path"].endswith("ModelCheckpoint"):
            callback["init_args"]["every_n_train_steps"] = every
    (tmp_path / "fit.yaml").write_text(yaml.safe_dump(config))
    argv = ["fit", "--config", str(tmp_path / "fit.yaml"), "--trainer.max_steps", str(steps)]
    assert main(argv) == 0
    last = tmp_path / "run" / "version_0" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == steps
    # saved before EMA copies its average over the trained weights: a resume trains on them
    raw, averaged = checkpoint["current_model_state"], checkpoint["state_dict"]
    assert not torch.equal(raw["model.lm.token_embedding"], averaged["model.lm.token_embedding"])


def test_a_resume_refuses_another_architecture_and_takes_new_training_options(
    tmp_path, monkeypatch, capsys
):
    """Lightning put the checkpoint's model options over the given ones: a changed pattern
    was silently ignored for a file path, and used on the old weights for `last`."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    fit = ["fit", "--config", str(tiny_config(tmp_path))]
    assert main([*fit, "--trainer.max_steps", "2"]) == 0
    last = tmp_path / "run" / "version_0" / "checkpoints" / "last.ckpt"
    for where in (str(last), "last"):
        resumed = [*fit, "--ckpt_path", where, "--trainer.max_steps", "3"]
        assert main([*resumed, "--model.lm.interleave", "1"]) == 2
        said = capsys.readouterr().err
        assert "model.lm.interleave 1 (checkpoint: 3)" in said and "model.init_from" in said
    assert main([*resumed, "--model.lm.dropout", "0.2"]) == 0
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 3 and checkpoint["hyper_parameters"]["lm"]["dropout"] == 0.2


def test_trainer_hardware_this_machine_cannot_run_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    fit = ["fit", "--config", str(tiny_config(tmp_path))]
    assert main([*fit, "--trainer.devices", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: trainer (accelerator 'cpu', devices '0'")


def test_a_missing_weights_folder_in_a_fit_config_is_one_line(tmp_path, monkeypatch, capsys):
    """The paper's config on a machine without /models/t5-base ended in a traceback: the
    FileNotFoundError came out of a class LightningCLI builds, which only passes ours on."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    fit = ["fit", "--config", str(tiny_config(tmp_path))]
    assert main([*fit, "--model.text.pretrained", str(tmp_path / "t5-base")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: T5 directory {tmp_path / 't5-base'}")


def test_every_fresh_fit_gets_its_own_run_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    config = str(tiny_config(tmp_path))
    main(["fit", "--config", config, "--trainer.max_steps", "2"])
    main(["fit", "--config", config, "--trainer.max_steps", "2"])
    runs = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert runs == ["version_0", "version_1"]
    assert list((tmp_path / "run" / "version_1" / "samples").glob("step-*/*.wav"))


def test_a_model_decodes_with_the_codec_of_its_shards_and_no_other(tmp_path, monkeypatch, capsys):
    """Another codec of the same shape (a retrained EnCodec, a VAE of the same size) decoded
    a model's tokens to noise without a word: generate, export, init_from and resume now
    name the codec the training shards were tokenized with."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    trained_on = save_random_codec(tmp_path / "codec_a", seed=0)
    other = save_random_codec(tmp_path / "codec_b", seed=1)
    for codec in (trained_on, other):  # as two trained codecs: not refused as random ones
        (codec / RANDOM_CODEC_FILE).unlink()
    fit = ["fit", "--config", str(tiny_config(tmp_path, codec=trained_on))]
    assert main([*fit, "--trainer.max_steps", "2"]) == 0
    last = tmp_path / "run" / "version_0" / "checkpoints" / "last.ckpt"
    common = ["--prompt", "caption of item0003", "--timesteps", "4", "--no-progress"]
    capsys.readouterr()
    generate = ["generate", "--ckpt", str(last), *common]
    assert main([*generate, "--codec_dir", str(other), "--output_dir", str(tmp_path / "x")]) == 2
    said = capsys.readouterr().err
    assert (
        f"was trained on the tokens of {trained_on}" in said and f"--codec_dir is {other}" in said
    )
    assert main([*generate, "--output_dir", str(tmp_path / "a")]) == 0  # the run's own codec
    assert (tmp_path / "a" / "00-caption-of-item0003.wav").is_file()
    export = ["export", "--ckpt", str(last), "--output", str(tmp_path / "model")]
    assert main([*export, "--codec_dir", str(other)]) == 2
    assert "use the codec it was trained with" in capsys.readouterr().err
    assert main([*export, "--codec_dir", str(trained_on)]) == 0
    capsys.readouterr()
    # without --codec_dir the export carries the codec the run trained with, and says so
    assert main(["export", "--ckpt", str(last), "--output", str(tmp_path / "own")]) == 0
    assert "(the one the run trained with)" in capsys.readouterr().out
    assert (tmp_path / "own" / "codec" / "config.json").is_file()
    generate = ["generate", "--model", str(tmp_path / "model"), *common]
    assert main([*generate, "--codec_dir", str(other), "--output_dir", str(tmp_path / "y")]) == 2
    # a new run from the export, or the run resumed, on shards of the other codec
    other_shards = tmp_path / "other_shards"
    write_shards(other_shards, [30] * 24, 4, codec=load_codec(CodecConfig(str(other))).identity())
    elsewhere = ["--data.train_dir", str(other_shards), "--data.codec.pretrained", str(other)]
    capsys.readouterr()
    assert main([*fit, *elsewhere, "--model.init_from", str(tmp_path / "model")]) == 2
    assert "the codec of the training shards is" in capsys.readouterr().err
    assert main([*fit, *elsewhere, "--ckpt_path", str(last), "--trainer.max_steps", "3"]) == 2
    assert "this run's checkpoint was trained on the tokens of" in capsys.readouterr().err


def test_ckpt_path_last_resumes_the_run_in_its_own_folder(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.chdir(tmp_path)  # a relative root, as in the configs
    config = str(tiny_config(tmp_path, default_root_dir="run"))
    main(["fit", "--config", config])
    run = Path("run") / "version_0"
    first_sample = next(run.glob("samples/step-0000002/*.wav"))
    first_bytes, wandb_id = first_sample.read_bytes(), (run / "wandb_run_id").read_text()

    main(["fit", "--config", config, "--ckpt_path", "last", "--trainer.max_steps", "6"])
    assert f"resuming {run} from {run / 'checkpoints' / 'last.ckpt'}" in caplog.text
    assert sorted(p.name for p in Path("run").iterdir()) == ["version_0"]
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 6
    assert not list(run.glob("checkpoints/last-v*.ckpt"))  # the same last.ckpt, updated
    assert (run / "wandb_run_id").read_text() == wandb_id
    assert len(list(run.glob("wandb/offline-run-*"))) == 2  # both sessions, one run id
    assert first_sample.read_bytes() == first_bytes
    assert (run / "samples" / "step-0000006").is_dir()
    steps = [int(row.split(",")[0]) for row in _metric_rows(run, "train/ce")]
    assert min(steps) < 4 <= max(steps)  # one CSV holding both sessions


def _metric_rows(run: Path, name: str) -> list[str]:
    lines = (run / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    column, step = header.index(name), header.index("step")
    rows = [line.split(",") for line in lines[1:]]
    return [f"{r[step]},{r[column]}" for r in rows if r[column]]


def test_ckpt_path_last_without_any_run_starts_a_new_one(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    config = str(tiny_config(tmp_path))
    main(["fit", "--config", config, "--ckpt_path", "last", "--trainer.max_steps", "2"])
    assert "no last checkpoint under" in caplog.text
    assert (tmp_path / "run" / "version_0" / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize(
    ("typo", "suggestion"),
    [
        (["--trainer.max_step", "4"], "--trainer.max_steps"),
        (["--data.batch_sise", "4"], "--data.batch_size"),
    ],
)
def test_an_option_typo_is_an_error_first_with_a_suggestion(tmp_path, capsys, typo, suggestion):
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(tiny_config(tmp_path)), *typo])
    assert done.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error:") and len(err) <= 4
    assert f"did you mean {suggestion}?" in err
    assert not (tmp_path / "run").exists()


def test_a_typo_in_the_yaml_names_the_key_and_suggests_the_right_one(tmp_path, capsys):
    config = tiny_config(tmp_path)
    loaded = yaml.safe_load(config.read_text())
    loaded["data"]["holdout_shard"] = loaded["data"].pop("holdout_shards")
    config.write_text(yaml.safe_dump(loaded))
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(config)])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "holdout_shard" in err
    assert "did you mean --data.holdout_shards?" in err


def test_a_refusal_while_the_task_is_built_is_one_line(tmp_path, capsys):
    """init_from's own error, not jsonargparse's account of every model class it tried."""
    from tests.conftest import tiny_model

    tiny_model("delay", 1).save_pretrained(tmp_path / "base")
    config = tiny_config(tmp_path)
    capsys.readouterr()
    argv = ["--model.init_from", str(tmp_path / "base"), "--model.lm.num_layers", "5"]
    assert main(["fit", "--config", str(config), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: model.lm.num_layers = 5 differs from {tmp_path / 'base'}'s 2: init_from "
        "fixes the architecture (remove the option, or train from scratch)"
    ]


def fit_in_processes(config: Path) -> None:
    """`lightning-sdm fit --config CONFIG` in a subprocess (Lightning starts the other ranks
    by running the same command again)."""
    environment = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "lightning_sdm", "fit", "--config", str(config)],
        capture_output=True, text=True, timeout=600, env=environment, cwd=config.parent,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]


def two_process_fit(tmp_path: Path, strategy: str | dict) -> Path:
    """Fit the tiny config on two CPU processes; the run's directory."""
    config = tiny_config(
        tmp_path, strategy=strategy, devices=2, val_check_interval=None
    )  # each rank's epoch is half as long, so validate once per epoch
    run = yaml.safe_load(config.read_text())
    run["trainer"]["callbacks"] = run["trainer"]["callbacks"][1:]  # no whole-model EMA
    config.write_text(yaml.safe_dump(run))
    fit_in_processes(config)
    return tmp_path / "run" / "version_0"


FSDP = {
    "class_path": "lightning.pytorch.strategies.ModelParallelStrategy",
    "init_args": {
        "data_parallel_size": 2,
        "tensor_parallel_size": 1,
        "save_distributed_checkpoint": False,
    },
}


def assert_same_weights(expected_checkpoint: Path, found_checkpoint: Path) -> None:
    expected, found = (
        torch.load(path, map_location="cpu", weights_only=True)
        for path in (expected_checkpoint, found_checkpoint)
    )
    assert expected["global_step"] == found["global_step"] == 4
    expected, found = expected["state_dict"], found["state_dict"]
    assert found.keys() == expected.keys()  # one whole checkpoint, gathered on rank 0
    for name, tensor in found.items():  # Adam's first steps move every weight by ~lr
        assert (tensor.float() - expected[name].float()).abs().max() <= 2e-4, name


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--model.lm.pattern", "foo"], "error: unknown pattern 'foo'; choose one of"),
        (["--model.adapter.frozen_dtype", "fp16"], "error: adapter frozen_dtype must be one of"),
        (["--model.text.frozen_dtype", "fp16"], "error: frozen_dtype must be one of"),
        (["--model.lm.dim", "30"], "error: dim 30 is not divisible by num_heads 4"),
    ],
)
def test_a_bad_model_option_is_one_line(tmp_path, capsys, option, message):
    """A config value a dataclass refuses: its own message, not jsonargparse's account of
    every class it tried."""
    config = tiny_config(tmp_path)
    capsys.readouterr()
    assert main(["fit", "--config", str(config), *option]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message), err[:3]


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--data.batch_size", "0"], "data.batch_size must be at least 1"),
        (["--data.segment_seconds", "0"], "data.segment_seconds must be positive"),
        (["--trainer.val_check_interval", "1000"], "`val_check_interval` (1000) must be less"),
        (["--model.optim.lr", "1e400"], "optim.lr must be a positive number, got inf"),
        (["--model.optim.lr", "1e30"], "optim.lr 1e+30 would diverge at once"),
        (["--model.lm.num_layers", "0"], "lm.num_layers must be a positive number, got 0"),
        (["--ckpt_path", "{tmp}/empty.ckpt"], "checkpoint {tmp}/empty.ckpt is empty (0 bytes)"),
    ],
)
def test_settings_that_cannot_train_end_in_one_line(tmp_path, capsys, option, message):
    """No traceback: the last line says what is wrong, and the run never starts."""
    (tmp_path / "empty.ckpt").write_bytes(b"")
    config = tiny_config(tmp_path)
    capsys.readouterr()
    option = [word.format(tmp=tmp_path) for word in option]
    assert main(["fit", "--config", str(config), "--trainer.max_steps", "2", *option]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"error: {message.format(tmp=tmp_path)}")


def test_a_truncated_shard_stops_fit_in_one_line_before_training(tmp_path, capsys):
    config = tiny_config(tmp_path)
    shard = tmp_path / "shards" / "shard-000002.tar"
    shard.write_bytes(shard.read_bytes()[:3000])
    argv = ["fit", "--config", str(config), "--trainer.max_steps", "2"]
    assert main([*argv, "--data.on_bad_shard", "fail"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: shard {shard} is ") and "Traceback" not in "".join(err)
    assert main(argv) == 0  # skip (the default): trains on the others, after a warning


def test_a_non_finite_loss_prints_its_line_without_a_traceback(tmp_path, capsys, monkeypatch):
    from lightning_sdm.tasks import lm_task

    real_loss = lm_task.masked_level_mean
    monkeypatch.setattr(lm_task, "masked_level_mean",
                        lambda *a: (real_loss(*a)[0] * float("nan"), real_loss(*a)[1]))  # fmt: skip
    config = tiny_config(tmp_path)
    capsys.readouterr()
    assert main(["fit", "--config", str(config), "--trainer.max_steps", "2"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: the training loss became nan at step 0; stopped")
    assert list((tmp_path / "run").glob("version_0/checkpoints/nonfinite-before-step0.ckpt"))


@pytest.mark.slow
def test_two_process_cpu_fsdp_trains_as_ddp_does(tmp_path):
    """FSDP2 (each decoder layer a shard unit) gives DDP's weights: gradients are reduced
    across ranks only through the shards, so an unsharded run would drift apart."""
    ddp = two_process_fit(tmp_path / "ddp", "ddp")
    fsdp = two_process_fit(tmp_path / "fsdp", FSDP)
    assert_same_weights(ddp / "checkpoints" / "last.ckpt", fsdp / "checkpoints" / "last.ckpt")
    ddp_metrics, fsdp_metrics = (
        (run / "metrics.csv").read_text().splitlines()[1].split(",") for run in (ddp, fsdp)
    )
    assert all(  # the first step's loss, per level, and gradient norm
        a == b or abs(float(a) - float(b)) <= 1e-5
        for a, b in zip(ddp_metrics, fsdp_metrics, strict=True)
    )
    # samples from the sharded model, gathered for decoding; export reads its checkpoint
    assert len(list((fsdp / "samples").rglob("*.wav"))) == 2
    out = tmp_path / "exported"
    assert main(["export", "--ckpt", str(fsdp / "checkpoints" / "last.ckpt"),
                 "--output", str(out)]) == 0  # fmt: skip
    assert TextToMusicLM.from_pretrained(out).config.lm.dim == 32


@pytest.mark.slow
def test_export_and_generate_read_a_folder_of_shards(tmp_path):
    """save_distributed_checkpoint: true writes a file per rank; export and generate join
    them (and resume is Lightning's own)."""
    strategy = {**FSDP, "init_args": {**FSDP["init_args"], "save_distributed_checkpoint": True}}
    run = two_process_fit(tmp_path, strategy)
    folder = run / "checkpoints" / "last.ckpt"
    assert folder.is_dir() and len(list(folder.glob("*.distcp"))) == 2
    assert main(["export", "--ckpt", str(folder), "--output", str(tmp_path / "exported")]) == 0
    exported = TextToMusicLM.from_pretrained(tmp_path / "exported")
    assert exported.config.lm.dim == 32
    out = tmp_path / "generated"
    argv = ["generate", "--ckpt", str(folder), "--prompt", "a", "--seconds", "0.2"]
    assert main([*argv, "--no-progress", "--output_dir", str(out)]) == 0
    assert json.loads((out / "00-a.json").read_text())["model"]["checkpoint_sha256"]
    # the joined weights are the run's: generate from the export gives the same tokens
    again = tmp_path / "again"
    argv = ["generate", "--model", str(tmp_path / "exported"), "--prompt", "a", "--seconds", "0.2"]
    assert main([*argv, "--no-progress", "--output_dir", str(again)]) == 0
    assert torch.equal(
        torch.load(out / "codes.pt")["codes"], torch.load(again / "codes.pt")["codes"]
    )


def shortened(source: Path, target: Path, **trainer) -> Path:
    config = yaml.safe_load(source.read_text())
    config["trainer"].update(trainer)
    target.write_text(yaml.safe_dump(config))
    return target


def demo_prompts(config: Path) -> list[str]:
    callbacks = yaml.safe_load(config.read_text())["trainer"]["callbacks"]
    (samples,) = (c for c in callbacks if c["class_path"].endswith("SampleGeneration"))
    return samples["init_args"]["prompts"]


@pytest.mark.slow
def test_the_demo_command_trains_the_codec_then_the_lm_and_reports(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the demo writes data/ and runs/ relative to where it runs
    monkeypatch.setenv("WANDB_MODE", "offline")
    codec = shortened(ROOT / "configs" / "codec_demo.yaml", tmp_path / "codec.yaml", max_steps=4)
    lm = shortened(ROOT / "configs" / "demo.yaml", tmp_path / "lm.yaml", max_steps=3)
    assert main(["demo", "--codec_config", str(codec), "--model_config", str(lm)]) == 0
    assert len(list((tmp_path / "data" / "demo" / "audio").glob("*.wav"))) == 128
    assert (tmp_path / "data" / "demo" / "shards" / "index.json").is_file()
    assert (tmp_path / "assets" / "demo_codec" / "config.json").is_file()
    (report_path,) = (tmp_path / "runs" / "demo").rglob("demo_report.json")
    report = json.loads(report_path.read_text())
    codec_part = report["codec_reconstruction"]
    assert len(codec_part["held_out_clips"]) == 12  # val_fraction 0.125 of 128, by key hash
    assert {"si_snr_db", "chroma_similarity"} <= set(codec_part["trained"])
    clarity = report["generation"]["pitch_clarity"]
    prompts = demo_prompts(lm)
    assert len(clarity["per_prompt"]) == len(prompts) and clarity["random_output"] > 0
    assert report["generation"]["prompt_distance"]["between_prompts_samples_db"] >= 0
    samples = report_path.parent / "samples"
    assert len(list(samples.rglob("*.wav"))) == len(list(samples.rglob("*.png"))) == len(prompts)
    out = capsys.readouterr().out
    assert "Demo report" in out and "target chroma similarity" in out
    # a second run reuses the codec and its shards
    assert main(["demo", "--codec_config", str(codec), "--model_config", str(lm)]) == 0
    assert "using the demo's autoencoder at assets/demo_codec" in capsys.readouterr().out
    # --retrain_codec replaces it (a codec fit alone leaves an occupied directory as it is)
    (weights,) = (tmp_path / "assets" / "demo_codec").glob("*.safetensors")
    before = weights.read_bytes()
    reseeded = yaml.safe_load(codec.read_text())
    codec.write_text(yaml.safe_dump({**reseeded, "seed_everything": 1}))
    argv = ["demo", "--codec_config", str(codec), "--model_config", str(lm)]
    assert main([*argv, "--retrain_codec", "true"]) == 0
    assert "== the demo takes the retrained autoencoder into assets/demo_codec" in (
        capsys.readouterr().out
    )
    (retrained,) = (tmp_path / "runs" / "demo_codec").rglob("codec/*.safetensors")
    assert weights.read_bytes() == retrained.read_bytes() != before


@pytest.mark.slow
def test_the_diffusion_demo_trains_the_vae_then_the_dit_and_reports(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    # A VAE a quarter as wide, trained here (`--retrain_codec`), with a DiT over its 4
    # latent channels: encoding the 128 clips with the bundled VAE took most of the time.
    vae = shortened(ROOT / "configs" / "vae_demo.yaml", tmp_path / "vae.yaml", max_steps=3)
    vae_fit = yaml.safe_load(vae.read_text())
    vae_fit["model"]["init_args"]["vae_config"].update(
        encoder_hidden_size=8, decoder_channels=8, decoder_input_channels=4
    )
    vae.write_text(yaml.safe_dump(vae_fit))
    dit = shortened(ROOT / "configs" / "ezaudio_demo.yaml", tmp_path / "dit.yaml", max_steps=3)
    config = yaml.safe_load(dit.read_text())
    config["model"]["init_args"]["dit"]["latent_channels"] = 4
    for callback in config["trainer"]["callbacks"]:
        if callback["class_path"].endswith("SampleGeneration"):  # fewer DDIM steps, one window
            callback["init_args"].update(seconds=2.0, sampling={"steps": 2})
    dit.write_text(yaml.safe_dump(config))
    argv = ["demo", "--family", "diffusion", "--codec_config", str(vae), "--model_config", str(dit)]
    assert main([*argv, "--retrain_codec", "true"]) == 0
    assert (tmp_path / "assets" / "demo_vae" / "config.json").is_file()
    assert (tmp_path / "data" / "demo" / "vae_latent_shards" / "index.json").is_file()
    (report_path,) = (tmp_path / "runs" / "ezaudio_demo").rglob("demo_report.json")
    report = json.loads(report_path.read_text())
    assert report["autoencoder"] == "waveform VAE"
    clarity = report["generation"]["pitch_clarity"]
    assert clarity["random_output_kind"] == "random latents through the VAE"
    assert len(clarity["per_prompt"]) == len(demo_prompts(dit)) and clarity["random_output"] > 0
    out = capsys.readouterr().out
    assert "waveform VAE on 12 held-out clips" in out and "random latents through the VAE" in out


def test_the_lm_demo_config_without_its_codec_says_what_to_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    lm = shortened(ROOT / "configs" / "demo.yaml", tmp_path / "lm.yaml", max_steps=1)
    assert main(["fit", "--config", str(lm)]) == 2
    assert "lightning-sdm fit --config configs/codec_demo.yaml" in capsys.readouterr().err


def test_final_samples_come_from_the_final_step(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    config = str(tiny_config(tmp_path))
    main(["fit", "--config", config, "--trainer.max_steps", "5"])  # validates at 4 only
    samples = tmp_path / "run" / "version_0" / "samples"
    assert (samples / "step-0000004").is_dir() and (samples / "step-0000005").is_dir()


@pytest.mark.parametrize("wandb_mode", ["disabled", "offline"])
def test_an_empty_train_dir_fails_in_one_line_before_the_model_is_built(
    tmp_path, capsys, monkeypatch, wandb_mode
):
    monkeypatch.setenv("WANDB_MODE", wandb_mode)
    config = tiny_config(tmp_path)
    (tmp_path / "empty").mkdir()
    assert main(["fit", "--config", str(config), "--data.train_dir", str(tmp_path / "empty")]) == 2
    captured = capsys.readouterr()
    empty = tmp_path / "empty"
    expected = f"error: data.train_dir {empty} is empty; make shards with: lightning-sdm tokenize"
    assert captured.err == expected + "\n"
    assert "Params" not in captured.out  # no model summary before the error
    # no version_N of W&B stubs left to be mistaken for a run (nor to push the next one on)
    assert not list((tmp_path / "run").glob("version_*"))


def test_samples_with_another_codec_than_the_shards_stop_fit(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    make_folder(tmp_path / "audio")
    argv = ["tokenize", str(tmp_path / "audio"), str(tmp_path / "tokens"), "--no-progress"]
    assert main([*argv, "--random-codec", "1", "--workers", "0", "--shard-items", "1"]) == 0
    save_random_codec(tmp_path / "other_codec", seed=2)
    config = yaml.safe_load(tiny_config(tmp_path).read_text())
    config["data"].update(train_dir=str(tmp_path / "tokens"), batch_size=1)
    sampler = config["trainer"]["callbacks"][2]["init_args"]
    sampler["codec"] = {"pretrained": str(tmp_path / "other_codec")}
    path = tmp_path / "mismatch.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["fit", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: SampleGeneration codec is ") and "weights_sha256" in err
    assert str((tmp_path / "tokens" / "codec").resolve()) in err
    # Without a codec of its own, the callback decodes with the shards' codec.
    del sampler["codec"]
    path.write_text(yaml.safe_dump(config))
    assert main(["fit", "--config", str(path), "--trainer.val_check_interval", "2"]) == 0


def test_fit_help_describes_the_data_options(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--data.help", "TokenShardsDataModule"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Hold out the last N shards of train_dir" in text
    assert "Hold out this fraction of train_dir's items" in text
    assert "(type: float, default: 0.0)" in text


def test_tokenize_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["tokenize", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Reject shorter audio. (type: float, default: 1.0)" in text
    assert "--random_codec RANDOM_CODEC" in text and "--codec.pretrained PRETRAINED" in text


def test_fit_print_config_round_trips_as_config(tmp_path, capsys):
    def printed(argv):
        with pytest.raises(SystemExit) as done:
            main([*argv, "--print_config"])
        assert done.value.code == 0
        return capsys.readouterr().out

    first = printed(["fit", "--config", str(ROOT / "configs" / "demo.yaml")])
    path = tmp_path / "printed.yaml"
    path.write_text(first)
    assert printed(["fit", "--config", str(path)]) == first


@pytest.mark.parametrize(
    ("section", "option", "message"),
    [
        ("model", "text", "model.text.pretrained is not set, so the text encoder would be"),
        ("data", "codec", "was tokenized with a random codec, whose tokens are not music"),
    ],
)
def test_fit_refuses_random_weights_nobody_asked_for(tmp_path, capsys, section, option, message):
    path = tiny_config(tmp_path)
    config = yaml.safe_load(path.read_text())
    del config[section][option]  # as a config that forgot `pretrained` would be
    path.write_text(yaml.safe_dump(config))
    assert main(["fit", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "random" in err.splitlines()[-1]
    assert not list((tmp_path / "run").rglob("*.ckpt"))  # stopped before the first step


def test_an_unsharded_ema_fit_does_not_warn_about_sharding(tmp_path, recwarn):
    """Lightning warns that weight averaging cannot shard whenever a task defines
    configure_model (ours do, for FSDP); a single-process fit need not hear it."""
    warnings.simplefilter("always")
    assert main(["fit", "--config", str(tiny_config(tmp_path))]) == 0
    assert not [w for w in recwarn if "WeightAveraging callback" in str(w.message)]


def test_the_depth_decoder_fits_samples_exports_and_generates(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    depth = {"pattern": "depth", "depth_dim": 16, "depth_layers": 1, "depth_heads": 2,
             "depth_ffn_dim": 32, "depth_acoustic_delay": 1,
             "depth_weights_per_level": True}  # fmt: skip
    options = [f"--model.lm.{key}={value}" for key, value in depth.items()]
    assert main(["fit", "--config", str(tiny_config(tmp_path)), *options]) in (0, None)
    run = tmp_path / "run" / "version_0"
    assert {w.parent.name for w in run.glob("samples/step-*/*.wav")} >= {"step-0000004"}
    last = run / "checkpoints" / "last.ckpt"
    assert main(["export", "--ckpt", str(last), "--output", str(tmp_path / "model")]) == 0
    model = TextToMusicLM.from_pretrained(tmp_path / "model")
    assert model.config.lm.is_depth and model.config.lm.depth_acoustic_delay == 1
    assert model.config.lm.depth_weights_per_level
    out = tmp_path / "generated"
    command = ["generate", "--model", str(tmp_path / "model"), "--prompt", "caption of item0003",
               "--timesteps", "7", "--no-progress", "--output_dir", str(out)]  # fmt: skip
    assert main(command) == 0
    assert torch.load(out / "codes.pt")["codes"].shape[-1] == 7


def test_fit_trains_from_shards_served_over_http(tmp_path, monkeypatch):
    from tests.data.http_fixtures import FaultProxy, FolderServer

    monkeypatch.setenv("WANDB_MODE", "disabled")
    config = str(tiny_config(tmp_path))
    with FolderServer(tmp_path / "shards") as origin, FaultProxy(origin.url) as server:
        main(["fit", "--config", config, "--trainer.max_steps", "2",
              "--data.train_dir", server.url + "/"])  # fmt: skip
    assert server.faults.gets["index.json"] >= 1 and server.faults.gets["shard-000000.tar"] >= 1
    assert list((tmp_path / "run" / "version_0" / "checkpoints").glob("*.ckpt"))


def test_the_bucket_recipe_composes_with_the_paper_one(capsys):
    configs = [ROOT / "configs" / "paper" / n for n in ("base.yaml", "delay.yaml", "bucket.yaml")]
    argv = ["fit", *(a for c in configs for a in ("--config", str(c))), "--print_config"]
    with pytest.raises(SystemExit):
        main(argv)
    data = yaml.safe_load(capsys.readouterr().out)["data"]["init_args"]
    assert data["train_dir"].startswith("s3://") and data["val_dir"].startswith("s3://")
    assert data["cache_dir"] and data["cache_gb"] == 200 and data["segment_seconds"] == 30.0


def test_a_resumed_lora_run_keeps_its_adapter(tmp_path, monkeypatch, capsys):
    """A resume with another rank ended in a traceback listing every size mismatch; one
    without the adapter, or with another alpha, would have loaded and trained on."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    fit = ["fit", "--config", str(tiny_config(tmp_path)), "--model.adapter.r", "2"]
    assert main([*fit, "--trainer.max_steps", "2"]) == 0
    resumed = [*fit, "--ckpt_path", "last", "--trainer.max_steps", "3"]
    for change, said in [
        (["--model.adapter.r", "4"], "model.adapter.r 4 (checkpoint: 2)"),
        (["--model.adapter.alpha", "64"], "model.adapter.alpha 64.0 (checkpoint: 32.0)"),
        (["--model.adapter", "null"], "model.adapter none (checkpoint: set)"),
    ]:
        capsys.readouterr()
        assert main([*resumed, *change]) == 2
        error = capsys.readouterr().err
        assert said in error and "Traceback" not in error
    assert main([*resumed, "--model.adapter.dropout", "0.1"]) == 0


@pytest.mark.parametrize(("cause", "status"), [(None, 143), ("Ctrl+C", 130)])
def test_a_demo_whose_fit_was_stopped_exits_with_the_signal_s_status(
    monkeypatch, capsys, cause, status
):
    """A demo stopped by SIGTERM exited 0: Lightning's SIGTERMException is a SystemExit
    without a code, and only `fit` turned it into 143; a job script saw success."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from lightning_sdm.callbacks import preemption
    from lightning_sdm.demo import run

    def stopped(*args):
        preemption.stop_cause = cause  # as the fit's callback records it
        raise SIGTERMException

    monkeypatch.setattr(run, "_run_demo", stopped)
    monkeypatch.setattr(preemption, "stop_cause", None)
    assert main(["demo"]) == status
    assert "the demo stopped before its report" in capsys.readouterr().err
