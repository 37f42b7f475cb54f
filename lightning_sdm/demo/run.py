"""The CPU demo end to end: train the demo's autoencoder (the codec for the LM, the waveform
VAE for the diffusion family), train the model on its tokens or latents, then measure
whether what came out sounds like the demo's music, in numbers anyone can check.
"""

from __future__ import annotations

import itertools
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from lightning_sdm.codecs import Codec, CodecConfig, load_codec
from lightning_sdm.data.audio import load_mono
from lightning_sdm.data.audio_crops import AudioCropsDataModule
from lightning_sdm.data.sources import discover
from lightning_sdm.demo.audio import ensure_demo_clips, kind_of_caption
from lightning_sdm.errors import UserInputError
from lightning_sdm.metrics.audio import chroma_similarity, log_mel_distance, pitch_clarity, si_snr

REPORT_FILE = "demo_report.json"
CHROMA_TARGET = 0.9
DEMO_AUDIO = Path("data/demo/audio")  # where the demo's configs read the clips
DEMO_CLIPS = 128
DEMO_CLIP_SECONDS = 6.0


def write_demo_audio(folder: Path = DEMO_AUDIO) -> Path:
    """The demo's captioned clips (kept when already there: reruns reuse them)."""
    ensure_demo_clips(folder, DEMO_CLIPS, DEMO_CLIP_SECONDS)
    return folder


def find_config(path: str) -> Path:
    """A config path as given, else the same path in this checkout's configs."""
    given = Path(path)
    if given.is_file():
        return given
    bundled = Path(__file__).resolve().parents[2] / path
    if bundled.is_file():
        return bundled
    raise UserInputError(f"config {path} not found (run the demo from the repository root)")


def bring_bundled_autoencoder(codec_dir: Path, checkout: Path | None = None) -> bool:
    """Copy this checkout's bundled autoencoder to `codec_dir` (relative to the working
    directory, where the demo's configs read it) when it is not there yet, so a demo run
    from another directory does not train it again. False when there is none to copy."""
    if (codec_dir / "config.json").is_file() or codec_dir.is_absolute():
        return False
    bundled = (checkout or Path(__file__).resolve().parents[2]) / codec_dir
    if not (bundled / "config.json").is_file():
        return False
    import shutil

    shutil.copytree(bundled, codec_dir, dirs_exist_ok=True)
    return True


def _init_args(config: dict[str, Any], section: str) -> dict[str, Any]:
    value = config.get(section) or {}
    return value.get("init_args", value) if isinstance(value, dict) else {}


def codec_target(codec_config: Path) -> Path:
    """Where the codec config's SaveCodec callback writes the trained codec."""
    config = yaml.safe_load(codec_config.read_text(encoding="utf-8"))
    for callback in config.get("trainer", {}).get("callbacks") or []:
        if callback.get("class_path", "").endswith("SaveCodec"):
            directory = (callback.get("init_args") or {}).get("directory")
            if directory:
                return Path(directory)
    raise UserInputError(f"{codec_config} has no SaveCodec callback with a directory")


@dataclass
class Clip:
    name: str
    caption: str
    wav: torch.Tensor  # [N] at the codec's rate


def _clips(files: Sequence[Any], captions: dict[str, str], sample_rate: int) -> list[Clip]:
    return [
        Clip(
            Path(file.path).stem,
            captions.get(file.key) or "",
            torch.from_numpy(load_mono(Path(file.path), sample_rate).samples),
        )
        for file in files
    ]


def _mean(values: Sequence[float]) -> float:
    return float(statistics.fmean(values)) if values else float("nan")


def codec_section(codec: Codec, held_out: list[Clip], seed: int = 0) -> dict[str, Any]:
    """Reconstruction of the held-out clips by the trained codec (or VAE) and by a random
    one of the same architecture."""
    rate = codec.sample_rate
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        random_codec = codec.random_like()
    rows = {}
    for name, model in (("trained", codec), ("random", random_codec)):
        snr, chroma = [], []
        for clip in held_out:
            decoded = model.round_trip(clip.wav[None])[0]
            snr.append(float(si_snr(decoded, clip.wav)[0]))
            chroma.append(float(chroma_similarity(decoded, clip.wav, rate)[0]))
        rows[name] = {"si_snr_db": _mean(snr), "chroma_similarity": _mean(chroma)}
    return {
        "held_out_clips": [c.name for c in held_out],
        **rows,
        "target_chroma_similarity": CHROMA_TARGET,
        "met": rows["trained"]["chroma_similarity"] >= CHROMA_TARGET,
    }


def _reference_clarity(prompt: str, training: list[Clip], clarity: dict[str, float]) -> float:
    """Clarity of the training clips of the prompt's kind (instrument and texture): a chord
    is less clear than one note by nature, so samples are compared like with like."""
    kind = kind_of_caption(prompt)
    same = [clarity[c.name] for c in training if kind and kind_of_caption(c.caption) == kind]
    return _mean(same) if same else _mean(list(clarity.values()))


def generation_section(
    codec: Codec, samples: list[Clip], training: list[Clip], seed: int = 0
) -> dict[str, Any]:
    """Pitch clarity of the samples between the codec's random output (random codes, or
    random latents at the training clips' statistics) and the training clips', and how
    different the prompts' samples are."""
    rate = codec.sample_rate
    clarity_of_training = {c.name: float(pitch_clarity(c.wav, rate)[0]) for c in training}
    frames = codec.num_frames(max(s.wav.shape[0] for s in samples))
    generator = torch.Generator().manual_seed(seed)
    shortest = min(c.wav.shape[0] for c in training[:16])
    reference = torch.stack([c.wav[:shortest] for c in training[:16]])
    random_audio = codec.random_audio(len(samples), frames, generator, reference)
    random_clarity = [float(v) for v in pitch_clarity(random_audio, rate)]
    per_prompt = []
    for sample, noise in zip(samples, random_clarity, strict=True):
        per_prompt.append(
            {
                "prompt": sample.caption,
                "wav": sample.name,
                "pitch_clarity": float(pitch_clarity(sample.wav, rate)[0]),
                "training_clips_of_this_kind": _reference_clarity(
                    sample.caption, training, clarity_of_training
                ),
                "random_output": noise,
            }
        )
    generated = _mean([p["pitch_clarity"] for p in per_prompt])
    reference = _mean([p["training_clips_of_this_kind"] for p in per_prompt])
    random_mean = _mean(random_clarity)
    halfway = random_mean + 0.5 * (reference - random_mean)
    return {
        "pitch_clarity": {
            "generated": generated,
            "training_clips_of_the_prompts_kinds": reference,
            "training_clips_all": _mean(list(clarity_of_training.values())),
            "random_output": random_mean,
            "random_output_kind": codec.random_audio_kind,
            "target_halfway": halfway,
            "met": generated >= halfway,
            "per_prompt": per_prompt,
        },
        "prompt_distance": {
            "between_prompts_samples_db": _pairwise_mel_distance([s.wav for s in samples], rate),
            "between_training_clips_db": _pairwise_mel_distance(
                [c.wav for c in training[: len(samples) * 2]], rate
            ),
        },
    }


def _pairwise_mel_distance(wavs: list[torch.Tensor], sample_rate: int) -> float:
    """Mean log-mel distance (dB) over pairs: how different the audio of two items is."""
    distances = []
    for a, b in itertools.combinations(wavs, 2):
        length = min(a.shape[0], b.shape[0])
        distances.append(float(log_mel_distance(a[:length], b[:length], sample_rate)[0]))
    return _mean(distances)


def demo_report(
    run_dir: Path,
    codec_dir: Path,
    audio_dir: Path,
    prompts: list[str],
    sample_dir: Path,
    val_fraction: float,
) -> dict[str, Any]:
    """Every number the demo promises, written to RUN/demo_report.json; held out are the
    clips the LM and codec configs hold out (`val_fraction` by key hash)."""
    codec = load_codec(CodecConfig(pretrained=str(codec_dir)))
    crops = AudioCropsDataModule(
        str(audio_dir), val_fraction=val_fraction, sample_rate=codec.sample_rate
    )
    splits = crops.splits()
    captions = {item.key: item.caption or "" for item in discover(audio_dir)}
    held_out = _clips(splits["val"], captions, codec.sample_rate)
    training = _clips(splits["train"], captions, codec.sample_rate)
    wavs = sorted(sample_dir.glob("*.wav"))
    if len(wavs) != len(prompts):
        raise RuntimeError(f"expected {len(prompts)} samples in {sample_dir}, found {len(wavs)}")
    samples = [
        Clip(path.name, prompt, torch.from_numpy(load_mono(path, codec.sample_rate).samples))
        for path, prompt in zip(wavs, prompts, strict=True)
    ]
    report = {
        "run": str(run_dir),
        "codec": str(codec_dir),
        "autoencoder": codec.display_name,
        "samples": str(sample_dir),
        "codec_reconstruction": codec_section(codec, held_out),
        "generation": generation_section(codec, samples, training),
    }
    (run_dir / REPORT_FILE).write_text(json.dumps(report, indent=2), encoding="utf-8")
    return report


def format_report(report: dict[str, Any]) -> str:
    codec = report["codec_reconstruction"]
    generation = report["generation"]
    clarity = generation["pitch_clarity"]
    same_kind = clarity["training_clips_of_the_prompts_kinds"]
    distance = generation["prompt_distance"]
    between_prompts = distance["between_prompts_samples_db"]
    between_clips = distance["between_training_clips_db"]
    verdict = {True: "met", False: "NOT met"}
    lines = [
        "",
        f"Demo report ({Path(report['run']) / REPORT_FILE})",
        f"  {report['autoencoder']} on {len(codec['held_out_clips'])} held-out clips"
        "      SI-SNR    chroma sim.",
        f"    trained                           {codec['trained']['si_snr_db']:6.2f} dB"
        f"   {codec['trained']['chroma_similarity']:.3f}",
        f"    random weights, same shape        {codec['random']['si_snr_db']:6.2f} dB"
        f"   {codec['random']['chroma_similarity']:.3f}",
        f"    target chroma similarity >= {CHROMA_TARGET}: {verdict[codec['met']]}",
        "  pitch clarity (chroma peak-to-mean; 12 = one pitch class, ~1 = noise)",
        f"    generated samples                 {clarity['generated']:.2f}",
        f"    training clips of the same kinds  {same_kind:.2f}"
        f"   (all training clips {clarity['training_clips_all']:.2f})",
        f"    {clarity['random_output_kind']:<34}{clarity['random_output']:.2f}",
        f"    target >= halfway {clarity['target_halfway']:.2f}: {verdict[clarity['met']]}",
    ]
    for row in clarity["per_prompt"]:
        lines.append(
            f"      {row['pitch_clarity']:5.2f} (training "
            f"{row['training_clips_of_this_kind']:5.2f}, random {row['random_output']:4.2f})"
            f"  {row['prompt']}"
        )
    lines += [
        "  how different the prompts' samples are (mean log-mel distance)",
        f"    between the samples of different prompts  {between_prompts:.1f} dB",
        f"    between training clips, for scale         {between_clips:.1f} dB",
    ]
    return "\n".join(lines)


# The demo of each family: its autoencoder's fit config (which saves it where the model's
# config reads it) and the model's fit config.
DEMO_CONFIGS = {
    "lm": ("configs/codec_demo.yaml", "configs/demo.yaml"),
    "diffusion": ("configs/vae_demo.yaml", "configs/ezaudio_demo.yaml"),
}


def run_demo(
    codec_config: str = DEMO_CONFIGS["lm"][0],
    model_config: str = DEMO_CONFIGS["lm"][1],
    retrain_codec: bool = False,
) -> dict[str, Any]:
    """Demo audio, autoencoder (trained once, then reused), model, report; returns the
    report."""
    import sys

    from lightning.pytorch.utilities.exceptions import SIGTERMException

    arguments = sys.argv
    sys.argv = sys.argv[:1]  # the fits below get their own arguments, not `demo`'s
    try:
        return _run_demo(codec_config, model_config, retrain_codec)
    except SIGTERMException:  # a fit stopped by SIGTERM or Ctrl+C, its checkpoint saved
        print("== the demo stopped before its report; `lightning-sdm demo` runs it again",
              file=sys.stderr, flush=True)  # fmt: skip
        raise
    finally:
        sys.argv = arguments


def _run_demo(codec_config: str, model_config: str, retrain_codec: bool) -> dict[str, Any]:
    import shutil

    from lightning_sdm.atomic import replace_directory
    from lightning_sdm.callbacks.codec_export import SaveCodec
    from lightning_sdm.callbacks.samples import SampleGeneration
    from lightning_sdm.cli.fit import run_training_cli

    codec_path, model_path = find_config(codec_config), find_config(model_config)
    codec_dir = codec_target(codec_path)
    model = yaml.safe_load(model_path.read_text(encoding="utf-8"))
    data = _init_args(model, "data")
    shards = Path(data["train_dir"])
    write_demo_audio(Path(data["prepare_from"]))
    if not retrain_codec and bring_bundled_autoencoder(codec_dir):
        print(f"== copied the checkout's bundled autoencoder to {codec_dir}", flush=True)
    if retrain_codec or not (codec_dir / "config.json").is_file():
        print(f"== 1/3 training the demo's autoencoder ({codec_path})", flush=True)
        codec_cli = run_training_cli(["fit", "--config", str(codec_path)])
        saver = next(c for c in codec_cli.trainer.callbacks if isinstance(c, SaveCodec))
        retrained = saver.saved
        if saver.kept is not None and retrained is not None:  # the demo's own, retrained
            print(f"== the demo takes the retrained autoencoder into {codec_dir}", flush=True)
            replace_directory(
                codec_dir, lambda new: shutil.copytree(retrained, new, dirs_exist_ok=True)
            )
        if shards.exists():  # an earlier autoencoder's shards: made again below
            shutil.rmtree(shards)
    else:
        print(
            f"== 1/3 using the demo's autoencoder at {codec_dir} (--retrain_codec to train it "
            "again)"
        )
    print(f"== 2/3 training the model on its shards ({model_path})", flush=True)
    cli = run_training_cli(["fit", "--config", str(model_path)])
    sampler = next(c for c in cli.trainer.callbacks if isinstance(c, SampleGeneration))
    if not sampler.written:
        raise RuntimeError("the model's run wrote no samples to report on")
    sample_dir = Path(sampler.written[-1]).parent
    run_dir = sample_dir.parent.parent
    print("== 3/3 measuring the autoencoder and the samples", flush=True)
    report = demo_report(
        run_dir,
        codec_dir,
        Path(data["prepare_from"]),
        list(sampler.prompts),
        sample_dir,
        float(data["val_fraction"]),
    )
    print(format_report(report))
    return report
