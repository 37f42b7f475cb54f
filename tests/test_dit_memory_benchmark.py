"""benchmarks/dit_memory.py at a tiny size: both modulations measured, the paper's sizes."""

import json

from tests.benchmark_runs import run_benchmark


def test_both_modulations_are_measured_side_by_side(tmp_path):
    tiny = ["--dim", "32", "--depth", "2", "--heads", "2", "--rank", "4", "--channels", "8",
            "--frames", "20", "--batch", "1", "--steps", "1"]  # fmt: skip
    out = run_benchmark("dit_memory.py", *tiny, "--json", str(tmp_path / "rows.json"))
    data = json.loads((tmp_path / "rows.json").read_text())
    assert data["machine"]["cpu"] and data["machine"]["torch"] and "threads, torch" in out
    sola, per_block = data["rows"]
    assert (sola["modulation"], per_block["modulation"]) == ("sola", "per_block")
    # 3 blocks: SOLA's shared Linear(32, 192) and 3 x (rank-4 adjustment + bias) against
    # 3 x Linear(32, 192)
    assert sola["modulation_parameters"] == 32 * 192 + 192 + 3 * (32 * 24 + 24 * 192 + 192)
    assert per_block["modulation_parameters"] == 3 * (32 * 192 + 192)
    assert sola["step_s"] > 0 and sola["peak_mb"] > 0
    sizes = {(size, kind): count for size, kind, count in data["paper_sizes"]}
    assert abs(sizes["EzAudio-L", "sola"] - 596e6) / 596e6 < 0.005
    assert sizes["EzAudio-XL", "per_block"] > sizes["EzAudio-XL", "sola"]
    assert "EzAudio-L" in out and "vs SOLA" in out
