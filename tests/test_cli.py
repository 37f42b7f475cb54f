import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile
import torch
import yaml

from lightning_sdm.cli import main
from lightning_sdm.codecs import EncodecCodec
from tests.conftest import tiny_model

ROOT = Path(__file__).resolve().parents[1]


def test_patterns_table_json_is_measured_from_plans(capsys):
    assert main(["patterns", "table", "--T", "1500", "--C", "4", "--json"]) == 0
    rows = {row["pattern"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["delay"]["decoding_steps"] == 1503
    assert rows["flat"]["max_cache_keys"] == 6000
    assert rows["stack"]["decoding_steps"] == 6000
    assert rows["stack_delay(k=1)"]["max_cache_keys"] == 1506
    assert set(rows) >= {f"stack_delay(k={k})" for k in (1, 2, 3, 4)}
    assert rows["depth"]["decoding_steps"] == 1500 + 4 * 1500  # temporal + depth steps
    assert rows["depth"]["max_cache_keys"] == 1500 + 4


def test_patterns_table_text(capsys):
    assert main(["patterns", "table", "--T", "20", "--C", "4"]) == 0
    out = capsys.readouterr().out
    assert "decoding_steps" in out and "stack_delay(k=3)" in out


def test_patterns_show_draws_steps_plan_and_visibility(capsys):
    assert main(["patterns", "show", "--pattern", "stack_delay", "--k", "3", "--T", "12"]) == 0
    out = capsys.readouterr().out
    assert "Step G(i, t)" in out and "Decoding plan" in out and "What each position sees" in out
    assert "(0,4)" in out  # the first full stack
    # The grid row of level 0 is the interleaved schedule t + 2·(t mod 4).
    level0 = next(line for line in out.splitlines() if re.match(r"\s+0\s+0\s+3\s+6", line))
    assert [int(v) for v in level0.split()[1:]] == [t + 2 * (t % 4) for t in range(12)]


@pytest.mark.parametrize("pattern", ["delay", "stack_delay", "depth"])
def test_patterns_show_of_a_long_sequence_shows_the_start_and_counts_the_rest(capsys, pattern):
    """T = 100000 printed 11 MB of grid and plan over 20 s."""
    assert main(["patterns", "show", "--pattern", pattern, "--T", "100000"]) == 0
    out = capsys.readouterr().out
    assert len(out) < 20_000
    assert "timesteps 64 to 99999 not shown" in out
    assert "decoding steps: 100" in out  # the totals stay whole


@pytest.mark.parametrize("command", ["show", "table"])
def test_patterns_of_absurd_sizes_are_one_line_not_an_allocation_error(capsys, command):
    """--T 100000 --C 100000 died in a numpy traceback asking for 74.5 GiB."""
    assert main(["patterns", command, "--T", "100000", "--C", "100000"]) == 2
    err = capsys.readouterr().err
    assert "10,000,000,000 positions" in err and len(err.strip().splitlines()) == 1


def test_patterns_show_draws_the_depth_decoders_steps_and_refuses_its_missing_options(capsys):
    assert main(["patterns", "show", "--pattern", "depth", "--T", "6", "--C", "3"]) == 0
    out = capsys.readouterr().out
    assert "6 temporal + 18 depth" in out
    grid = [line.split() for line in out.splitlines() if re.match(r"\s+[0-2]\s+[0-2]\s", line)]
    assert [[int(v) for v in row[1:]] for row in grid] == [
        [3 * t + level for t in range(6)] for level in range(3)
    ]
    assert main(["patterns", "show", "--pattern", "depth", "--k", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: the depth decoder has no interleave or schedule: it samples frame by frame, "
        "level by level (drop --k and --schedule)"
    ]


def test_bad_cli_input_fails_with_a_message(capsys):
    assert (
        main(["patterns", "show", "--pattern", "stack", "--schedule", "parallel", "--T", "4"]) == 2
    )
    assert "increase with the level" in capsys.readouterr().err


def test_generate_command_writes_codes(tmp_path, capsys):
    tiny_model("delay", 1).save_pretrained(tmp_path / "model")
    output = tmp_path / "out"
    argv = ["generate", "--model", str(tmp_path / "model"), "--prompt", "a", "--prompt", "b"]
    assert main([*argv, "--timesteps", "10", "--seed", "0", "--output-dir", str(output)]) == 0
    saved = torch.load(output / "codes.pt")
    assert saved["codes"].shape == (2, 4, 10) and saved["captions"] == ["a", "b"]
    assert saved["seeds"] == [0, 1]
    printed = capsys.readouterr().out
    assert "codes only (no codec)" in printed and "summary.json" in printed
    assert "no audio: the model's folder holds no codec; rerun with --codec_dir DIR" in printed
    sidecar = json.loads((output / "01-b.json").read_text())
    assert sidecar["decoding_steps"] == 13 and sidecar["seed"] == 1
    assert sidecar["pattern"] == "delay" and sidecar["sampling"]["top_k"] == 250
    assert len(sidecar["model"]["weights_sha256"]) == 16
    summary = json.loads((output / "summary.json").read_text())
    assert [f["prompt"] for f in summary["files"]] == ["a", "b"]


def test_a_caption_in_any_script_names_its_files_and_reads_as_written(tmp_path, capsys):
    tiny_model("delay", 1).save_pretrained(tmp_path / "model")
    output = tmp_path / "out"
    argv = ["generate", "--model", str(tmp_path / "model"), "--prompt", "雨の日のピアノ"]
    assert (
        main([*argv, "--prompt", "café crème", "--timesteps", "4", "--output-dir", str(output)])
        == 0
    )
    first, second = (output / "00-雨の日のピアノ.json"), (output / "01-café-crème.json")
    assert '"prompt": "雨の日のピアノ"' in first.read_text(encoding="utf-8")
    assert json.loads(second.read_text(encoding="utf-8"))["prompt"] == "café crème"


def test_generate_never_writes_into_earlier_outputs_unless_told_to(tmp_path, capsys):
    tiny_model("delay", 1).save_pretrained(tmp_path / "model")
    out = tmp_path / "out"
    argv = ["generate", "--model", str(tmp_path / "model"), "--timesteps", "4", "--no-progress",
            "--output_dir", str(out)]  # fmt: skip
    assert main([*argv, "--prompt", "a", "--prompt", "b"]) == 0
    first = (out / "00-a.json").read_bytes()
    assert main([*argv, "--prompt", "c"]) == 2
    assert "already holds files: pass --overwrite" in capsys.readouterr().err
    assert (out / "00-a.json").read_bytes() == first and (out / "01-b.json").exists()
    assert main([*argv, "--prompt", "c", "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["00-c.json", "codes.pt", "summary.json"]
    assert json.loads((out / "summary.json").read_text())["output"] == str(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "out"]  # nothing left beside
    (tmp_path / "file").write_text("x")
    assert main([*argv[:-1], str(tmp_path / "file"), "--prompt", "c"]) == 2


def test_overwrite_never_deletes_the_model_a_checkpoint_or_the_working_folder(
    tmp_path, capsys, monkeypatch
):
    """`generate --model M --output_dir M --overwrite` replaced the model by its samples;
    `export --ckpt RUN/.../last.ckpt --output RUN --overwrite` would delete the run."""
    model = tmp_path / "model"
    tiny_model("delay", 1).save_pretrained(model)
    capsys.readouterr()
    weights = (model / "model.safetensors").read_bytes()
    argv = ["generate", "--model", str(model), "--prompt", "a", "--timesteps", "4",
            "--no-progress", "--overwrite"]  # fmt: skip
    for output, said in (
        (model, f"--overwrite would delete {model}, which is the output folder {model}"),
        (tmp_path, f"--overwrite would delete {model}, which is inside the output folder"),
    ):
        assert main([*argv, "--output_dir", str(output)]) == 2
        assert said in capsys.readouterr().err
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    monkeypatch.chdir(work)
    assert main([*argv, "--output_dir", "."]) == 2
    assert "would delete the folder this command runs in" in capsys.readouterr().err
    assert (model / "model.safetensors").read_bytes() == weights
    assert (work / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--seconds", "1e9"], "1e+09 s for 'a' needs about"),
        (["--seconds", "0.001"], "0.001 s for 'a' is under one codec frame"),
        (["--seed", "-1"], "--seed must be in [0, "),
        (["--seed", str(2**64)], "--seed must be in [0, "),
    ],
)
def test_generate_refuses_what_cannot_run_in_one_line(tmp_path, capsys, option, message):
    tiny_model("delay", 1).save_pretrained(tmp_path / "model")
    argv = ["generate", "--model", str(tmp_path / "model"), "--prompt", "a", "--no-progress",
            "--output_dir", str(tmp_path / "out"), *option]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    if "needs about" in message:
        assert "GiB of memory: at most about" in err[0]
    assert not (tmp_path / "out").exists()


def test_generate_continues_in_windows_past_the_training_crops(tmp_path, capsys):
    tiny_model("delay", 1).save_pretrained(tmp_path / "model")
    (tmp_path / "model" / "export.json").write_text(json.dumps({"trained_segment_frames": 8}))
    argv = ["generate", "--model", str(tmp_path / "model"), "--prompt", "a", "--seed", "0"]
    argv += ["--output-dir", str(tmp_path / "out"), "--no-progress"]
    assert main([*argv, "--timesteps", "8"]) == 0
    windows = json.loads((tmp_path / "out" / "00-a.json").read_text())["windows"]
    assert windows == [{"prompt_frames": 0, "frames": 8}]
    argv.append("--overwrite")
    assert main([*argv, "--timesteps", "12"]) == 0
    assert "warning" not in capsys.readouterr().err
    sidecar = json.loads((tmp_path / "out" / "00-a.json").read_text())
    # 8 frames, then a window prompted with the last 3 (stride 60 % of 8 = 5 new frames)
    assert sidecar["windows"] == [
        {"prompt_frames": 0, "frames": 8},
        {"prompt_frames": 3, "frames": 7},
    ]
    assert torch.load(tmp_path / "out" / "codes.pt")["codes"].shape == (1, 4, 12)
    assert main([*argv, "--timesteps", "12", "--window_seconds", "0.24"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: a 0.24 s window is longer than the 0.16 s crops")


def test_generate_says_in_one_line_that_a_caption_was_cut(tmp_path, capsys):
    tiny_model("delay", 1).save_pretrained(tmp_path / "model")
    argv = ["generate", "--model", str(tmp_path / "model"), "--timesteps", "4", "--no-progress"]
    caption = "низкий гул органа " * 20  # 340 bytes: ByT5 reads a token per byte, 256 at most
    assert main([*argv, "--prompt", caption, "--output-dir", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "warning: a caption is longer than the text encoder reads (text.max_length: 256 "
        "tokens); it and any like it are cut to their first tokens. Raise text.max_length "
        "to read more."
    ]
    assert (tmp_path / "out" / "summary.json").exists()  # generated all the same


def test_generate_writes_wavs_with_a_codec(tmp_path, capsys):
    model = tiny_model("stack_delay", 3, cardinality=2048)
    model.save_pretrained(tmp_path / "model")
    EncodecCodec().save_pretrained(tmp_path / "model" / "codec")
    argv = ["generate", "--model", str(tmp_path / "model"), "--prompt", "warm pad"]
    assert main([*argv, "--timesteps", "25", "--output-dir", str(tmp_path / "out")]) == 0
    (wav,) = sorted((tmp_path / "out").glob("*.wav"))
    audio, rate = soundfile.read(wav)
    assert rate == 32000 and audio.shape == (25 * 640,)
    assert wav.name == "00-warm-pad.wav"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")
def test_generate_onto_a_full_disk_says_so_naming_the_file_it_asked_for(
    tmp_path, capsys, monkeypatch
):
    """libsndfile said only "System error." with a traceback; its wavs were lost anyway."""
    model = tiny_model("stack_delay", 3, cardinality=2048)
    model.save_pretrained(tmp_path / "model")
    EncodecCodec().save_pretrained(tmp_path / "model" / "codec")
    write_bytes = Path.write_bytes

    def onto_a_full_disk(self: Path, data: bytes) -> int:  # the kernel's ENOSPC, no name
        return write_bytes(Path("/dev/full") if self.suffix == ".wav" else self, data)

    monkeypatch.setattr(Path, "write_bytes", onto_a_full_disk)
    argv = ["generate", "--model", str(tmp_path / "model"), "--prompt", "warm pad", "--no-progress"]
    assert main([*argv, "--timesteps", "5", "--output-dir", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"error: the disk is full writing {tmp_path / 'out' / '00-warm-pad.wav'} (No space "
        "left on device); what was written before is whole: free space and run the command "
        "again to continue"
    ]
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == [tmp_path / "model"]


def test_generate_from_a_missing_model_fails_clearly(tmp_path, capsys):
    argv = ["generate", "--model", str(tmp_path), "--prompt", "a", "--timesteps", "4"]
    assert main(argv) == 2
    assert "not a saved lightning_sdm model" in capsys.readouterr().err


def test_generate_checks_its_prompt_file_before_loading_the_model(tmp_path, capsys):
    """A typo in the prompt file was found only after the model (minutes for a large one)
    had loaded; here the model is missing too, and the prompt file is what is named."""
    argv = ["generate", "--model", str(tmp_path / "no-model"), "--timesteps", "4"]
    (tmp_path / "prompts.jsonl").write_text('{"prompt": "a", "secs": 3}\n')
    assert main([*argv, "--prompt_file", str(tmp_path / "prompts.jsonl")]) == 2
    assert "unknown keys ['secs']" in capsys.readouterr().err


def test_module_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "lightning_sdm", "patterns", "table", "--T", "8"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "stack_delay(k=4)" in result.stdout


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one():
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    setup_and_demo, setup_and_tests = blocks[0].strip().splitlines()
    assert setup_and_demo.endswith(".venv/bin/lightning-sdm demo")
    test_command = setup_and_tests.split("&&")[-1].strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command in ci.splitlines()


ROUND_TRIPS = {
    "tokenize": ["tokenize", "in", "out", "--codec-dir", "/models/encodec", "--workers", "4"],
    "generate": ["generate", "--model", "m", "--prompt", "a", "--prompt", "b", "--top-k", "50"],
    "export": ["export", "--ckpt", "x.ckpt", "--output", "model", "--codec-dir", "codec"],
    "plot": ["plot", "runs/demo/version_0"],
    "patterns show": ["patterns", "show", "--pattern", "delay", "--no-matrix"],
    "patterns table": ["patterns", "table", "--T", "30", "--json"],
}


@pytest.mark.parametrize("command", sorted(ROUND_TRIPS))
def test_print_config_round_trips_as_config(command, tmp_path, capsys):
    def printed(argv):
        with pytest.raises(SystemExit) as done:
            main([*argv, "--print_config"])
        assert done.value.code == 0
        return capsys.readouterr().out

    first = printed(ROUND_TRIPS[command])
    path = tmp_path / "config.yaml"
    path.write_text(first)
    depth = 2 if command.startswith("patterns") else 1
    assert printed([*ROUND_TRIPS[command][:depth], "--config", str(path)]) == first


def test_old_and_typed_spellings_mean_the_same(capsys):
    def config(argv):
        with pytest.raises(SystemExit):
            main([*argv, "--print_config"])
        return yaml.safe_load(capsys.readouterr().out)

    old = config(["generate", "--model", "m", "--prompt", "a", "--prompt", "b", "--top-k", "5"])
    typed = config(["generate", "--model", "m", "--prompt", "[a, b]", "--sampling.top_k", "5"])
    assert old == typed and old["prompt"] == ["a", "b"] and old["sampling"]["top_k"] == 5
    old = config(["tokenize", "i", "o", "--codec-dir", "c", "--min-seconds", "2", "--latents"])
    typed = config(["tokenize", "i", "o", "--codec.pretrained", "c", "--min_seconds", "2",
                    "--latents", "true"])  # fmt: skip
    assert old == typed and old["latents"] is True and old["codec"]["pretrained"] == "c"


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["generate", "--seconds", "nan"], "error: --seconds: expected a number, got 'nan'"),
        # an optional number: jsonargparse explained a failed union of float and NoneType
        (
            ["generate", "--cfg_scale", "x"],
            "error: --cfg_scale: expected a number or null, got 'x'",
        ),
        (["generate", "--batch_size", "1.5"], "error: --batch_size: expected a whole number"),
        (["generate", "--overwrite", "3"], "error: --overwrite: expected true or false, got '3'"),
        (["tokenize", "--shard_items", "x"], "error: --shard_items: expected a whole number"),
        # inside a class's options: was the class's union message and 'did you mean' the
        # very option given
        (["fit", "--model.lm.dim", "x"], "error: --model.lm.dim: expected a whole number, got 'x'"),
        # choices: the union of two literal lists, and an optional one (which a first
        # version of this message called 'expected null')
        (
            ["patterns", "show", "--pattern", "foo"],
            "error: --pattern: expected one of parallel, delay, flat, stack, stack_delay, depth, "
            "got 'foo'",
        ),
        (
            ["patterns", "show", "--schedule", "foo"],
            "error: --schedule: expected one of parallel, delay, flat, interleaved; or null, "
            "got 'foo'",
        ),
    ],
)
def test_a_value_of_the_wrong_type_is_one_line_naming_the_option(capsys, argv, said):
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(said) and len(err) == 2 and err[1].startswith("all options:")


def test_an_unknown_option_of_a_command_is_an_error_with_a_suggestion(capsys):
    with pytest.raises(SystemExit) as done:
        main(["generate", "--model", "m", "--prompt", "a", "--timestep", "5"])
    assert done.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("error:") and "did you mean --timesteps?" in err
    with pytest.raises(SystemExit):
        main(["generate", "--model", "m", "--prompt", "a", "--temprature", "0.5"])
    assert "did you mean --sampling.temperature?" in capsys.readouterr().err


def test_help_and_the_pattern_commands_start_without_loading_transformers():
    """`--help` and `patterns` need only the pattern engine and torch: transformers (and
    diffusers, lightning) load with the commands that use them, not at start."""
    script = (
        "import sys, contextlib, io\n"
        "from lightning_sdm.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        "        main(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "    assert main(['patterns', 'show', '--pattern', 'delay', '--T', '4']) == 0\n"
        "    assert main(['patterns', 'table', '--T', '20', '--C', '4']) == 0\n"
        "print(sorted(m for m in ('transformers', 'diffusers', 'lightning') if m in sys.modules))\n"
    )
    assert last_line_printed(script) == "[]"


def test_model_load_bars_stay_off_when_transformers_loads_after_the_entry_point():
    script = (
        "import os\n"
        "os.environ.pop('HF_HUB_DISABLE_PROGRESS_BARS', None)\n"
        "from lightning_sdm.quiet import quiet_dependencies\n"
        "quiet_dependencies()\n"
        "from transformers.utils import logging\n"
        "print(logging.is_progress_bar_enabled())\n"
    )
    assert last_line_printed(script) == "False"


def last_line_printed(script: str) -> str:
    """What a fresh interpreter running `script` printed last."""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def test_the_command_list_shows_each_first_sentence_whole(capsys):
    """A full stop inside parentheses ("(e.g. a copy …)", "(RUN/demo_report.json)") or a
    file name does not end a command's one-line summary."""
    with pytest.raises(SystemExit):
        main(["--help"])
    listing = " ".join(capsys.readouterr().out.split())
    assert "checkpoint (e.g. a copy of facebook/musicgen-small) into a model directory" in listing
    assert "and the samples (RUN/demo_report.json)" in listing
    assert "from its metrics.csv (no network needed)" in listing
    assert "patterns commands: show, table" in listing
    summaries = listing.split("Available subcommands:")[1]
    assert summaries.count("(") == summaries.count(")")


def test_a_file_where_a_folder_is_needed_is_one_line(tmp_path, capsys):
    tiny_model("delay", 1).save_pretrained(tmp_path / "model")
    (tmp_path / "a_file").write_text("x")
    capsys.readouterr()  # what saving the model printed
    argv = ["generate", "--model", str(tmp_path / "model"), "--prompt", "a", "--timesteps", "4"]
    assert main([*argv, "--output_dir", str(tmp_path / "a_file" / "sub")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path / 'a_file'}: a file is where a folder is needed"]


def test_an_output_name_too_long_for_the_file_system_is_one_line(tmp_path, capsys):
    tiny_model("delay", 1).save_pretrained(tmp_path / "model")
    capsys.readouterr()
    argv = ["generate", "--model", str(tmp_path / "model"), "--prompt", "a", "--timesteps", "4"]
    long_name = tmp_path / ("x" * 250)  # fits a file system's 255, not with the build suffix
    assert main([*argv, "--output_dir", str(long_name)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: {long_name}: a name too long for this file system (keep it under ~220 characters)"
    ]


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_a_folder_that_cannot_be_made_is_named_as_asked_not_by_its_temporary_name(tmp_path, capsys):
    tiny_model("delay", 1).save_pretrained(tmp_path / "model")
    capsys.readouterr()
    argv = ["generate", "--model", str(tmp_path / "model"), "--prompt", "a", "--timesteps", "4"]
    assert main([*argv, "--output_dir", "/proc/lightning-sdm-out"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: /proc/lightning-sdm-out: no such file or folder, or none can be made there"
    ]


@pytest.mark.parametrize(
    ("command", "text", "said", "suggested"),
    [
        # PyYAML's three lines about a "<unicode string>"
        (
            "generate",
            "sampling:\n\ttop_k: 3\n",
            "error: a config file is not valid YAML at line 2, column 1: found character that "
            "cannot start any token (YAML indents with spaces: a tab there?)",
            None,
        ),
        # a misspelt option in a config had no suggestion: fit's options were not looked
        # at by the root parser that read the file, nor a group's option by its dotted name
        ("fit", "trainer:\n  max_stepz: 3\n", "does not accept option", "--trainer.max_steps"),
        ("fit", "model:\n  lm:\n    dimm: 3\n", "does not accept option", "--model.lm.dim"),
        # PyYAML keeps the last of two equal keys: the first trainer block vanished
        (
            "fit",
            "trainer:\n  max_steps: 10\nmodel:\n  lm:\n    dim: 64\ntrainer:\n  devices: 1\n",
            "error: a config gives a key twice: 'trainer' (lines 1 and 6): the second would "
            "silently replace the first; keep one",
            None,
        ),
        (
            "generate",
            "sampling:\n  top_k: 3\n  temperature: 1.0\n  top_k: 5\n",
            "error: a config gives a key twice: 'top_k' (lines 2 and 4)",
            None,
        ),
    ],
)
def test_a_config_file_that_is_not_yaml_or_misspells_an_option_is_one_line(
    tmp_path, capsys, command, text, said, suggested
):
    config = tmp_path / "config.yaml"
    config.write_text(text)
    with pytest.raises(SystemExit) as done:
        main([command, "--config", str(config)])
    assert done.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert said in err[0]
    if suggested:
        assert err[1] == f"did you mean {suggested}?"
    assert err[-1].startswith("all options:") and len(err) == (3 if suggested else 2)
