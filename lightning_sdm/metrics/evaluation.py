"""`lightning-sdm evaluate`: a folder of generated clips against a reference set, with the
metrics whose backends are given, into a JSON report and a Markdown table."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from lightning_sdm.atomic import write_text_atomically
from lightning_sdm.data.audio import AudioRejected, load_mono
from lightning_sdm.data.sources import SourceItem, caption_from_info, discover
from lightning_sdm.data.storage import ShardLocation, is_url
from lightning_sdm.errors import UserInputError

METRICS = ("fad", "kld", "clap", "rtf")
# Which model directory each metric needs, for the messages when one is missing.
BACKENDS = {
    "fad": (
        "--vggish_weights, --codec_dir or --clap_dir",
        "VGGish weights, an EnCodec directory or a CLAP directory (--fad_on picks one)",
    ),
    "kld": ("--ast_dir", "an AudioSet-finetuned AST (ASTForAudioClassification)"),
    "clap": ("--clap_dir", "a CLAP model (ClapModel), e.g. laion/larger_clap_music"),
}
LOAD_RATE = 48000  # clips are read once at this rate; each backend resamples to its own


@dataclass
class MetricResult:
    metric: str
    value: float
    interval: tuple[float, float] | None
    clips: int
    backend: str
    details: dict[str, Any]


@dataclass
class Clip:
    key: str
    caption: str | None
    wav: torch.Tensor  # mono at LOAD_RATE
    sidecar: dict[str, Any]


def read_clips(
    source: str | Path,
    what: str,
    limit: int | None = None,
    codec_dir: str | None = None,
    left_out: list[str] | None = None,
) -> list[Clip]:
    """Clips from a folder of audio, a JSONL/CSV manifest, or token shards (decoded with
    `codec_dir`, else the codec the shards' index names). A file that cannot be read is
    left out, said, and named in `left_out`: one torn file in a reference set of
    thousands should not stop an evaluation (as it does not stop tokenize)."""
    if is_url(source):  # only shards live at URLs
        location = ShardLocation(source)
        problem = location.problem("index.json")
        if problem:
            raise UserInputError(f"{what}: {source} {problem}")
        return read_shard_clips(location, what, limit, codec_dir)
    if (Path(source) / "index.json").is_file():
        return read_shard_clips(ShardLocation(source), what, limit, codec_dir)
    try:
        items = discover(source, allow_missing_captions=True)
    except (FileNotFoundError, ValueError) as error:
        raise UserInputError(f"{what}: {error}") from error
    usable = [item for item in items if item.problem is None][:limit]
    if not usable:
        raise UserInputError(f"{what}: no audio clips found in {source}")
    clips, unreadable = [], []
    for item in usable:
        try:
            clips.append(_load(item))
        except AudioRejected as error:
            unreadable.append(f"{item.path}: {error}")
    if not clips:
        raise UserInputError(f"{what}: none of the {len(usable)} audio files in {source} reads")
    if unreadable:
        more = f"; and {len(unreadable) - 3} more" if len(unreadable) > 3 else ""
        shown = "; ".join(unreadable[:3]) + more
        print(
            f"{what}: left out {len(unreadable)} of {len(usable)} files that do not read ({shown})"
        )
    if left_out is not None:
        left_out.extend(unreadable)
    return clips


def read_shard_clips(
    directory: ShardLocation, what: str, limit: int | None, codec_dir: str | None
) -> list[Clip]:
    from lightning_sdm.codecs import CodecConfig, load_codec
    from lightning_sdm.data.shards import INDEX_FILE, read_shard
    from lightning_sdm.metrics.embedders import resample

    index = directory.read_json(INDEX_FILE)
    named = _codec_named_by(index)
    path = codec_dir or named
    if not _codec_at_hand(path):
        raise UserInputError(
            f"{what}: {directory} holds tokens; decoding them needs their codec "
            f"({named or 'not named in index.json'} is not at hand): pass --codec_dir"
        )
    codec = load_codec(CodecConfig(pretrained=str(path)))
    clips: list[Clip] = []
    for entry in index["shards"]:
        for sample in read_shard(directory.path(entry["shard"])):
            if limit is not None and len(clips) >= limit:
                return clips
            codes = torch.from_numpy(sample["codes"].astype("int64"))[None]
            wav = codec.decode(codes.to(codec.device))[0].cpu()
            caption = caption_from_info(sample["info"]) or None
            clips.append(
                Clip(sample["key"], caption, resample(wav, codec.sample_rate, LOAD_RATE), {})
            )
    if not clips:
        raise UserInputError(f"{what}: no items in the shards of {directory}")
    return clips


def _codec_of_shards(reference: str | Path) -> str | None:
    """The codec a reference folder of shards names in its index, where it is at hand: the
    one whose latents `--fad_on codec` embeds unless `--codec_dir` says otherwise."""
    if not reference:
        return None
    try:
        named = _codec_named_by(ShardLocation(reference).read_json("index.json"))
    except Exception:  # not shards, or unreadable: the usual message asks for --codec_dir
        return None
    if not _codec_at_hand(named):
        return None
    print(f"fad: on the latents of {named}, the codec {reference} names (--codec_dir to choose)")
    return named


def _codec_of_generated(generated: str | Path) -> str | None:
    """The codec generate decoded the set with, as its sidecars name it, where they agree
    and it is at hand: the latents `--fad_on codec` embeds when the reference is audio."""
    named = set()
    for sidecar in sorted(Path(generated).glob("*.json")):
        try:
            model = json.loads(sidecar.read_text(encoding="utf-8")).get("model") or {}
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(model, dict) and model.get("codec"):
            named.add(str(model["codec"]))
    if len(named) != 1 or not _codec_at_hand(next(iter(named))):
        return None
    (codec,) = named
    print(f"fad: on the latents of {codec}, which decoded {generated} (--codec_dir to choose)")
    return codec


def _codec_named_by(index: dict[str, Any]) -> str | None:
    """The codec directory a shard index records (tokenize writes it absolute)."""
    return index.get("codec", {}).get("pretrained")


def _codec_at_hand(path: str | None) -> bool:
    return bool(path) and (Path(str(path)) / "config.json").is_file()


def _load(item: SourceItem) -> Clip:
    audio = load_mono(item.path, LOAD_RATE)
    sidecar_path = item.path.with_suffix(".json")
    sidecar = json.loads(sidecar_path.read_text(encoding="utf-8")) if sidecar_path.is_file() else {}
    return Clip(item.key, item.caption, torch.from_numpy(audio.samples), sidecar)


def evaluate_folders(
    generated: str | Path,
    reference: str | Path,
    metrics: list[str],
    codec_dir: str | None = None,
    ast_dir: str | None = None,
    clap_dir: str | None = None,
    skip_missing: bool = False,
    bootstrap: int = 0,
    vggish_weights: str | None = None,
    fad_on: str | None = None,
    kld_activation: str = "softmax",
) -> list[MetricResult]:
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise UserInputError(f"unknown metrics {unknown}; choose from {list(METRICS)}")
    if codec_dir is None and fad_on == "codec":
        codec_dir = _codec_of_shards(reference) or _codec_of_generated(generated)
    fad_sources = {"vggish": vggish_weights, "codec": codec_dir, "clap": clap_dir}
    if fad_on is not None and fad_on not in fad_sources:
        raise UserInputError(f"--fad_on must be one of {list(fad_sources)}, got {fad_on!r}")
    if fad_on is not None and fad_sources[fad_on] is None:
        flag = {"vggish": "--vggish_weights", "codec": "--codec_dir", "clap": "--clap_dir"}
        raise UserInputError(f"--fad_on {fad_on} needs {flag[fad_on]}")
    # default: the literature's VGGish, else the codec's latents (CLAP only when asked)
    fad_kind = fad_on or next((k for k in ("vggish", "codec") if fad_sources[k]), None)
    fad_dir = fad_sources.get(fad_kind)
    directories = {"fad": fad_dir, "kld": ast_dir, "clap": clap_dir}
    missing = [m for m in metrics if m in BACKENDS and directories[m] is None]
    if missing and not skip_missing:
        needs = "; ".join(f"{m} needs {BACKENDS[m][0]} ({BACKENDS[m][1]})" for m in missing)
        raise UserInputError(f"{needs}. Pass them, or --skip_missing to leave those out")
    chosen = [m for m in metrics if m not in missing]
    left_out: dict[str, list[str]] = {"generated": [], "reference": []}
    fakes = read_clips(generated, "generated", left_out=left_out["generated"])
    needs_reference = any(m in ("fad", "kld") for m in chosen)
    reals = (
        read_clips(reference, "reference", codec_dir=codec_dir, left_out=left_out["reference"])
        if needs_reference
        else []
    )
    runs = {
        "fad": lambda: score_fad(fakes, reals, fad_embedder(fad_kind, fad_dir), bootstrap),
        "kld": lambda: score_kld(fakes, reals, _classifier(ast_dir), bootstrap, kld_activation),
        "clap": lambda: score_clap(fakes, _clap_embedder(clap_dir), bootstrap),
        "rtf": lambda: score_rtf(fakes, bootstrap),
    }  # fmt: skip
    results = [runs[metric]() for metric in chosen]
    for result in results:  # the report names the files each number lacks
        sources = ("generated", "reference") if result.metric in ("fad", "kld") else ("generated",)
        unread = {what: left_out[what] for what in sources if left_out[what]}
        if unread:
            result.details["left_out"] = unread
    for metric in missing:
        print(f"skipped {metric}: no {BACKENDS[metric][0]} given")
    return results


def fad_embedder(kind: str, path: str):
    """The FAD embedder: "vggish" (weights file), "clap" or "codec" (directories)."""
    from lightning_sdm.codecs import CodecConfig, load_codec
    from lightning_sdm.metrics.embedders import ClapEmbedder, CodecLatentEmbedder
    from lightning_sdm.metrics.vggish import VGGishEmbedder

    if kind == "vggish":
        return VGGishEmbedder(path)
    if kind == "clap":
        return ClapEmbedder(path)
    return CodecLatentEmbedder(load_codec(CodecConfig(pretrained=path)))


def _classifier(directory: str):
    from lightning_sdm.metrics.embedders import ASTClassifier

    return ASTClassifier(directory)


def _clap_embedder(directory: str):
    from lightning_sdm.metrics.embedders import ClapEmbedder

    return ClapEmbedder(directory)


def _interval(values: torch.Tensor, bootstrap: int) -> tuple[float, float] | None:
    from lightning_sdm.metrics.text_audio import bootstrap_interval

    return bootstrap_interval(values, samples=bootstrap) if bootstrap and len(values) > 1 else None


def score_fad(fakes: list[Clip], reals: list[Clip], embedder, bootstrap: int) -> MetricResult:
    from lightning_sdm.metrics.frechet import FrechetAudioDistance

    metric = FrechetAudioDistance(embedder)
    metric.update([c.wav for c in reals], LOAD_RATE, real=True)
    metric.update([c.wav for c in fakes], LOAD_RATE, real=False)
    result = metric.compute()
    # resampling one clip draws that clip every time: an interval of zero width, not a spread
    interval = _fad_interval(metric, fakes, bootstrap) if bootstrap and len(fakes) > 1 else None
    details: dict[str, Any] = {k: int(v) for k, v in result.items() if k != "fad"}
    fewest = min(details["real_frames"], details["fake_frames"])
    if fewest <= embedder.dim:  # a covariance of rank < dim: FAD is far above its limit
        details["note"] = (
            f"FAD from {fewest} embedding frames of {embedder.dim} dimensions: the covariance "
            "is singular and the value is biased upward by the set's size; use more or "
            "longer clips, and compare systems only at equal clip counts and lengths"
        )
    elif min(len(fakes), len(reals)) < 2:
        details["note"] = (
            f"FAD of {len(fakes)} generated against {len(reals)} reference clip(s): one clip's "
            "frames stand in for a whole set, so the value says little about a system (and "
            "one generated clip has no interval); score several clips on each side"
        )
    return MetricResult("fad", float(result["fad"]), interval, len(fakes), embedder.name, details)


def _fad_interval(metric, fakes: list[Clip], bootstrap: int) -> tuple[float, float]:
    """Percentile interval of FAD over resamplings of the generated clips (the reference
    moments fixed): how much the number moves with the evaluation set."""
    from lightning_sdm.metrics.embedders import resample
    from lightning_sdm.metrics.frechet import frechet_distance
    from lightning_sdm.metrics.text_audio import percentile_interval

    rate = metric.embedder.sample_rate
    frames = metric.embedder.embed([resample(c.wav, LOAD_RATE, rate) for c in fakes])
    frames = [f.double() for f in frames]
    mean_real, cov_real = metric.moments("real")
    generator = torch.Generator().manual_seed(0)
    values = []
    for _ in range(bootstrap):
        picks = torch.randint(0, len(frames), (len(frames),), generator=generator)
        stacked = torch.cat([frames[i] for i in picks])
        values.append(
            float(frechet_distance(mean_real, cov_real, stacked.mean(0), stacked.T.cov()))
        )
    return percentile_interval(torch.tensor(values))


def score_kld(
    fakes: list[Clip],
    reals: list[Clip],
    classifier,
    bootstrap: int,
    activation: str = "softmax",
) -> MetricResult:
    """KLD over the generated clips whose prompt is a reference clip's caption."""
    from lightning_sdm.metrics.text_audio import KLDivergence

    by_caption = {c.caption: c for c in reals if c.caption}
    pairs = [(f, by_caption[f.caption]) for f in fakes if f.caption in by_caption]
    if not pairs:
        example = next((f.caption for f in fakes if f.caption), None)
        raise UserInputError(
            "kld pairs each generated clip with the reference clip whose caption is its "
            f"prompt, and found no such pair (no reference is captioned {example!r}); "
            "generate from the reference captions, or leave kld out with --metrics"
        )
    metric = KLDivergence(classifier, activation=activation)
    metric.update([f.wav for f, _ in pairs], [r.wav for _, r in pairs], LOAD_RATE)
    per_clip = torch.cat(metric.per_clip)
    details = {
        "pairs": len(pairs),
        "unpaired_generated": len(fakes) - len(pairs),
        "activation": activation,
    }
    return MetricResult(
        "kld", float(metric.compute()), _interval(per_clip, bootstrap), len(pairs),
        classifier.name, details,
    )  # fmt: skip


def score_clap(fakes: list[Clip], clap, bootstrap: int) -> MetricResult:
    from lightning_sdm.metrics.text_audio import CLAPScore

    captioned = [c for c in fakes if c.caption]
    if not captioned:
        raise UserInputError("clap needs the prompts: generate's JSON sidecars or .txt captions")
    metric = CLAPScore(clap)
    metric.update([c.wav for c in captioned], [str(c.caption) for c in captioned], LOAD_RATE)
    per_clip = torch.cat(metric.per_clip)
    return MetricResult(
        "clap", float(metric.compute()), _interval(per_clip, bootstrap), len(captioned),
        clap.name, {"without_prompt": len(fakes) - len(captioned)},
    )  # fmt: skip


def score_rtf(fakes: list[Clip], bootstrap: int) -> MetricResult:
    from lightning_sdm.metrics.text_audio import RealTimeFactor, percentile_interval

    timed = [c for c in fakes if "batch_wall_s" in c.sidecar and "batch_rows" in c.sidecar]
    if not timed:
        raise UserInputError("rtf reads generate's JSON sidecars (batch_wall_s); none found")
    metric = RealTimeFactor()
    # each clip's share of its batch's wall time, and its seconds
    walls = torch.tensor([c.sidecar["batch_wall_s"] / c.sidecar["batch_rows"] for c in timed])
    seconds = torch.tensor([float(c.sidecar["seconds"]) for c in timed])
    for wall, audio in zip(walls.tolist(), seconds.tolist(), strict=True):
        metric.update(wall, audio)
    interval = None
    if bootstrap and len(timed) > 1:  # the ratio of sums over resampled clips
        generator = torch.Generator().manual_seed(0)
        picks = torch.randint(0, len(timed), (bootstrap, len(timed)), generator=generator)
        interval = percentile_interval(walls[picks].sum(1) / seconds[picks].sum(1))
    return MetricResult(
        "rtf", float(metric.compute()), interval, len(timed), "generate sidecars",
        {"wall_s": float(metric.wall_s), "audio_s": float(metric.audio_s)},
    )  # fmt: skip


REPORT_FILES = ("evaluation.json", "evaluation.md")


def check_report_folder(output: str | Path, overwrite: bool) -> None:
    """Refuse, before any scoring, to write over an earlier evaluation unless told."""
    earlier = Path(output) / REPORT_FILES[0]
    if earlier.is_file() and not overwrite:
        try:
            scored = json.loads(earlier.read_text(encoding="utf-8"))["inputs"]["generated"]
            what = f" (of {scored})"
        except (OSError, ValueError, KeyError, TypeError):
            what = ""
        raise UserInputError(
            f"{earlier} holds an earlier evaluation{what}: pass --overwrite to replace it, or "
            "--output another folder"
        )


def write_report(results: list[MetricResult], output: str | Path, inputs: dict) -> Path:
    """Both files written whole (a kill mid-write leaves the earlier ones, not halves)."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    payload = {"inputs": inputs, "metrics": [asdict(r) for r in results]}
    write_text_atomically(output / REPORT_FILES[0], json.dumps(payload, indent=2))
    write_text_atomically(output / REPORT_FILES[1], markdown_table(results) + "\n")
    return output


def markdown_table(results: list[MetricResult]) -> str:
    lines = [
        "| metric | value | 95 % interval | clips | backend |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        interval = f"{r.interval[0]:.4g} – {r.interval[1]:.4g}" if r.interval else ""
        lines.append(f"| {r.metric} | {r.value:.4g} | {interval} | {r.clips} | {r.backend} |")
    notes = [f"- {r.metric}: {r.details['note']}" for r in results if r.details.get("note")]
    notes += _left_out_notes(results)
    return "\n".join(lines + (["", *notes] if notes else []))


def _left_out_notes(results: list[MetricResult]) -> list[str]:
    """How many files of each source the numbers lack (evaluation.json names them)."""
    left_out: dict[str, set[str]] = {}
    for result in results:
        for source, files in result.details.get("left_out", {}).items():
            left_out.setdefault(source, set()).update(files)
    if not left_out:
        return []
    counts = " and ".join(f"{len(files)} {source}" for source, files in left_out.items())
    return [f"- left out: {counts} files that do not read (named in evaluation.json)"]
