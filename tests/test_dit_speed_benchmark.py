"""benchmarks/dit_speed.py at a tiny size: this checkout beside a git revision of itself,
both timed, their outputs compared on the same weights."""

import json
import sys

from tests.benchmark_runs import run_benchmark


def test_a_revision_is_timed_beside_this_checkout_on_the_same_weights(tmp_path):
    tiny = ["--dim", "32", "--depth", "2", "--heads", "4", "--rank", "4", "--channels", "8",
            "--frames", "12", "--batch", "2", "--sample-frames", "12", "--steps", "1",
            "--rounds", "2"]  # fmt: skip
    out = run_benchmark(
        "dit_speed.py", *tiny, "--baseline", "HEAD", "--json", str(tmp_path / "r.json")
    )
    data = json.loads((tmp_path / "r.json").read_text())
    for side in ("this checkout", "baseline HEAD"):
        assert data[side]["train_ms"] > 0 and data[side]["sample_ms"] > 0
    # HEAD's DiT is this checkout's or an earlier one that computes the same function.
    assert data["baseline HEAD"]["output_max_abs_difference"] <= 1e-4
    assert "baseline HEAD against this checkout: training" in out and data["machine"]["cpu"]
    # Each side runs as `lightning-sdm` runs its revision: this one keeps freed memory.
    assert data["this checkout"]["keeps_freed_memory"] is sys.platform.startswith("linux")
    # This checkout's steps profiled: their matmul and attention kernels, and the bound.
    for step in ("train", "sample"):
        kernels = data["this checkout"]["kernels"][step]
        assert 0 < kernels["matmul_s"] * 1000 < data["this checkout"][f"{step}_ms"]
        assert kernels["attention_s"] > 0 and kernels["reference_gflops"] > 0
        assert f"this checkout's {step} step: matmuls" in out
    assert "would have this speed: " in out and "x baseline HEAD's" in out
