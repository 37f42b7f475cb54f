"""`lightning-sdm evaluate` end to end on generated wavs, with tiny random backends."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from lightning_sdm.cli import main
from lightning_sdm.codecs import EncodecCodec
from tests.conftest import tiny_model
from tests.metrics.backends import save_tiny_ast, save_tiny_clap

PROMPTS = ["a slow harp melody", "fast organ chords"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    tiny_model("delay", 1, cardinality=2048).save_pretrained(root / "model")
    torch.manual_seed(0)
    EncodecCodec().save_pretrained(root / "model" / "codec")
    argv = ["generate", "--model", str(root / "model"), "--seconds", "0.5", "--no-progress"]
    argv += [w for p in PROMPTS for w in ("--prompt", p)] + ["--output_dir", str(root / "gen")]
    assert main(argv) == 0
    (root / "ref").mkdir()
    rng = np.random.default_rng(0)
    for index, caption in enumerate([*PROMPTS, "an unpaired reference"]):
        t = np.arange(16000) / 16000
        wav = 0.3 * np.sin(2 * np.pi * (220 + 110 * index) * t) + 0.01 * rng.normal(size=16000)
        soundfile.write(root / "ref" / f"r{index}.wav", wav, 16000)
        (root / "ref" / f"r{index}.txt").write_text(caption)
    save_tiny_clap(root / "clap")
    save_tiny_ast(root / "ast")
    return root


def test_evaluate_writes_every_metric_with_intervals_and_backends(folders, tmp_path, capsys):
    argv = [
        "evaluate", str(folders / "gen"), "--reference", str(folders / "ref"),
        "--codec_dir", str(folders / "model" / "codec"), "--ast_dir", str(folders / "ast"),
        "--clap_dir", str(folders / "clap"), "--bootstrap", "20", "--output", str(tmp_path),
    ]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| metric | value | 95 % interval | clips | backend |" in printed
    report = json.loads((tmp_path / "evaluation.json").read_text())
    by_name = {m["metric"]: m for m in report["metrics"]}
    assert set(by_name) == {"fad", "kld", "clap", "rtf"}
    fad = by_name["fad"]
    assert fad["value"] > 0 and fad["details"]["real_clips"] == 3 and fad["clips"] == 2
    assert fad["interval"][0] <= fad["interval"][1] and "codec latents" in fad["backend"]
    assert by_name["kld"]["details"] == {
        "pairs": 2, "unpaired_generated": 0, "activation": "softmax",
    }  # fmt: skip
    assert str(folders / "ast") in by_name["kld"]["backend"]
    assert -1 <= by_name["clap"]["value"] <= 1 and by_name["clap"]["clips"] == 2
    rtf = by_name["rtf"]
    assert rtf["value"] > 0 and rtf["interval"][0] <= rtf["value"] <= rtf["interval"][1]
    # 50 generated latent frames of the tiny codec's 16 dimensions: no note under the table
    assert (tmp_path / "evaluation.md").read_text().count("\n") == 6 and "note" not in fad[
        "details"
    ]


def test_a_metric_without_its_model_stops_or_is_skipped_by_name(folders, tmp_path, capsys):
    argv = ["evaluate", str(folders / "gen"), "--reference", str(folders / "ref")]
    assert main([*argv, "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "kld needs --ast_dir" in err and "clap needs --clap_dir" in err
    assert "--skip_missing" in err
    skip = [*argv, "--skip_missing", "true", "--metrics", "[fad, kld, rtf]"]
    assert (
        main([*skip, "--codec_dir", str(folders / "model" / "codec"), "--output", str(tmp_path)])
        == 0
    )
    out = capsys.readouterr().out
    assert "skipped kld: no --ast_dir given" in out
    metrics = json.loads((tmp_path / "evaluation.json").read_text())["metrics"]
    assert [m["metric"] for m in metrics] == ["fad", "rtf"]


def test_a_bootstrap_past_its_bound_is_one_line_before_any_work(folders, tmp_path, capsys):
    """--bootstrap 100000000 computed FAD resamplings for hours without a word (and drew
    resamplings x clips integers at once for the other metrics)."""
    argv = ["evaluate", str(folders / "gen"), "--metrics", "[rtf]", "--output", str(tmp_path)]
    assert main([*argv, "--bootstrap", "100000000"]) == 2
    err = capsys.readouterr().err
    assert "--bootstrap must be in [0, 10000] (1000 is usual" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "evaluation.json").exists()
    assert main([*argv, "--bootstrap", "10000"]) == 0


def test_a_second_evaluation_into_the_same_folder_is_refused_before_any_work(
    folders, tmp_path, capsys
):
    """Scoring system B into the folder that held system A's report replaced it silently
    (the default --output is one folder for all)."""
    argv = ["evaluate", str(folders / "gen"), "--metrics", "[rtf]", "--output", str(tmp_path)]
    assert main(argv) == 0
    kept = {name: (tmp_path / name).read_bytes() for name in ("evaluation.json", "evaluation.md")}
    capsys.readouterr()
    assert main([*argv, "--bootstrap", "10"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: {tmp_path / 'evaluation.json'} holds an earlier evaluation (of "
        f"{folders / 'gen'}): pass --overwrite to replace it, or --output another folder"
    )
    assert all((tmp_path / name).read_bytes() == data for name, data in kept.items())
    assert main([*argv, "--bootstrap", "10", "--overwrite", "true"]) == 0
    assert json.loads((tmp_path / "evaluation.json").read_text())["inputs"]["bootstrap"] == 10
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial left


def test_evaluate_refuses_an_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    argv = ["evaluate", str(tmp_path / "empty"), "--metrics", "[rtf]"]
    assert main(argv) == 2
    assert "generated: no audio clips found" in capsys.readouterr().err


def test_unreadable_files_are_left_out_said_and_named_in_the_report(folders, tmp_path, capsys):
    """One torn file in a reference set once stopped the whole evaluation."""
    reference = tmp_path / "ref"
    reference.mkdir()
    for wav in (folders / "ref").glob("*.wav"):
        (reference / wav.name).write_bytes(wav.read_bytes())
    (reference / "torn.wav").write_bytes((folders / "ref" / "r0.wav").read_bytes()[:30])
    (reference / "text.wav").write_text("not audio")
    argv = ["evaluate", str(folders / "gen"), "--reference", str(reference), "--skip_missing"]
    argv += ["true", "--metrics", "[fad, rtf]", "--codec_dir", str(folders / "model" / "codec")]
    assert main([*argv, "--output", str(tmp_path / "out")]) == 0
    assert "reference: left out 2 of 5 files that do not read (" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "out" / "evaluation.json").read_text())["metrics"]
    fad, rtf = metrics
    assert fad["details"]["real_clips"] == 3
    assert sorted(f.split(":")[0] for f in fad["details"]["left_out"]["reference"]) == [
        str(reference / "text.wav"), str(reference / "torn.wav"),
    ]  # fmt: skip
    assert "left_out" not in rtf["details"]  # it reads no reference
    # the markdown report, read later without the console, says it too
    report = (tmp_path / "out" / "evaluation.md").read_text()
    assert "- left out: 2 reference files that do not read (named in evaluation.json)" in report
    for wav in reference.glob("r*.wav"):
        wav.write_text("not audio either")
    assert main([*argv, "--output", str(tmp_path / "out2")]) == 2
    assert "reference: none of the 5 audio files" in capsys.readouterr().err


def test_fad_on_vggish_weights(folders, tmp_path, capsys):
    from lightning_sdm.metrics.vggish import VGGish

    torch.manual_seed(0)
    torch.save(VGGish().state_dict(), tmp_path / "vggish.pth")
    argv = ["evaluate", str(folders / "gen"), "--reference", str(folders / "ref")]
    argv += ["--metrics", "[fad]", "--vggish_weights", str(tmp_path / "vggish.pth")]
    assert main([*argv, "--output", str(tmp_path / "out")]) == 0
    (fad,) = json.loads((tmp_path / "out" / "evaluation.json").read_text())["metrics"]
    assert fad["backend"].startswith("vggish:") and fad["details"]["real_frames"] == 3


def test_fad_on_clap_audio_embeddings_and_a_missing_choice(folders, tmp_path, capsys):
    argv = [
        "evaluate",
        str(folders / "gen"),
        "--reference",
        str(folders / "ref"),
        "--metrics",
        "[fad]",
    ]
    assert main([*argv, "--fad_on", "clap", "--output", str(tmp_path)]) == 2
    assert "--fad_on clap needs --clap_dir" in capsys.readouterr().err
    # --fad_on codec with a reference of audio: the codec generate decoded the set with
    assert main([*argv, "--fad_on", "codec", "--output", str(tmp_path)]) == 0
    codec = (folders / "model" / "codec").resolve()
    assert f"fad: on the latents of {codec}, which decoded" in capsys.readouterr().out
    (fad,) = json.loads((tmp_path / "evaluation.json").read_text())["metrics"]
    assert fad["backend"].startswith(f"codec latents: {codec}")
    clap = ["--fad_on", "clap", "--clap_dir", str(folders / "clap"), "--output", str(tmp_path)]
    clap += ["--overwrite", "true"]  # the codec FAD's report, replaced
    assert main([*argv, *clap]) == 0
    (fad,) = json.loads((tmp_path / "evaluation.json").read_text())["metrics"]
    assert str(folders / "clap") in fad["backend"] and fad["details"]["real_clips"] == 3


def test_token_shards_as_the_reference_are_decoded_with_their_codec(folders, tmp_path, capsys):
    codec = str(folders / "model" / "codec")
    tokenize = ["tokenize", str(folders / "ref"), str(tmp_path / "shards"), "--codec-dir", codec]
    assert main([*tokenize, "--no-progress", "--accelerator", "cpu"]) == 0
    argv = ["evaluate", str(folders / "gen"), "--reference", str(tmp_path / "shards")]
    argv += ["--metrics", "[fad]", "--output", str(tmp_path / "out")]
    assert main(argv) == 2  # FAD on codec latents needs --codec_dir; the index names it
    assert "fad needs" in capsys.readouterr().err
    assert main([*argv, "--codec_dir", codec]) == 0
    (fad,) = json.loads((tmp_path / "out" / "evaluation.json").read_text())["metrics"]
    assert fad["details"]["real_clips"] == 3 and fad["value"] > 0
    # --fad_on codec without --codec_dir: the codec the shards' index names, said
    capsys.readouterr()
    assert main([*argv, "--fad_on", "codec", "--overwrite", "true"]) == 0
    assert f"fad: on the latents of {Path(codec).resolve()}, the codec" in capsys.readouterr().out
    (named,) = json.loads((tmp_path / "out" / "evaluation.json").read_text())["metrics"]
    assert named["value"] == fad["value"]
    from tests.data.http_fixtures import FolderServer

    with FolderServer(tmp_path / "shards") as server:  # the same shards, served over HTTP
        remote = ["evaluate", str(folders / "gen"), "--reference", server.url]
        remote += ["--metrics", "[fad]", "--output", str(tmp_path / "remote")]
        assert main([*remote, "--codec_dir", codec]) == 0
        missing = [*remote[:3], server.url + "/nothing", *remote[4:], "--overwrite", "true"]
        assert main([*missing, "--codec_dir", codec]) == 2
    assert "/nothing has no index.json" in capsys.readouterr().err
    (remote_fad,) = json.loads((tmp_path / "remote" / "evaluation.json").read_text())["metrics"]
    assert remote_fad["value"] == fad["value"]
