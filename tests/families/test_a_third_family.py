"""A third model family, declared in this file alone, goes through everything the two
built-in ones do: fit with the sample callback, export, generate, and the web app."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from lightning_sdm.app.server import create_app
from lightning_sdm.callbacks.samples import SampleGeneration
from lightning_sdm.cli import main
from lightning_sdm.codecs import CodecConfig, EncodecCodec
from lightning_sdm.families import ModelFamily, family_of, register, unregister
from lightning_sdm.models.saving import CONFIG_FILE, FAMILY_KEY
from lightning_sdm.tasks.optim import OptimConfig
from lightning_sdm.tasks.text_conditioned import TextConditionedTask
from tests.app.test_server import TestClient  # as a browser on this machine


@dataclass(frozen=True)
class HumSampling:
    loudness: float = 0.5
    cfg_scale: float = 1.0


class HumModel(nn.Module):
    """Latents of a fixed noise, scaled by a learnt gain and the sampling's loudness."""

    family = "hum"
    sampling_config_type = HumSampling

    def __init__(self, latent_channels: int = 16) -> None:
        super().__init__()
        self.latent_channels = latent_channels
        self.gain = nn.Parameter(torch.ones(()))

    def latents(self, rows: int, frames: int, seed: int, sampling: HumSampling) -> torch.Tensor:
        noise = torch.randn(
            rows, self.latent_channels, frames, generator=torch.Generator().manual_seed(seed)
        )
        return noise * self.gain.detach() * sampling.loudness

    def save_pretrained(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {FAMILY_KEY: self.family, "latent_channels": self.latent_channels}
        (directory / CONFIG_FILE).write_text(json.dumps(config))
        torch.save(self.state_dict(), directory / "hum.pt")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> HumModel:
        config = json.loads((Path(directory) / CONFIG_FILE).read_text())
        model = cls(config["latent_channels"])
        model.load_state_dict(torch.load(Path(directory) / "hum.pt"))
        return model


class HumTask(TextConditionedTask):
    def __init__(self, latent_channels: int = 16) -> None:
        super().__init__()
        self.model = HumModel(latent_channels)
        self.optim_config = OptimConfig(lr=0.1, warmup_steps=0)
        self.save_hyperparameters()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return (self.model.gain - 2.0).square()


@dataclass
class HumGeneration:
    model: HumModel
    sampling: HumSampling
    output_name = "latents"
    steps_name = "hum_steps"

    def steps(self, length: int) -> int:
        return 1

    def window_generator(self, captions, seeds, on_step: Callable[[], None]):
        def window(length: int, context: torch.Tensor | None, index: int) -> torch.Tensor:
            on_step()
            rows = [self.model.latents(1, length, seed + index, self.sampling) for seed in seeds]
            return torch.cat(rows)

        return window

    def decode(self, codec, output):
        return codec.decode_latents(output)

    def encode_prompt(self, codec, wav):
        return codec.encode_with_latents(wav)[1]

    def describe(self) -> dict[str, Any]:
        return {"family": "hum", "loudness": self.sampling.loudness}

    def stored(self, output: torch.Tensor) -> torch.Tensor:
        return output.float()


def export_as_text(model: HumModel, codec, output: Path) -> Path:
    output.mkdir(parents=True, exist_ok=True)
    (output / "gain.txt").write_text(f"{float(model.gain):.3f}")
    return output


def check_codec(codec, model: HumModel) -> None:
    assert codec.latent_dim == model.latent_channels


HUM = ModelFamily(
    model_class=HumModel,
    task_class=HumTask,
    description="a humming model",
    options_section="hum",
    generation=lambda model, sampling, decoding: HumGeneration(model, sampling),
    check_codec=check_codec,
    exporters={"gain_text": export_as_text},
)


@pytest.fixture
def hum_family():
    register(HUM)
    yield HUM
    unregister(HUM.name)


def random_data() -> DataLoader:
    return DataLoader([{"padding_mask": torch.ones(4, dtype=torch.bool)}] * 4, batch_size=2)


def test_a_family_declared_in_one_place_trains_samples_exports_generates_and_serves(
    hum_family, tmp_path, capsys
):
    torch.manual_seed(0)
    EncodecCodec().save_pretrained(tmp_path / "codec")
    samples = SampleGeneration(
        prompts=["a hum"], every_n_steps=0, at_validation_end=False, seconds=0.2,
        codec=CodecConfig(pretrained=str(tmp_path / "codec")), sampling={"loudness": 0.25},
    )  # fmt: skip
    trainer = L.Trainer(
        max_steps=4, accelerator="cpu", logger=False, default_root_dir=tmp_path,
        callbacks=[samples], enable_progress_bar=False,
    )  # fmt: skip
    task = HumTask()
    trainer.fit(task, random_data())
    assert family_of(task.model) is hum_family
    assert [path.suffix for path in samples.written] == [".wav"]

    checkpoint = tmp_path / "hum.ckpt"
    trainer.save_checkpoint(checkpoint)
    assert torch.load(checkpoint, weights_only=False)[FAMILY_KEY] == "hum"
    assert main(["export", "--ckpt", str(checkpoint), "--output", str(tmp_path / "m")]) == 0
    assert json.loads((tmp_path / "m" / CONFIG_FILE).read_text())[FAMILY_KEY] == "hum"
    exported = ["export", "--model", str(tmp_path / "m"), "--format", "gain_text"]
    assert main([*exported, "--output", str(tmp_path / "text")]) == 0
    assert (tmp_path / "text" / "gain.txt").read_text() == f"{float(task.model.gain):.3f}"

    generate = ["generate", "--no-progress", "--model", str(tmp_path / "m"), "--prompt", "a"]
    out = ["--codec_dir", str(tmp_path / "codec"), "--seconds", "0.2"]
    assert main([*generate, *out, "--output_dir", str(tmp_path / "gen")]) == 0
    sidecar = json.loads((tmp_path / "gen" / "00-a.json").read_text())
    assert sidecar["family"] == "hum" and sidecar["hum_steps"] == 1
    assert (tmp_path / "gen" / "latents.pt").is_file()
    assert main([*generate, *out, "--temperature", "0.5", "--output_dir", str(tmp_path / "x")])
    assert "--sampling.* options are for a codebook LM; this is a humming model" in (
        capsys.readouterr().err
    )

    served = create_app(
        models=[str(tmp_path / "m")], output_dir=tmp_path / "s", codec_dir=str(tmp_path / "codec")
    )
    with TestClient(served) as app:
        listed = app.get("/api/models").json()
        assert listed["models"][0]["family"] == "hum", listed
        family = app.get("/api/family", params={"path": str(tmp_path / "m")}).json()
        assert family["description"] == "a humming model"
        assert [field["name"] for field in family["sampling"]] == ["loudness", "cfg_scale"]
        loud = app.post(
            "/api/generate",
            json={"model": str(tmp_path / "m"), "prompts": ["a"], "seconds": 0.2,
                  "sampling": {"loudness": 0.9}},
        ).json()  # fmt: skip
        for _ in range(200):
            loud = app.get(f"/api/jobs/{loud['job_id']}").json()
            if loud["status"] in ("done", "failed"):
                break
            time.sleep(0.05)
        assert loud["status"] == "done", loud["error"]
        assert loud["results"][0]["settings"]["loudness"] == 0.9
