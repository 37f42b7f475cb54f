from collections import Counter
from pathlib import Path

import numpy as np
import soundfile as sf

from lightning_sdm.demo.audio import clip_specs, kind_of_caption, write_demo_clips


def test_instrument_mode_and_texture_vary_independently_and_evenly():
    specs = clip_specs(64, np.random.default_rng(0))
    combos = Counter((s.timbre, s.mode, s.texture) for s in specs)
    assert len(combos) == 16
    assert set(combos.values()) == {4}
    # No word predicts another: every instrument plays both textures in both modes.
    for timbre in ("flute", "harp", "organ", "strings"):
        assert {(s.mode, s.texture) for s in specs if s.timbre == timbre} == {
            ("major", "melody"),
            ("major", "chords"),
            ("minor", "melody"),
            ("minor", "chords"),
        }


def test_clips_are_reproducible_from_the_seed(tmp_path):
    write_demo_clips(tmp_path / "a", 6, seconds=0.5, rate=8000, seed=3)
    write_demo_clips(tmp_path / "b", 6, seconds=0.5, rate=8000, seed=3)
    for name in ("clip0000", "clip0005"):
        first, _ = sf.read(tmp_path / "a" / f"{name}.wav")
        second, _ = sf.read(tmp_path / "b" / f"{name}.wav")
        assert np.array_equal(first, second)
        caption = (tmp_path / "a" / f"{name}.txt").read_text()
        assert caption == (tmp_path / "b" / f"{name}.txt").read_text()
        assert kind_of_caption(caption) is not None


def test_kind_of_caption_reads_instrument_and_texture():
    assert kind_of_caption("a slow organ melody in a minor at 75 bpm") == ("organ", "melody")
    assert kind_of_caption("a fast harp chord progression") == ("harp", "chords")
    assert kind_of_caption("a jazz trio") is None


def test_a_demo_run_elsewhere_copies_the_bundled_autoencoder_instead_of_training_it(
    tmp_path, monkeypatch
):
    from lightning_sdm.demo.run import bring_bundled_autoencoder

    checkout = tmp_path / "checkout"
    (checkout / "assets" / "demo_codec").mkdir(parents=True)
    (checkout / "assets" / "demo_codec" / "config.json").write_text("{}")
    (checkout / "assets" / "demo_codec" / "model.safetensors").write_bytes(b"weights")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    target = Path("assets/demo_codec")
    assert bring_bundled_autoencoder(target, checkout)
    assert (elsewhere / target / "model.safetensors").read_bytes() == b"weights"
    assert not bring_bundled_autoencoder(target, checkout)  # already there: left as it is
    assert not bring_bundled_autoencoder(Path("assets/none"), checkout)  # nothing to copy
