"""Tokenize throughput: the whole pipeline against the bare codec encode, in one run.

    python benchmarks/tokenize_throughput.py [--files 8 --seconds 20 --codec-size full]

The pipeline (decode, downmix, resample, encode, shard writing, Lightning predict loop)
should reach at least 85 % of the bare encode rate on the same audio. Also prints the
DataModule's batches/s over the shards it wrote. `--codec-size full` builds a random codec
with facebook/encodec_32khz's sizes so the encode cost is realistic; `--codec-dir` loads
real weights from a local directory.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from lightning_sdm.codecs import TINY_ENCODEC_32KHZ, CodecConfig, EncodecCodec
from lightning_sdm.data.audio import load_mono
from lightning_sdm.data.datamodule import TokenShardsDataModule
from lightning_sdm.data.tokenize import TokenizeConfig, tokenize
from lightning_sdm.machine import machine_line

FULL_SIZE = {**TINY_ENCODEC_32KHZ, "num_filters": 64, "hidden_size": 128, "codebook_dim": 128}


def write_audio(folder: Path, files: int, seconds: float) -> None:
    rng = np.random.default_rng(0)
    for index in range(files):
        rate = (44100, 48000, 16000)[index % 3]
        t = np.arange(int(rate * seconds)) / rate
        melody = sum(0.2 * np.sin(2 * np.pi * f * t) for f in rng.uniform(110, 880, 3))
        stereo = np.stack([melody, melody + 0.01 * rng.standard_normal(t.shape[0])], axis=1)
        sf.write(folder / f"track{index:03d}.flac", stereo, rate)
        (folder / f"track{index:03d}.txt").write_text(f"three sines, take {index}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--codec-size", choices=["tiny", "full"], default="full")
    parser.add_argument("--codec-dir", default=None)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--loader-epochs", type=int, default=50)
    args = parser.parse_args()
    sizes = FULL_SIZE if args.codec_size == "full" else TINY_ENCODEC_32KHZ
    config = CodecConfig(pretrained=args.codec_dir, encodec_config=sizes)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        (root / "audio").mkdir()
        write_audio(root / "audio", args.files, args.seconds)
        torch.manual_seed(0)
        codec = EncodecCodec(config)
        codec_dir = root / "codec"
        codec.save_pretrained(codec_dir)  # both sides load the same weights from disk
        config = CodecConfig(pretrained=str(codec_dir))
        codec = EncodecCodec(config)

        tracks = [
            load_mono(p, codec.sample_rate).samples for p in sorted((root / "audio").glob("*.flac"))
        ]
        audio_seconds = sum(t.shape[0] for t in tracks) / codec.sample_rate
        with torch.inference_mode():  # what Lightning's predict loop runs under
            codec.encode(torch.from_numpy(tracks[0][: codec.sample_rate])[None])  # warm-up
            start = time.perf_counter()
            for track in tracks:
                codec.encode(torch.from_numpy(track)[None])
            bare = audio_seconds / (time.perf_counter() - start)

        start = time.perf_counter()
        summary = tokenize(
            TokenizeConfig(
                input=str(root / "audio"),
                output=str(root / "shards"),
                codec=config,
                num_workers=args.workers,
                accelerator="cpu",
                progress=False,
                max_shard_items=4,
            )
        )
        pipeline = audio_seconds / (time.perf_counter() - start)
        assert summary.total_items == args.files, summary

        module = TokenShardsDataModule(
            str(root / "shards"), batch_size=4, num_workers=args.workers, segment_seconds=10.0
        )
        loader = module.make_loader("train", 0, 1)
        start = time.perf_counter()
        batches = sum(1 for _epoch in range(args.loader_epochs) for _batch in loader)
        loader_rate = batches / (time.perf_counter() - start)

    print(
        f"{args.files} files x {args.seconds:.0f} s (44.1/48/16 kHz stereo flac), codec "
        f"{args.codec_size if not args.codec_dir else args.codec_dir}, "
        f"{args.workers} decode worker(s); {machine_line()}"
    )
    print(f"{'stage':<34}{'audio s / s':>12}")
    print(f"{'bare codec encode (in memory)':<34}{bare:>12.1f}")
    print(f"{'whole tokenize pipeline':<34}{pipeline:>12.1f}")
    print(f"pipeline / bare encode: {pipeline / bare:.1%} (target >= 85%)")
    print(
        f"DataModule: {batches} batches of 4 x 10 s crops in {batches / loader_rate:.2f} s "
        f"= {loader_rate:.1f} batches/s"
    )


if __name__ == "__main__":
    main()
