"""Generate audio from fixed prompts during training, with the EMA weights, on rank 0."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger

from lightning_sdm.audio_io import slug, spectrogram_png, write_wav
from lightning_sdm.callbacks.averaging import averaged_weights
from lightning_sdm.codecs import Codec, CodecConfig, CodecIdentity, load_codec
from lightning_sdm.data.interface import training_data
from lightning_sdm.errors import UserInputError
from lightning_sdm.families import family_of
from lightning_sdm.generation.family_generation import DecodingChoices
from lightning_sdm.generation.windows import WindowPlan, generate_in_windows
from lightning_sdm.presets import RANDOM_WEIGHTS
from lightning_sdm.tasks.sharding import whole_parameters
from lightning_sdm.tasks.text_conditioned import TextConditionedTask

DEFAULT_PROMPTS = [
    "an upbeat pop song with bright synths and punchy drums at 120 bpm",
    "a calm solo piano piece in a minor",
    "a funky bass groove with tight drums",
]


def _codec_of_shards(identity: CodecIdentity | None) -> CodecConfig:
    """The codec the shards were made with, from the directory their index names."""
    directory = identity.pretrained if identity is not None else None
    if directory and Path(directory).is_dir():
        return CodecConfig(pretrained=directory)
    if identity is None or not identity.checkable:
        # Shards without codec weights (synthetic; fit trains on them only when asked).
        return CodecConfig(pretrained=RANDOM_WEIGHTS)
    raise UserInputError(
        f"the shards' codec {identity.describe()} is not at hand to decode samples; "
        "set the SampleGeneration callback's codec.pretrained to a copy of it"
    )


class SampleGeneration(Callback):
    """Writes a wav and a spectrogram per prompt under RUN/samples/step-N/ (and to W&B).

    Args:
        prompts: Captions to generate from (the same ones every time, to compare steps).
        every_n_steps: Also generate every N optimizer steps (0: only at validation and end).
        at_validation_end: Generate after each validation.
        seconds: Length of each sample; longer than the training crops, it continues
            window by window as `generate` does (each window the crop length, 60 % new).
        codec: The codec that decodes samples; default: the one the shards were made with
            (index.json). A different codec than the shards' is an error.
        sampling: Options of the model family's sampling config, as `generate` takes them
            (a codebook LM: temperature, top_k, top_p, cfg_scale; a diffusion model:
            steps, cfg_scale, cfg_rescale, eta); unset ones keep the family's defaults.
        seed: Seed of the sampling, so steps are comparable.
    """

    def __init__(
        self,
        prompts: list[str] | None = None,
        every_n_steps: int = 5000,
        at_validation_end: bool = True,
        seconds: float = 10.0,
        codec: CodecConfig | None = None,
        sampling: dict[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.prompts = list(prompts or DEFAULT_PROMPTS)
        self.every_n_steps = every_n_steps
        self.at_validation_end = at_validation_end
        self.seconds = seconds
        self.codec_config = codec
        self.sampling_options = dict(sampling or {})
        self.seed = seed
        self._codec: Codec | None = None
        self._last_step = -1
        self.written: list[Path] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Pick and check the codec and the sampling options before training, on every
        rank (all stop alike)."""
        if stage != "fit":
            return
        family_of(pl_module.model).sampling_from(self.sampling_options)
        data = training_data(trainer)
        if self.codec_config is None:
            self.codec_config = _codec_of_shards(data.codec if data is not None else None)
        self._codec = load_codec(self.codec_config)
        if data is not None:
            data.check_codec(self._codec.identity(), "SampleGeneration codec")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """A fine-tune's starting model, once per run: samples/base/ beside every step's
        folder, to hear what the fine-tune changed."""
        started_from = pl_module.init_from if isinstance(pl_module, TextConditionedTask) else None
        if started_from is None or trainer.global_step > 0:
            return
        folder = Path(trainer.log_dir or trainer.default_root_dir) / "samples" / "base"
        with whole_parameters(pl_module):
            if trainer.is_global_zero:
                self._generate_on_this_rank(trainer, pl_module, folder)
            trainer.strategy.barrier("base_samples")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0:
            self.generate(trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Not on_validation_epoch_end: weight averaging swaps the EMA weights into the module
        # for validation and back at epoch end, so only now is the average where we read it,
        # whatever the order of the callbacks.
        if self.at_validation_end and not trainer.sanity_checking:
            self.generate(trainer, pl_module)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The final weights' samples, unless the last validation already made them."""
        self.generate(trainer, pl_module)

    def generate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Rank 0 generates (bounded work); the other ranks wait at a barrier. A sharded
        model is gathered whole on every rank first (a collective) and sharded again after."""
        if trainer.global_step == self._last_step:
            return
        self._last_step = trainer.global_step
        # On every rank: trainer.log_dir broadcasts, which rank 0 alone must not do.
        folder = Path(trainer.log_dir or trainer.default_root_dir) / "samples"
        with whole_parameters(pl_module):
            if trainer.is_global_zero:
                step_folder = folder / f"step-{self._last_step:07d}"
                self._generate_on_this_rank(trainer, pl_module, step_folder)
            trainer.strategy.barrier("sample_generation")

    def _codec_on(self, device: torch.device) -> Codec:
        if self._codec is None:  # used without fit's setup (e.g. called directly)
            self._codec = load_codec(self.codec_config or CodecConfig(pretrained=RANDOM_WEIGHTS))
        return self._codec.to(device)

    def _sample(
        self, trainer: L.Trainer, pl_module: L.LightningModule, prompts: list[str]
    ) -> tuple[torch.Tensor, float, Codec, int]:
        """Audio [B, N] for `prompts` from the (EMA) weights, the wall time of generating
        and decoding it, the codec and the frames per prompt."""
        with averaged_weights(trainer, pl_module) as module:
            model = module.model
            was_training = model.training
            model.eval()
            codec = self._codec_on(next(model.parameters()).device)
            frames = max(1, round(self.seconds * codec.frame_rate))
            family = family_of(model)
            steps = family.generation(
                model, family.sampling_from(self.sampling_options), DecodingChoices()
            )
            seeds = [self.seed + row for row in range(len(prompts))]
            started = time.perf_counter()
            window = steps.window_generator(prompts, seeds, on_step=lambda: None)
            # The module's own record: the averaged copy is taken before setup sets it.
            trained = (
                pl_module.trained_segment_frames
                if isinstance(pl_module, TextConditionedTask)
                else None
            )
            if trained and 1 < trained < frames:  # longer than the crops: continue windows
                output = generate_in_windows(window, frames, WindowPlan.continuing(trained))
            else:
                output = window(frames, None, 0)
            wavs = steps.decode(codec, output)
            elapsed = time.perf_counter() - started
            model.train(was_training)
        return wavs, elapsed, codec, frames

    def _generate_on_this_rank(
        self, trainer: L.Trainer, pl_module: L.LightningModule, folder: Path
    ) -> None:
        wavs, elapsed, codec, frames = self._sample(trainer, pl_module, self.prompts)
        rtf = elapsed / (len(self.prompts) * frames / codec.frame_rate)
        entries: dict[str, Any] = {}
        for index, (prompt, wav) in enumerate(zip(self.prompts, wavs, strict=True)):
            name = f"{index:02d}-{slug(prompt)}"
            wav_path = write_wav(folder / f"{name}.wav", wav, codec.sample_rate)
            image_path = spectrogram_png(folder / f"{name}.png", wav, codec.sample_rate, prompt)
            self.written.append(wav_path)
            entries[name] = (prompt, wav_path, image_path)
        for logger in trainer.loggers:
            logger.log_metrics({"samples/rtf": rtf}, step=trainer.global_step)
            if isinstance(logger, WandbLogger):
                self._log_wandb(logger, entries, trainer.global_step)

    @staticmethod
    def _log_wandb(logger: WandbLogger, entries: dict[str, Any], step: int) -> None:
        import wandb

        payload = {}
        for name, (prompt, wav_path, image_path) in entries.items():
            payload[f"samples/{name}/audio"] = wandb.Audio(str(wav_path), caption=prompt)
            payload[f"samples/{name}/spectrogram"] = wandb.Image(str(image_path), caption=prompt)
        logger.log_metrics(payload, step=step)  # W&B keys its own step; ours is a metric
