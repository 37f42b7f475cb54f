"""`lightning-sdm`: train, tokenize, generate, export, inspect patterns."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from typing import NoReturn

from lightning_sdm.patterns import PATTERN_NAMES, SCHEDULE_NAMES


def _add_patterns(commands: argparse._SubParsersAction) -> None:
    patterns = commands.add_parser("patterns", help="inspect codebook patterns")
    sub = patterns.add_subparsers(dest="patterns_command", required=True)
    show = sub.add_parser("show", help="draw a pattern's steps, plan and visibility")
    show.add_argument("--pattern", choices=PATTERN_NAMES, default="stack_delay")
    show.add_argument("--k", type=int, default=1, help="interleave of stack-delay / interleaved")
    show.add_argument(
        "--schedule", choices=SCHEDULE_NAMES, default=None, help="override the schedule"
    )
    show.add_argument("--T", type=int, default=8, help="timesteps")
    show.add_argument("--C", type=int, default=4, help="codebook levels")
    show.add_argument("--no-matrix", action="store_true", help="skip the visibility matrix")
    table = sub.add_parser("table", help="decoding steps and cache keys of every pattern")
    table.add_argument("--T", type=int, default=1500)
    table.add_argument("--C", type=int, default=4)
    table.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _add_generate(commands: argparse._SubParsersAction) -> None:
    generate = commands.add_parser("generate", help="generate token grids from a saved model")
    generate.add_argument(
        "--model", required=True, help="directory written by save_pretrained/export"
    )
    generate.add_argument(
        "--prompt", action="append", required=True, help="caption; repeat for a batch"
    )
    generate.add_argument("--timesteps", type=int, default=1500, help="frames to generate (50 Hz)")
    generate.add_argument("--output-dir", default="generated", help="codes.pt and wav files")
    generate.add_argument("--codec-dir", default=None, help="codec (default: MODEL/codec)")
    _add_sampling_arguments(generate)


def _add_export(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser(
        "export", help="checkpoint -> model directory (EMA weights, safetensors + JSON)"
    )
    export.add_argument("--ckpt", required=True, help="a checkpoint written by `fit`")
    export.add_argument("--output", required=True, help="directory to write")
    export.add_argument("--codec-dir", default=None, help="copy this codec in, for wav output")


def _add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=250)
    parser.add_argument("--top-p", type=float, default=0.0)
    parser.add_argument("--cfg", type=float, default=3.0, help="classifier-free guidance scale")
    parser.add_argument("--seed", type=int, default=None)


def _add_tokenize(commands: argparse._SubParsersAction) -> None:
    tokenize = commands.add_parser(
        "tokenize",
        help="encode audio + captions into EnCodec token shards (resumable)",
        description="Input: a folder with x.wav + x.txt/x.json sidecars, an audiocraft JSONL "
        "manifest, or a CSV with path,caption columns. Output: shard-NNNNNN.tar + index.json. "
        "A rerun of the same command adds only what is new.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    tokenize.add_argument("input", help="folder, .jsonl or .csv")
    tokenize.add_argument("output", help="folder for the shards and index.json")
    codec = tokenize.add_mutually_exclusive_group(required=True)
    codec.add_argument("--codec-dir", default=None, help="local facebook/encodec_32khz copy")
    codec.add_argument(
        "--random-codec",
        type=int,
        default=None,
        metavar="SEED",
        help="a small random codec from SEED, saved in OUTPUT/codec and reused on reruns "
        "(tests and demos: its tokens are not music)",
    )
    tokenize.add_argument("--min-seconds", type=float, default=1.0, help="reject shorter audio")
    tokenize.add_argument("--latents", action="store_true", help="also store continuous latents")
    tokenize.add_argument(
        "--allow-missing-captions", action="store_true", help="keep audio without captions"
    )
    tokenize.add_argument("--shard-items", type=int, default=1000, help="items per shard at most")
    tokenize.add_argument("--shard-mb", type=float, default=512, help="shard size bound in MB")
    tokenize.add_argument("--workers", type=int, default=1, help="audio decoding workers")
    tokenize.add_argument("--accelerator", default="auto", help="Lightning accelerator")
    tokenize.add_argument("--devices", default="1", help="devices per node")
    tokenize.add_argument("--num-nodes", type=int, default=1, help="nodes")
    tokenize.add_argument("--strategy", default="auto", help="Lightning strategy (e.g. ddp)")
    tokenize.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_plot(commands: argparse._SubParsersAction) -> None:
    plot = commands.add_parser(
        "plot",
        help="draw a run's loss curves from its metrics.csv (no network needed)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    plot.add_argument("run", help="a run folder (runs/NAME/version_N) or its metrics.csv")
    plot.add_argument("--output", default=None, help="PNG to write (default: beside the CSV)")


class _ErrorFirstParser(argparse.ArgumentParser):
    """The error and where help is, not the whole usage (as `fit` does)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}\nall options: {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _ErrorFirstParser(
        prog="lightning-sdm",
        description=__doc__,
        epilog="Training: lightning-sdm fit|validate|test|predict --config CONFIG.yaml "
        "(LightningCLI; see `lightning-sdm fit --help`).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _add_patterns(commands)
    _add_generate(commands)
    _add_tokenize(commands)
    _add_export(commands)
    _add_plot(commands)
    return parser


def _run_patterns(args: argparse.Namespace) -> int:
    from lightning_sdm.patterns import make_pattern
    from lightning_sdm.patterns.render import format_table, render, table_rows

    if args.T < 1 or args.C < 1:
        raise SystemExit("error: --T and --C must be >= 1")
    if args.patterns_command == "table":
        rows = table_rows(args.T, args.C)
        print(json.dumps(rows, indent=2) if args.json else format_table(rows))
        return 0
    pattern = make_pattern(args.pattern, k=args.k, schedule=args.schedule)
    print(render(pattern, pattern.layout(args.T, args.C), show_matrix=not args.no_matrix))
    return 0


def _one_line_warning(message: Warning | str, *args: object, **kwargs: object) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _run_generate(args: argparse.Namespace) -> int:
    from lightning_sdm.generation import LongerThanTrainedWarning, generate_to_dir
    from lightning_sdm.models.sampling import SamplingConfig

    sampling = SamplingConfig(
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, cfg_scale=args.cfg
    )
    with warnings.catch_warnings():
        warnings.simplefilter("always", LongerThanTrainedWarning)
        warnings.showwarning = _one_line_warning  # at once, before the long generation
        report = generate_to_dir(
            args.model,
            args.prompt,
            args.timesteps,
            sampling,
            args.seed,
            args.output_dir,
            args.codec_dir,
        )
    print(report)
    return 0


def _run_export(args: argparse.Namespace) -> int:
    from lightning_sdm.export import export_checkpoint

    output = export_checkpoint(args.ckpt, args.output, args.codec_dir)
    print(f"exported {args.ckpt} to {output}")
    return 0


def _run_plot(args: argparse.Namespace) -> int:
    from lightning_sdm.plots import plot_metrics

    print(f"wrote {plot_metrics(args.run, args.output)}")
    return 0


def _run_tokenize(args: argparse.Namespace) -> int:
    from lightning_sdm.codecs import CodecConfig
    from lightning_sdm.data.tokenize import TokenizeConfig, tokenize

    devices = int(args.devices) if args.devices.isdigit() else args.devices
    summary = tokenize(
        TokenizeConfig(
            input=args.input,
            output=args.output,
            codec=CodecConfig(pretrained=args.codec_dir),
            random_codec_seed=args.random_codec,
            min_seconds=args.min_seconds,
            keep_latents=args.latents,
            allow_missing_captions=args.allow_missing_captions,
            max_shard_items=args.shard_items,
            max_shard_bytes=int(args.shard_mb * 1024 * 1024),
            num_workers=args.workers,
            accelerator=args.accelerator,
            devices=devices,
            num_nodes=args.num_nodes,
            strategy=args.strategy,
            progress=not args.no_progress,
        )
    )
    if not summary.reporting:
        return 0  # another rank wrote the index and reports
    print(summary)
    if not summary.ok:
        print("error: nothing could be tokenized", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from lightning_sdm.errors import UserInputError
    from lightning_sdm.quiet import quiet_dependencies

    quiet_dependencies()
    words = list(sys.argv[1:] if argv is None else argv)
    if words and words[0] in ("fit", "validate", "test", "predict"):
        from lightning_sdm.training_cli import run_training_cli

        try:
            run_training_cli(None if argv is None else words)  # None: LightningCLI reads argv
        except UserInputError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        return 0
    args = build_parser().parse_args(words)
    handlers = {
        "patterns": _run_patterns,
        "generate": _run_generate,
        "tokenize": _run_tokenize,
        "export": _run_export,
        "plot": _run_plot,
    }
    try:
        return handlers[args.command](args)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
