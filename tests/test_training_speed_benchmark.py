"""benchmarks/training_speed.py: the FLOP estimate and one measured row, at a tiny size."""

import json
import sys

from tests.benchmark_runs import run_benchmark

TINY = ["--dim", "32", "--layers", "1", "--heads", "2", "--batch", "1"]


def run(*args: str) -> str:
    return run_benchmark("training_speed.py", *TINY, *args)


def test_the_estimate_names_what_each_backend_runs():
    out = run("--estimate", "--frames", "300", "--patterns", "delay:1", "stack_delay:3")
    assert "not measured" in out
    assert "auto (causal)" in out.splitlines()[1]
    assert "auto (sparse)" in out.splitlines()[2] and "dense (dense mask) 1.00x" in out


def test_a_measured_run_writes_rows_with_the_device(tmp_path):
    out = run(
        "--frames", "260", "--steps", "1", "--patterns", "stack_delay:3",
        "--backends", "dense", "block_sparse", "--json", str(tmp_path / "rows.json"),
    )  # fmt: skip
    data = json.loads((tmp_path / "rows.json").read_text())
    rows = data["rows"]
    assert data["machine"]["cpu"] and "threads, torch" in out
    assert [r["uses"] for r in rows] == ["dense mask", "sparse"]
    assert rows[1]["scores_computed"] < 0.5 and rows[1]["device"].startswith("cpu")
    assert "GPU est." in out


def test_the_transformers_comparison_times_both_sides_at_equal_size(tmp_path):
    # bf16 only: the fp32 rows are the same children with autocast off, and each row is a
    # process of its own (seconds each).
    out = run(
        "--transformers", "--frames", "40", "--steps", "1", "--rounds", "1",
        "--precisions", "bf16", "--variants", "logits", "allocator",
        "--json", str(tmp_path / "sides.json"),
    )  # fmt: skip
    sides = json.loads((tmp_path / "sides.json").read_text())
    ours, theirs = sides["ours:bf16"], sides["transformers:bf16"]
    assert ours["params"] == theirs["params"] > 0
    assert ours["step_s"] > 0 and theirs["step_s"] > 0
    assert "bf16: ours as `fit` runs it is" in out and "transformers' speed" in out
    assert "bf16: at equal allocator settings" in out and sides["machine"]["cpu"]
    assert sides["ours-logits:bf16"]["params"] == ours["params"]
    kept = {side: row["keeps_freed_memory"] for side, row in sides.items() if side != "machine"}
    if sys.platform.startswith("linux"):  # ours as `fit` runs it; transformers as by default
        assert kept["ours:bf16"] and kept["transformers-kept:bf16"]
        assert not kept["ours-glibc:bf16"] and not kept["transformers:bf16"]


def test_the_paired_comparison_alternates_both_sides_in_one_process(tmp_path):
    out = run(
        "--transformers", "--paired", "--frames", "20", "--steps", "2", "--rounds", "1",
        "--json", str(tmp_path / "paired.json"),
    )  # fmt: skip
    data = json.loads((tmp_path / "paired.json").read_text())["fp32"]
    assert len(data["pair_ratios"]) == 2 and data["ratio"] > 0
    assert data["params"][0] == data["params"][1] > 0  # the same model on both sides
    assert "fp32: ours" in out and "both in one process" in out and "steps alternating" in out
    # What ours' own matmuls and attention take of its step, and the bound they set.
    kernels = data["ours_kernels"]
    assert 0 < kernels["matmul_s"] < data["ours_step_s"] and kernels["attention_s"] > 0
    assert kernels["matmul_gflops"] > 0 and kernels["reference_gflops"] > 0
    assert "with nothing else, ours would be" in out


def test_the_depth_decoder_gets_one_row_beside_the_patterns(tmp_path):
    out = run(
        "--frames", "30", "--steps", "1", "--patterns", "delay:1", "depth:1",
        "--backends", "dense", "auto", "--json", str(tmp_path / "rows.json"),
    )  # fmt: skip
    rows = json.loads((tmp_path / "rows.json").read_text())["rows"]
    assert [(r["pattern"], r["backend"]) for r in rows] == [
        ("delay", "dense"), ("delay", "auto"), ("depth", "auto")
    ]  # fmt: skip
    depth = rows[-1]
    assert depth["uses"] == "causal" and depth["positions"] == 30 and depth["gpu_flops"] > 0
    assert depth["step_s"] > 0 and "depth" in out
    estimate = run("--estimate", "--frames", "30", "--patterns", "delay:1", "depth:1")
    assert "delay k=1" in estimate and "depth" not in estimate
