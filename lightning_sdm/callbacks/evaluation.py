"""Evaluation metrics during training: generate for a fixed prompt set, score it against a
held-out reference set (FAD, KLD, CLAP score, RTF), and log the numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L

from lightning_sdm.callbacks.samples import SampleGeneration
from lightning_sdm.codecs import CodecConfig
from lightning_sdm.errors import UserInputError
from lightning_sdm.metrics.evaluation import BACKENDS, LOAD_RATE, METRICS, Clip, read_clips


class EvaluationMetrics(SampleGeneration):
    """Logs eval/fad, eval/kld, eval/clap and eval/rtf after validations (and at the end).

    FAD is computed on VGGish when its weights are given, else on the continuous latents of
    the codec that decodes the samples (the shards' codec, no other weights); KLD and CLAP
    take local model directories.

    Args:
        reference: Held-out reference clips with captions (a folder, JSONL or CSV).
        metrics: Which of fad, kld, clap, rtf.
        prompts: Captions to generate from; default: the first `num_prompts` reference
            captions (so KLD can pair every clip with its reference).
        num_prompts: How many reference captions to use as prompts by default.
        max_reference: How many reference clips to read (bounds memory and time).
        every_n_validations: Evaluate after every Nth validation.
        ast_dir: AST directory for KLD.
        clap_dir: CLAP directory for the CLAP score.
        vggish_weights: VGGish state dict: FAD on VGGish instead of the codec's latents.
        seconds: Length of each generated clip.
        codec: As SampleGeneration's.
        sampling: Options of the model family's sampling config, as SampleGeneration's.
        seed: Seed of the sampling, so evaluations compare.
    """

    def __init__(
        self,
        reference: str,
        metrics: list[str] | None = None,
        prompts: list[str] | None = None,
        num_prompts: int = 8,
        max_reference: int = 64,
        every_n_validations: int = 1,
        ast_dir: str | None = None,
        clap_dir: str | None = None,
        vggish_weights: str | None = None,
        seconds: float = 10.0,
        codec: CodecConfig | None = None,
        sampling: dict[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(
            prompts=prompts, every_n_steps=0, at_validation_end=True,
            seconds=seconds, codec=codec, sampling=sampling, seed=seed,
        )  # fmt: skip
        self.metrics = list(metrics or ("fad", "rtf"))
        unknown = sorted(set(self.metrics) - set(METRICS))
        if unknown:
            raise UserInputError(f"EvaluationMetrics: unknown metrics {unknown}")
        directories = {"kld": ast_dir, "clap": clap_dir}
        for metric, directory in directories.items():
            if metric in self.metrics and directory is None:
                flag, what = BACKENDS[metric]
                raise UserInputError(
                    f"EvaluationMetrics: {metric} needs {flag.lstrip('-')}: {what}"
                )
        self.reference_source = reference
        self.given_prompts = prompts
        self.num_prompts = num_prompts
        self.max_reference = max_reference
        self.every_n_validations = every_n_validations
        self.directories = directories
        self.vggish_weights = vggish_weights
        self.reference: list[Clip] = []
        self.values: dict[str, float] = {}
        self._validations = 0
        self._backends: dict[str, object] = {}  # loaded once, on first use

    def _backend(self, metric: str, codec=None):
        """FAD's embedder (VGGish when given, else the codec's latents), KLD's classifier or
        the CLAP model, loaded once."""
        from lightning_sdm.metrics.embedders import ASTClassifier, ClapEmbedder
        from lightning_sdm.metrics.evaluation import fad_embedder

        if metric == "fad" and self.vggish_weights is None:
            from lightning_sdm.metrics.embedders import CodecLatentEmbedder

            return CodecLatentEmbedder(codec)
        if metric not in self._backends:
            self._backends[metric] = {
                "fad": lambda: fad_embedder("vggish", str(self.vggish_weights)),
                "kld": lambda: ASTClassifier(str(self.directories["kld"])),
                "clap": lambda: ClapEmbedder(str(self.directories["clap"])),
            }[metric]()
        return self._backends[metric]

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage != "fit":
            return
        self.reference = read_clips(self.reference_source, "reference", self.max_reference)
        if self.given_prompts is None:
            captions = [c.caption for c in self.reference if c.caption]
            if not captions:
                raise UserInputError(
                    f"EvaluationMetrics: the reference clips in {self.reference_source} have "
                    "no captions to prompt with; give prompts"
                )
            self.prompts = captions[: self.num_prompts]  # replaces the default prompts

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._validations += 1
        if self._validations % self.every_n_validations == 0:
            self.generate(trainer, pl_module)

    def _generate_on_this_rank(
        self, trainer: L.Trainer, pl_module: L.LightningModule, folder: Path
    ) -> None:
        from lightning_sdm.metrics.embedders import resample
        from lightning_sdm.metrics.evaluation import score_clap, score_fad, score_kld

        wavs, elapsed, codec, frames = self._sample(trainer, pl_module, self.prompts)
        generated = [
            Clip(f"{index:02d}", prompt, resample(wav, codec.sample_rate, LOAD_RATE), {})
            for index, (prompt, wav) in enumerate(zip(self.prompts, wavs, strict=True))
        ]
        scores = {
            "fad": lambda: score_fad(generated, self.reference, self._backend("fad", codec), 0),
            "kld": lambda: score_kld(generated, self.reference, self._backend("kld"), 0),
            "clap": lambda: score_clap(generated, self._backend("clap"), 0),
            "rtf": lambda: elapsed / (len(wavs) * frames / codec.frame_rate),
        }
        self.values = {}
        for metric in self.metrics:
            value = scores[metric]()
            self.values[f"eval/{metric}"] = value if metric == "rtf" else value.value
        for logger in trainer.loggers:
            logger.log_metrics(self.values, step=trainer.global_step)
