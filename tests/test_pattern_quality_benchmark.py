"""benchmarks/pattern_quality.py --quick: every row, its floor, and the files anyone can
recompute the numbers from."""

import json
import subprocess
import sys

import numpy as np

from lightning_sdm.data.synthetic import HiddenMarkovSource, pattern_floor
from lightning_sdm.patterns import make_pattern
from tests.benchmark_runs import BENCHMARKS, run_benchmark


def heldout_frames(folder):
    return HiddenMarkovSource.load(folder / "source.npz")[1].shape[-1]


def test_the_quick_run_writes_a_row_per_pattern_and_recomputable_floors(tmp_path):
    run_benchmark("pattern_quality.py", "--quick", "--out", str(tmp_path))
    payload = json.loads((tmp_path / "results.json").read_text())
    assert payload["machine"]["cpu"] and payload["machine"]["threads"] >= 1
    rows = payload["rows"]
    assert {r["label"] for r in rows} >= {"delay", "flat", "stack", "stack_delay k=3", "depth"}
    for field in ("pattern", "k", "nll", "floor", "gap", "steps", "gen_seconds",
                  "max_cache_keys", "params", "seed"):  # fmt: skip
        assert all(field in r for r in rows), field
    flat = next(r for r in rows if r["label"] == "flat")
    assert abs(flat["floor"] - payload["entropy_floor"]) < 1e-12
    depth = next(r for r in rows if r["label"] == "depth")  # flat's context: flat's floor
    assert abs(depth["floor"] - payload["entropy_floor"]) < 1e-12
    assert depth["steps"] == heldout_frames(tmp_path) * 5 and depth["params"] > 0
    # A delayed order still conditions every token on all earlier ones: the same total.
    delayed = next(r for r in rows if r["label"] == "depth, acoustic delay 1")
    assert abs(delayed["floor"] - payload["entropy_floor"]) < 1e-9
    assert delayed["steps"] == (heldout_frames(tmp_path) + 1) * 5
    # the saved source and held-out grids give the same floor again
    source, heldout = HiddenMarkovSource.load(tmp_path / "source.npz")
    delay = next(r for r in rows if r["label"] == "delay")
    steps = make_pattern("delay").layout(heldout.shape[-1], heldout.shape[1]).token_steps
    assert abs(pattern_floor(source, heldout, steps.numpy()) - delay["floor"]) < 1e-12
    assert (tmp_path / "quality_vs_time.png").stat().st_size > 1000
    assert "| pattern | floor |" in (tmp_path / "table.md").read_text()
    assert np.isfinite([r["nll"] for r in rows]).all()


def test_a_flops_budget_gives_every_row_delays_flops_within_one_step(tmp_path):
    out = run_benchmark(
        "pattern_quality.py", "--quick", "--budget", "flops", "--rows", "delay", "flat", "depth",
        "--out", str(tmp_path),
    )  # fmt: skip
    rows = {r["label"]: r for r in json.loads((tmp_path / "results.json").read_text())["rows"]}
    assert set(rows) == {"delay", "flat", "depth"} and "delay's FLOPs" in out
    delay = rows["delay"]
    assert delay["train_steps"] == 3 and delay["train_flops"] > 0
    for label in ("flat", "depth"):
        row = rows[label]
        per_step = row["train_flops"] / row["train_steps"]
        assert per_step > delay["train_flops"] / 3  # a costlier step than delay's...
        assert abs(row["train_flops"] - delay["train_flops"]) <= per_step / 2 + 1  # ...fewer
    assert rows["flat"]["train_steps"] < 3


def test_an_unknown_row_is_named_with_the_known_ones(tmp_path):
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "pattern_quality.py"), "--quick",
         "--rows", "delay", "dealy", "--out", str(tmp_path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 2 and "--rows takes labels among: delay, flat" in done.stderr


def test_the_music_mode_trains_on_demo_tokens_and_reports_curves_levels_and_pitch(tmp_path):
    out = run_benchmark(
        "pattern_quality_music.py", "--quick", "--rows", "delay", "flat, frame positions",
        "depth", "--out", str(tmp_path),
    )  # fmt: skip
    payload = json.loads((tmp_path / "results.json").read_text())
    assert payload["machine"]["cpu"]
    rows = {r["label"]: r for r in payload["rows"]}
    assert set(rows) == {"delay", "flat, frame positions", "depth"}
    frames = rows["delay"]["decoding_steps"] - 3  # T + C - 1 steps for delay
    assert rows["flat, frame positions"]["decoding_steps"] == 4 * frames
    for row in rows.values():
        assert [p["step"] for p in row["curve"]] == [2, 4]
        assert all(len(p["nll_levels"]) == 4 and np.isfinite(p["nll"]) for p in row["curve"])
        assert row["curve"][1]["flops"] == 2 * row["curve"][0]["flops"] > 0
        assert row["gen_seconds"] > 0 and row["pitch_clarity"] > 0
    assert "NLL @ 4" in (tmp_path / "table.md").read_text() and "cores" in out
    assert (tmp_path / "curves.png").stat().st_size > 1000
    # any folder of shards: the ones just made, prompts taken from their held-out captions
    again = run_benchmark(
        "pattern_quality_music.py", "--quick", "--rows", "delay", "--shards",
        str(tmp_path / "demo" / "shards"), "--out", str(tmp_path / "again"),
    )  # fmt: skip
    assert "training items" in again and (tmp_path / "again" / "results.json").is_file()


def test_the_music_mode_names_a_folder_without_shards(tmp_path):
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "pattern_quality_music.py"), "--quick",
         "--shards", str(tmp_path), "--out", str(tmp_path / "out")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 1 and "holds no index.json" in done.stderr
