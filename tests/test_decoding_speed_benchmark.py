"""benchmarks/decoding_speed.py at a tiny size: every row, transformers and the three
floors from one interleaved run, with the fields the JSON promises."""

import json

from tests.benchmark_runs import run_benchmark


def test_every_row_and_every_floor_come_from_one_run(tmp_path):
    tiny = ["--seconds", "0.3", "--dim", "32", "--layers", "1", "--heads", "4",
            "--cardinality", "32", "--rounds", "2", "--no-static-shapes"]  # fmt: skip
    out = run_benchmark("decoding_speed.py", *tiny, "--json", str(tmp_path / "rows.json"))
    data = json.loads((tmp_path / "rows.json").read_text())
    names = [row["name"] for row in data["rows"]]
    assert names == [
        "ours delay", "ours flat", "ours stack", "ours stack_delay k=1",
        "ours stack_delay k=3", "ours depth", "ours delay (packed)", "ours delay (F.linear)",
        "ours delay (bf16)",
        "ours stack_delay k=3 (bf16)", "transformers MusicGen",
    ]  # fmt: skip
    rows = {row["name"]: row for row in data["rows"]}
    for row in data["rows"]:
        for field in ("name", "pattern", "k", "layers", "dim", "steps", "wall_s",
                      "ms_per_step", "rtf", "max_cache_keys"):  # fmt: skip
            assert field in row, field
        assert row["wall_s"] > 0 and row["ms_per_step"] > 0
    frames = 15  # 0.3 s at 50 Hz
    assert rows["ours delay"]["steps"] == rows["transformers MusicGen"]["steps"] == frames + 3
    assert rows["ours flat"]["steps"] == 4 * frames
    assert rows["ours depth"]["steps"] == frames * (1 + 4)  # temporal + depth steps
    assert rows["ours depth"]["max_cache_keys"] == frames + 4
    assert rows["ours depth"]["floor_multiple"] > 0
    assert rows["ours delay (bf16)"]["logit_max_abs_dev"] > 0
    assert rows["ours delay"]["pack_weights"] == "auto"  # measured on this machine
    # One path for every weight shape, or each shape's ("512x512 packed, 2048x512 linear").
    words = rows["ours delay"]["matmul_path"].replace(",", " ").split()
    assert words and set(words) - {"packed", "linear"} <= {w for w in words if "x" in w}
    assert rows["ours delay (packed)"]["matmul_path"] == "packed"
    assert rows["ours delay (F.linear)"]["matmul_path"] == "linear"
    machine = data["machine"]
    assert machine["cpu"] and machine["cores"] >= 1 and machine["threads"] >= 1
    assert machine["torch"] == __import__("torch").__version__
    assert f"{machine['threads']} threads, torch" in out
    for floor in ("floor", "floor_with_cache", "floor_f_linear", "floor_stack_delay", "floor_bf16",
                  "floor_depth"):  # fmt: skip
        assert data[f"{floor}_ms_per_step"] > 0
    for label in (" + mean cache reads", ", F.linear", ", stack-delay (3 pos.)", ", bf16",
                  ", depth decoder (per frame)"):  # fmt: skip
        assert f"floor{label}" in out
    # Stack-delay and delay also decode alternating, pair by pair, after the rounds.
    paired = data["stack_delay_paired"]
    assert len(paired["pair_ratios"]) == 6 and paired["ratio"] > 0
    assert "stack-delay k=3 against delay, 6 decodes each, alternating" in out


def test_the_depth_decoder_runs_beside_transformers_csm_without_cfg(tmp_path):
    tiny = ["--seconds", "0.3", "--dim", "32", "--layers", "1", "--heads", "4", "--cardinality",
            "32", "--rounds", "1", "--no-static-shapes", "--only-delay"]  # fmt: skip
    out = run_benchmark("decoding_speed.py", *tiny, "--csm", "--json", str(tmp_path / "rows.json"))
    rows = {row["name"]: row for row in json.loads((tmp_path / "rows.json").read_text())["rows"]}
    ours, csm = rows["ours depth (no CFG)"], rows["transformers CSM (no CFG)"]
    assert ours["wall_s"] > 0 and csm["wall_s"] > 0 and csm["steps"] == 15 * 4
    assert "depth decoding, 1 row, no CFG: ours" in out and "CSM backbone + depth decoder" in out
    assert rows["transformers MusicGen"]["steps"] == 18  # still the "vs HF" reference
