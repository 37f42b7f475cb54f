"""The commands besides training, as typed functions: the CLI is built from their signatures.

Each parameter's type and default become an option (`--codec.pretrained`,
`--sampling.top_k`) and its line in the docstring the help; every command takes
`--config x.yaml` and prints its whole configuration with `--print_config`.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from lightning_sdm.codecs import CodecConfig
from lightning_sdm.errors import UserInputError
from lightning_sdm.models.lm import DEPTH_DECODER
from lightning_sdm.models.sampling import DiffusionSamplingConfig, SamplingConfig
from lightning_sdm.patterns import PATTERN_NAMES, SCHEDULE_NAMES

PatternName = Literal[tuple(PATTERN_NAMES)]  # type: ignore[valid-type]
ScheduleName = Literal[tuple(SCHEDULE_NAMES)]  # type: ignore[valid-type]
DecoderName = Literal[DEPTH_DECODER]  # type: ignore[valid-type]


def tokenize(
    input: str,
    output: str,
    codec: CodecConfig = CodecConfig(),  # noqa: B008 - frozen dataclass
    random_codec: int | None = None,
    min_seconds: float = 1.0,
    latents: bool = False,
    allow_missing_captions: bool = False,
    shard_items: int = 1000,
    shard_mb: float = 512.0,
    workers: int = 1,
    accelerator: str = "auto",
    devices: int | str = 1,
    num_nodes: int = 1,
    strategy: str = "auto",
    progress: bool = True,
) -> int:
    """Encode audio + captions into token (EnCodec) or latent (EnCodec, waveform VAE) shards
    (resumable: a rerun adds only what is new). Input: a folder of x.wav + x.txt/x.json
    sidecars, an audiocraft JSONL manifest or a CSV with path,caption columns. Output:
    shard-NNNNNN.tar + index.json.

    Args:
        input: Folder, .jsonl or .csv.
        output: Folder for the shards and index.json, or an s3:// or gs:// URL (shards are
            uploaded as they are made; a rerun resumes from what the bucket holds).
        codec: The codec; codec.pretrained (alias --codec-dir) is a local copy of
            facebook/encodec_32khz, another EnCodec directory, or a waveform VAE directory
            (latents only: with --latents true).
        random_codec: Instead, a small random codec from this seed, saved in OUTPUT/codec
            and reused on reruns (tests and demos: its tokens are not music).
        min_seconds: Reject shorter audio.
        latents: Also store continuous latents (EnCodec's pre-quantization ones, a VAE's
            posterior mean), float16.
        allow_missing_captions: Keep audio without captions.
        shard_items: Items per shard at most.
        shard_mb: Shard size bound in MB.
        workers: Audio decoding workers per device.
        accelerator: Lightning accelerator.
        devices: Devices per node.
        num_nodes: Nodes.
        strategy: Lightning strategy (e.g. ddp).
        progress: Show a progress bar.
    """
    from lightning_sdm.data.tokenize import TokenizeConfig
    from lightning_sdm.data.tokenize import tokenize as run_tokenize

    for option, value, least in (
        ("--shard_items", shard_items, 1), ("--workers", workers, 0),
        ("--num_nodes", num_nodes, 1), ("--min_seconds", min_seconds, 0),
    ):  # fmt: skip
        if value < least:
            raise UserInputError(f"{option} must be at least {least}, got {value}")
    if int(shard_mb * 1024 * 1024) < 1:
        raise UserInputError(f"--shard_mb must be at least one byte (1e-6), got {shard_mb}")
    if isinstance(devices, int) and (devices == 0 or devices < -1):
        raise UserInputError(f"--devices must be a count (1 or more), -1 or auto, got {devices}")
    summary = run_tokenize(
        TokenizeConfig(
            input=input,
            output=output,
            codec=codec,
            random_codec_seed=random_codec,
            min_seconds=min_seconds,
            keep_latents=latents,
            allow_missing_captions=allow_missing_captions,
            max_shard_items=shard_items,
            max_shard_bytes=int(shard_mb * 1024 * 1024),
            num_workers=workers,
            accelerator=accelerator,
            devices=devices,
            num_nodes=num_nodes,
            strategy=strategy,
            progress=progress,
        )
    )
    if not summary.reporting:
        return 0  # another rank wrote the index and reports
    print(summary)
    if summary.stopped_by is not None:
        return 128 + summary.stopped_by  # the shell's code for that signal
    if not summary.ok:
        print("error: nothing could be tokenized", file=sys.stderr)
        return 1
    return 0


def _one_line_warning(message: Warning | str, *args: object, **kwargs: object) -> None:
    """On a line of its own, above any progress bar being drawn (tqdm's write)."""
    tqdm.write(f"warning: {message}", file=sys.stderr)


def generate(
    prompt: list[str] | None = None,
    model: str | None = None,
    ckpt: str | None = None,
    prompt_file: str | None = None,
    seconds: float = 10.0,
    timesteps: int | None = None,
    batch_size: int = 8,
    output_dir: str = "generated",
    codec_dir: str | None = None,
    sampling: SamplingConfig = SamplingConfig(),  # noqa: B008 - frozen dataclass
    diffusion: DiffusionSamplingConfig = DiffusionSamplingConfig(),  # noqa: B008
    cfg_scale: float | None = None,
    seed: int = 0,
    window_seconds: float | None = None,
    extend_stride: float | None = None,
    audio_prompt: str | None = None,
    progress: bool = True,
    precision: str = "fp32",
    pack_weights: bool | Literal["auto"] = "auto",
    spectrograms: bool = False,
    overwrite: bool = False,
) -> int:
    """Generate audio (a wav + JSON sidecar per prompt) and codes or latents from a model or
    checkpoint of either family (codebook LM or latent diffusion).

    Args:
        prompt: Captions; repeat --prompt for several.
        model: A directory written by `export` (or save_pretrained, or import).
        ckpt: Or a checkpoint written by `fit` (its EMA weights when it has them).
        prompt_file: More prompts: a text file (one per line) or a JSONL of
            {"prompt": ..., "seconds": ..., "seed": ...}.
        seconds: Duration of each sample, unless its JSONL line says otherwise.
        timesteps: Or the duration in codec frames (overrides seconds).
        batch_size: Prompts decoded together.
        output_dir: Where the wavs, sidecars, codes.pt (or latents.pt) and summary.json go.
        codec_dir: The codec that decodes to audio (default: MODEL/codec, or the codec the
            checkpoint's run trained on).
        sampling: Codebook LMs: temperature, top_k, top_p and cfg_scale (aliases
            --temperature, --top-k, --top-p).
        diffusion: Diffusion models: DDIM steps, cfg_scale, cfg_rescale (phi; EzAudio's
            final setting is --cfg 5 with 0.75) and eta.
        cfg_scale: Classifier-free guidance scale for either family (alias --cfg;
            default: 3).
        seed: Prompt i draws from seed + i unless its JSONL line gives a seed, so its output
            does not depend on the batch it lands in.
        window_seconds: Longest single generation; longer requests continue window by window
            (default: the crop length the model was trained on).
        extend_stride: New seconds per continuation window (default: 60 % of the window);
            the rest of the window is the previous audio, kept as the prompt.
        audio_prompt: A wav to continue (resampled to the codec's rate); its codes (LM) or
            latents (diffusion) are kept exactly.
        progress: Show a progress bar over decoding steps.
        precision: A codebook LM's weights while decoding: fp32, or bf16 (half the weight memory;
            faster for stack patterns where the CPU or GPU has bf16 matrix units; logits move
            by about 5 % of their spread, see benchmarks/decoding_speed.py).
        pack_weights: A codebook LM decoding on a CPU: auto times PyTorch's own matmuls
            against oneDNN over a packed copy of the weights (one more copy in memory while
            decoding) on this machine at the first decode and takes the faster; true or
            false forces one.
        spectrograms: Also write a spectrogram PNG beside each wav.
        overwrite: Replace an output folder that already holds files, whole (written beside
            it and swapped in, so no stale file of an earlier run stays to be paired with
            these); without it such a folder is refused before anything is generated.
    """
    from lightning_sdm.atomic import check_output_folder, write_bytes_naming, write_directory
    from lightning_sdm.families import family_of
    from lightning_sdm.families.registry import sampling_from_sections
    from lightning_sdm.folder_lock import output_lock
    from lightning_sdm.generation import (
        GenerationOptions,
        LongerThanTrainedWarning,
        generate_requests,
        load_source,
        read_prompts,
    )
    from lightning_sdm.generation.runner import SUMMARY_FILE

    inputs = [model, ckpt, codec_dir, audio_prompt, prompt_file]  # never deleted by overwrite
    # One generate per output folder, from before the model loads to the swap-in.
    with output_lock(output_dir, "generate"):
        check_output_folder(output_dir, overwrite, inputs)  # before an hour of decoding
        prompts = read_prompts(prompt, prompt_file, seed)  # a bad prompt file costs no model load
        source = load_source(model, ckpt, codec_dir)
        family = family_of(source.model)
        chosen = sampling_from_sections(family, {"sampling": sampling, "diffusion": diffusion})
        if timesteps is not None:
            if timesteps < 1:
                raise UserInputError(f"--timesteps must be positive, got {timesteps}")
            seconds = timesteps / source.frame_rate
        requests = prompts.requests(seconds)
        options = GenerationOptions(
            sampling=chosen,
            cfg_scale=cfg_scale,
            batch_size=batch_size,
            window_seconds=window_seconds,
            extend_stride=extend_stride,
            audio_prompt=audio_prompt,
            progress=progress,
            precision=precision,
            pack_weights=pack_weights,
            spectrograms=spectrograms,
        )
        made = []

        def write(folder: Path) -> None:
            summary = generate_requests(source, requests, options, folder)
            summary.output = Path(output_dir)  # where it will be, not the folder it is built in
            summary_text = json.dumps(summary.to_dict(), indent=2, ensure_ascii=False)
            write_bytes_naming(folder / SUMMARY_FILE, summary_text.encode("utf-8"))
            made.append(summary)

        with warnings.catch_warnings():
            warnings.simplefilter("always", LongerThanTrainedWarning)
            warnings.showwarning = _one_line_warning  # at once, before the long generation
            write_directory(output_dir, write, overwrite, inputs, "generate")
    print(made[0])
    return 0


# Resamplings for evaluate's intervals: each FAD resampling is a matrix square root, and
# the others draw every resampling's picks at once (resamplings x clips integers).
MAX_BOOTSTRAP = 10_000


def evaluate(
    generated: str,
    reference: str | None = None,
    output: str = "evaluation",
    metrics: list[str] | None = None,
    codec_dir: str | None = None,
    ast_dir: str | None = None,
    clap_dir: str | None = None,
    skip_missing: bool = False,
    bootstrap: int = 0,
    vggish_weights: str | None = None,
    fad_on: Literal["vggish", "codec", "clap"] | None = None,
    kld_activation: Literal["softmax", "sigmoid"] = "softmax",
    overwrite: bool = False,
) -> int:
    """Score generated clips: FAD, KLD, CLAP score and real-time factor, into
    OUTPUT/evaluation.json and OUTPUT/evaluation.md.

    Args:
        generated: A folder of generated wavs (generate's JSON sidecars give the prompts
            and timings), or a JSONL/CSV manifest.
        reference: The reference clips for FAD and KLD: a folder with captions, a manifest,
            or token shards (decoded with --codec_dir, else the codec their index names);
            KLD pairs each generated clip with the reference whose caption is its prompt.
        output: Where the report goes.
        metrics: Which of fad, kld, clap, rtf (default: all four).
        codec_dir: An EnCodec directory: FAD on its continuous latents (no other weights).
        vggish_weights: Or VGGish weights (a local state dict, e.g. torchvggish's
            vggish-10086976.pth): FAD as in the literature, on 0.96 s VGGish embeddings.
        fad_on: The FAD embedder: vggish, codec or clap (CLAP audio embeddings, one per
            10 s window); default: vggish when its weights are given, else codec.
        kld_activation: How the tagger's logits become label distributions: softmax (one
            distribution over the labels) or sigmoid (each label a Bernoulli, averaged).
        ast_dir: An AudioSet-finetuned AST directory (ASTForAudioClassification) for KLD.
        clap_dir: A CLAP directory (ClapModel, feature extractor, tokenizer) for the CLAP score.
        skip_missing: Leave out metrics whose model directory is not given (and say so)
            instead of stopping.
        bootstrap: Resamplings of the clips for 95 % intervals (0: none; 1000 is usual).
        overwrite: Replace an earlier evaluation in OUTPUT (refused without it, before any
            work: scoring another system into the same folder lost the first's report).
    """
    from lightning_sdm.metrics.evaluation import (
        METRICS,
        check_report_folder,
        evaluate_folders,
        markdown_table,
        write_report,
    )

    chosen = list(metrics or METRICS)
    if reference is None and any(m in ("fad", "kld") for m in chosen):
        raise UserInputError("fad and kld compare against --reference clips: pass a folder")
    if not 0 <= bootstrap <= MAX_BOOTSTRAP:
        raise UserInputError(
            f"--bootstrap must be in [0, {MAX_BOOTSTRAP}] (1000 is usual: the 95 % interval "
            f"settles well before), got {bootstrap}"
        )
    check_report_folder(output, overwrite)
    results = evaluate_folders(
        generated, reference or "", chosen, codec_dir, ast_dir, clap_dir, skip_missing,
        bootstrap, vggish_weights, fad_on, kld_activation,
    )  # fmt: skip
    inputs = {"generated": generated, "reference": reference, "bootstrap": bootstrap}
    written = write_report(results, output, inputs)
    print(markdown_table(results))
    print(f"wrote {written / 'evaluation.json'} and {written / 'evaluation.md'}")
    return 0


def export(
    output: str,
    ckpt: str | None = None,
    codec_dir: str | None = None,
    merge: bool = False,
    format: str = "lightning_sdm",
    model: str | None = None,
    overwrite: bool = False,
) -> int:
    """Turn a checkpoint into a model directory (EMA weights, safetensors + JSON); a codec
    task's checkpoint becomes an EncodecModel directory.

    Args:
        output: Directory to write.
        ckpt: A checkpoint written by `fit`.
        codec_dir: Copy this codec in, so `generate` writes wav files (for --format
            transformers: the EnCodec to include; default: the model's codec).
        merge: For a LoRA run: fold the adapter into the base weights and write a whole
            model (default: the adapter alone, which loads over the model it started from).
        format: lightning_sdm, or a format the model's family exports to: transformers (a
            codebook LM as a MusicgenForConditionalGeneration directory: delay-pattern
            models with MusicGen's layout, e.g. imported ones and their fine-tunes; an
            adapter is merged).
        model: Or, for another format than lightning_sdm, a model directory instead of a
            checkpoint.
        overwrite: Replace an existing non-empty output folder whole (it is written beside
            it and swapped in); without it such a folder is refused.
    """
    if format != "lightning_sdm":
        from lightning_sdm.atomic import write_directory
        from lightning_sdm.families import families, family_of
        from lightning_sdm.generation import load_source

        known = sorted({name for f in families() for name in f.export_formats})
        if format not in known:
            raise UserInputError(f"--format must be one of {', '.join(known)}, got {format!r}")
        source = load_source(model, ckpt, codec_dir)
        family = family_of(source.model)
        if format not in family.exporters:
            raise UserInputError(
                f"{model or ckpt} is {family.description}, which exports as "
                f"{', '.join(family.export_formats)}, not {format}"
            )
        exporter = family.exporters[format]
        codec = source.codec.model if source.codec is not None else None
        write_directory(
            output,
            lambda folder: exporter(source.model, codec, folder),
            overwrite,
            inputs=[model, ckpt, codec_dir],
            purpose="export",
        )
        print(f"exported {model or ckpt} to {output} ({format})")
        return 0
    if ckpt is None:
        raise UserInputError("export needs --ckpt (a checkpoint written by fit)")
    from lightning_sdm.convert.export import CODEC_DIR, EXPORT_FILE, export_checkpoint
    from lightning_sdm.models.adapters import adapter_base

    written = export_checkpoint(ckpt, output, codec_dir, merge, overwrite)
    print(f"exported {ckpt} to {written}")
    base = adapter_base(written)
    codec = written / CODEC_DIR if base is None else base / CODEC_DIR  # an adapter: its base's
    if base is not None:
        print(f"a LoRA adapter over {base}" + ("" if codec.is_dir() else ", which holds no codec"))
    elif codec.is_dir():
        print(f"codec: {codec}" + ("" if codec_dir else " (the one the run trained with)"))
    if (written / EXPORT_FILE).is_file() and not codec.is_dir():
        print(
            "no codec copied in (--codec_dir DIR): generate from it writes codes or latents "
            "only, unless given --codec_dir"
        )
    return 0


def import_musicgen(source: str, output: str, overwrite: bool = False) -> int:
    """Turn a local Hugging Face MusicGen checkpoint (e.g. a copy of facebook/musicgen-small)
    into a model directory that generate, export and fit (model.init_from) read.

    Args:
        source: The MusicGen directory (config.json, weights, tokenizer files).
        output: Directory to write (config.json, model.safetensors, text_encoder/, codec/).
        overwrite: Replace an output folder that already holds files, whole; without it
            such a folder is refused.
    """
    from lightning_sdm.convert.musicgen import import_musicgen as run_import

    written = run_import(source, output, overwrite)
    print(f"imported {source} to {written} (delay pattern; its EnCodec in {written}/codec)")
    return 0


def demo(
    family: Literal["lm", "diffusion"] = "lm",
    codec_config: str | None = None,
    model_config: str | None = None,
    retrain_codec: bool = False,
    audio_only: bool = False,
) -> int:
    """The CPU demo: write its captioned clips, train the demo's autoencoder (once), train
    the model on its shards, then measure the autoencoder's reconstructions and the samples
    (RUN/demo_report.json).

    Args:
        family: lm (the demo codec, a stack-delay LM on its tokens) or diffusion (the demo
            waveform VAE, an EzAudio-DiT on its latents).
        codec_config: The autoencoder's fit config (it saves the codec or VAE where the
            model's config reads it); default: the family's demo config.
        model_config: The model's fit config; default: the family's demo config.
        retrain_codec: Train the autoencoder again even if it is already saved.
        audio_only: Only write the demo's clips (data/demo/audio), e.g. for
            configs/ezaudio_tiny.yaml, and stop.
    """
    from lightning_sdm.demo.run import DEMO_CONFIGS, run_demo, write_demo_audio

    if audio_only:
        print(f"the demo's clips are in {write_demo_audio()}")
        return 0
    default_codec, default_model = DEMO_CONFIGS[family]
    run_demo(codec_config or default_codec, model_config or default_model, retrain_codec)
    return 0


def plot(run: str, output: str | None = None) -> int:
    """Draw a run's loss curves from its metrics.csv (no network needed).

    Args:
        run: A run folder (runs/NAME/version_N) or its metrics.csv.
        output: PNG to write (default: beside the CSV).
    """
    from lightning_sdm.runs.plots import plot_metrics

    print(f"wrote {plot_metrics(run, output)}")
    return 0


def serve(
    model: list[str] | None = None,
    models_dir: list[str] | None = None,
    compare: list[str] | None = None,
    prompts: str | None = None,
    answers: str = "listening/answers.jsonl",
    no_preference: bool = False,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    output_dir: str = "served",
    codec_dir: str | None = None,
    max_loaded_models: int = 2,
) -> int:
    """A local web app: generate and listen (wav, spectrogram, settings), and a blind A/B
    listening test of two systems' samples.

    Args:
        model: Model directories or fit checkpoints listed on the generate page (repeat
            --model). The app loads these and what is under --models_dir, nothing else.
        models_dir: Folders whose model directories and checkpoints the page may load
            (repeatable).
        compare: Two folders of generated wavs, DIR_A DIR_B: the A/B test at /compare pairs
            them by the prompt in generate's JSON sidecars (or same-named .txt captions).
        prompts: Only these prompts (a text file, one per line, or generate's JSONL).
        answers: The JSONL every answer is appended to (and read back to resume).
        no_preference: Offer "no preference" (default: forced choice).
        host: Address to bind. 127.0.0.1 (default): this machine only. Any other address
            opens the app to the network and then every API call needs a token.
        port: Port.
        token: The token off loopback (default: a new random one, printed in the address).
        output_dir: Where the generate page's results go (one folder per request).
        codec_dir: The codec for models that do not carry one.
        max_loaded_models: Models kept in memory at once (least recently used is dropped).
    """
    from lightning_sdm.extras import require_extra

    require_extra("serve", "serve")
    import uvicorn

    from lightning_sdm.app.guard import AccessPolicy, is_loopback, new_token
    from lightning_sdm.app.server import CompareTest, create_app, describe
    from lightning_sdm.listening.answers import AnswerLog
    from lightning_sdm.listening.pairs import pair_systems

    if max_loaded_models < 1:
        raise UserInputError(f"--max_loaded_models must be at least 1, got {max_loaded_models}")
    if not 1 <= port <= 65535:
        raise UserInputError(f"--port must be within 1-65535, got {port}")
    from lightning_sdm.generation.source import source_family

    for path in model or []:  # the page lists them: say now which one cannot load
        try:
            source_family(path)
        except UserInputError as error:
            raise UserInputError(f"--model {error}") from error
    for folder in models_dir or []:
        if not Path(folder).is_dir():
            raise UserInputError(f"--models_dir {folder} is not a folder")
    test = None
    if compare is not None:
        if len(compare) != 2:
            raise UserInputError(f"--compare takes two folders, DIR_A DIR_B; got {len(compare)}")
        pairing = pair_systems(compare[0], compare[1], prompts)
        log = AnswerLog(answers, pairing.systems, pairing.pairs)
        test = CompareTest(pairing, log, no_preference)
        print(describe(test))
    elif prompts is not None:
        raise UserInputError("--prompts selects the prompts of an A/B test: add --compare")
    local = is_loopback(host)
    if not local:
        token = token or new_token()
    elif token is not None:
        print("note: --token is used only off loopback (--host other than 127.0.0.1)")
        token = None
    _require_free_port(host, port)
    policy = AccessPolicy(bind_host=host, token=token)
    app = create_app(model, test, output_dir, codec_dir, models_dir, policy, max_loaded_models)
    page = "/compare" if test is not None else "/"
    shown = "localhost" if host in ("0.0.0.0", "::") else host
    address = f"http://{shown}:{port}{page}" + (f"?token={token}" if token else "")
    if not local:
        print(
            f"warning: serving on {host}, reachable from the network; anyone with the token "
            "can generate and answer. Open the address below (it carries the token).",
            flush=True,
        )
    print(f"serving on {address} (Ctrl+C stops)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
    return 0


def _require_free_port(host: str, port: int) -> None:
    """Bind and release the address first, so a port in use (another server) is one line
    before anything claims to be serving, not uvicorn's error after it."""
    import errno
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise UserInputError(f"--host {host} does not resolve ({error.strerror})") from error
    family, kind, _, _, address = infos[0]
    hints = {
        errno.EADDRINUSE: "another server? pick another --port",
        errno.EADDRNOTAVAIL: "not an address of this machine: check --host",
        errno.EACCES: "ports below 1024 need privileges: pick another --port",
    }
    with socket.socket(family, kind) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as error:
            hint = hints.get(error.errno or 0, "check --host and --port")
            raise UserInputError(
                f"cannot serve on {host}:{port}: {error.strerror or error} ({hint})"
            ) from error


def listening_report(answers: str, output: str | None = None) -> int:
    """Preference for each system of an A/B test with a 95 % Wilson interval and a
    two-sided binomial p-value, per rater and per prompt, as Markdown and JSON.

    Args:
        answers: The answers JSONL that serve --compare wrote.
        output: Path stem of the report (default: ANSWERS-report beside the answers), to
            which .md and .json are added.
    """
    from lightning_sdm.listening.report import write_report

    markdown, data = write_report(answers, output)
    print(markdown.read_text(encoding="utf-8"))
    print(f"wrote {markdown} and {data}")
    return 0


def patterns_show(
    pattern: PatternName | DecoderName = "stack_delay",
    k: int = 1,
    schedule: ScheduleName | None = None,
    T: int = 8,
    C: int = 4,
    matrix: bool = True,
) -> int:
    """Draw a pattern's steps, decoding plan and what each position sees (for the depth
    decoder: the step at which each token is sampled).

    Args:
        pattern: The codebook pattern, or depth.
        k: Interleave of stack-delay / interleaved schedules.
        schedule: Override the pattern's timestep schedule.
        T: Timesteps.
        C: Codebook levels.
        matrix: Draw the visibility matrix (alias --no-matrix to skip it).
    """
    from lightning_sdm.models.depth_lm import draw_decoder

    _check_sizes(T, C)
    print(draw_decoder(pattern, k, schedule, T, C, matrix))
    return 0


def patterns_table(T: int = 1500, C: int = 4, json: bool = False) -> int:
    """Decoding steps and cache keys of every pattern, measured from their plans, and of
    the depth decoder (T temporal + C x T depth steps; T + C cache keys).

    Args:
        T: Timesteps.
        C: Codebook levels.
        json: Print JSON instead of a table.
    """
    import json as json_module

    from lightning_sdm.models.depth_lm import decoding_plan
    from lightning_sdm.patterns.render import format_table, table_rows

    _check_sizes(T, C)
    rows = [*table_rows(T, C), decoding_plan(T, C)]
    print(json_module.dumps(rows, indent=2) if json else format_table(rows))
    return 0


# The plans are built whole in memory for inspection: a million positions take ~1.5 GB and
# ~15 s for the table of every pattern (a 30 s clip at 50 Hz with 32 levels is 48,000).
MAX_PLAN_POSITIONS = 1_000_000


def _check_sizes(T: int, C: int) -> None:
    if T < 1 or C < 1:
        raise ValueError("--T and --C must be >= 1")
    if T * C > MAX_PLAN_POSITIONS:
        raise ValueError(
            f"--T {T} x --C {C} is {T * C:,} positions; the plans are built in memory for "
            f"inspection, up to {MAX_PLAN_POSITIONS:,} (30 s at 50 Hz with 32 levels: 48,000)"
        )
