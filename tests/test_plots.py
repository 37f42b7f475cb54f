"""`lightning-sdm plot`: loss curves from a run's metrics.csv."""

import warnings

import pytest

from lightning_sdm.cli import main
from lightning_sdm.runs.plots import plot_metrics, read_metrics

CSV = """epoch,step,train/ce,train/lr,val/ce
0,0,7.5,0.001,
0,1,7.0,0.002,
0,1,,,6.8
0,2,6.5,0.003,
0,1,6.9,0.002,
0,3,nan,0.003,
"""


def test_read_metrics_keeps_the_last_value_of_a_step_logged_twice(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(CSV)
    series = read_metrics(path)
    assert series["train/ce"] == [(0, 7.5), (1, 6.9), (2, 6.5)]  # nan dropped
    assert series["val/ce"] == [(1, 6.8)]
    assert "epoch" not in series


def test_plot_writes_a_png_beside_the_csv_of_a_run_folder(tmp_path, capsys):
    (tmp_path / "metrics.csv").write_text(CSV)
    assert main(["plot", str(tmp_path)]) == 0
    png = tmp_path / "metrics.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert str(png) in capsys.readouterr().out


def test_plot_of_a_folder_without_metrics_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"metrics\.csv not found"):
        plot_metrics(tmp_path)
    assert main(["plot", str(tmp_path)]) != 0


def test_plot_of_a_file_that_is_not_a_run_s_metrics_is_one_line(tmp_path, capsys):
    """Another CSV drew an empty figure and said 'wrote'; a wav gave the decoder's message
    without naming the file."""
    (tmp_path / "table.csv").write_text("name,score\na,1\n")
    assert main(["plot", str(tmp_path / "table.csv")]) == 2
    assert "table.csv has no step column: not the metrics.csv" in capsys.readouterr().err
    assert not (tmp_path / "table.png").exists()
    (tmp_path / "clip.wav").write_bytes(b"RIFF\x24\xf4\x00\x00WAVEfmt ")
    assert main(["plot", str(tmp_path / "clip.wav")]) == 2
    assert "clip.wav is not UTF-8 text (byte 0xf4" in capsys.readouterr().err


def test_spectrograms_are_drawn_with_axes_and_a_title(tmp_path):
    import torch
    from PIL import Image

    from lightning_sdm.audio_io import spectrogram_png

    rate = 16000
    tone = torch.sin(2 * torch.pi * 1000 * torch.arange(rate) / rate)
    path = spectrogram_png(tmp_path / "tone.png", tone, rate, "a 1 kHz test tone")
    image = Image.open(path)
    # a figure (axes, labels, colour bar), not the bare bins x frames array
    assert image.size == (800, 360) and image.mode in ("RGB", "RGBA")


def _tone_png(path, title):
    import torch

    from lightning_sdm.audio_io import spectrogram_png

    rate = 16000
    tone = torch.sin(2 * torch.pi * 1000 * torch.arange(rate) / rate)
    return spectrogram_png(path, tone, rate, title)


def test_a_title_no_installed_font_draws_is_drawn_without_a_warning_per_character(tmp_path):
    """A prompt in a script the machine has no font for printed one warning per character
    and prompt; it is drawn with boxes, quietly (the JSON holds the prompt whole)."""
    private_use = "\ue000\ue001\ue002"  # characters no font has
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = _tone_png(tmp_path / "x.png", f"drums {private_use}")
    assert path.is_file()


def test_titles_fall_back_to_installed_fonts_of_other_scripts(monkeypatch):
    from matplotlib import font_manager

    from lightning_sdm.runs import plots

    installed = [font_manager.FontEntry(name=name) for name in ("DejaVu Sans", "Malgun Gothic")]
    monkeypatch.setattr(font_manager.fontManager, "ttflist", installed)
    plots.title_families.cache_clear()
    try:
        assert plots.title_families() == ["DejaVu Sans", "Malgun Gothic"]
    finally:
        plots.title_families.cache_clear()


@pytest.mark.skipif(
    len(__import__("lightning_sdm.runs.plots").runs.plots.title_families()) < 2,
    reason="no font for CJK installed here",
)
def test_a_cjk_title_is_drawn_in_an_installed_cjk_font(tmp_path, monkeypatch):
    """Drawn, not boxed: the title differs from the same title in DejaVu Sans alone."""
    from PIL import Image, ImageChops

    from lightning_sdm.runs import plots

    drawn = Image.open(_tone_png(tmp_path / "cjk.png", "日本の音楽")).convert("RGB")
    monkeypatch.setattr(plots, "title_families", lambda: ["DejaVu Sans"])
    boxed = Image.open(_tone_png(tmp_path / "box.png", "日本の音楽")).convert("RGB")
    title_band = (0, 0, 800, 30)
    difference = ImageChops.difference(drawn.crop(title_band), boxed.crop(title_band))
    assert difference.getbbox() is not None


def test_a_loss_spike_does_not_flatten_the_curve(tmp_path):
    """One diverging step (loss 400 in a run near 3) set the axis to 0-400: the whole run
    drew as a flat line at the bottom. The axis is cut above the spread of the other
    points, and the cut points are counted on the figure."""
    from lightning_sdm.runs.plots import plot_metrics, spike_cut

    losses = [3.0 + 5.0 * 0.98**step for step in range(200)]
    assert spike_cut(losses) is None  # a plain decay is drawn whole
    spiked = [*losses[:100], 400.0, 400.0, *losses[100:]]
    top = spike_cut(spiked)
    assert top is not None and max(losses) <= top < 20
    assert spike_cut([3.0, 400.0]) is None  # too few points to tell a spike from a start
    rows = ["step,train/loss,train/lr"] + [f"{s},{v},0.001" for s, v in enumerate(spiked)]
    (tmp_path / "metrics.csv").write_text("\n".join(rows) + "\n")
    assert plot_metrics(tmp_path).is_file()


def test_a_run_of_one_logged_step_draws_its_point(tmp_path):
    """Early in a run metrics.csv holds one step; a line through one point drew nothing."""
    import matplotlib.image

    (tmp_path / "metrics.csv").write_text("step,train/ce,train/lr\n3,4.0,0.001\n")
    pixels = matplotlib.image.imread(plot_metrics(tmp_path))[..., :3]
    lr_panel = pixels[int(0.7 * len(pixels)) :]  # the learning-rate panel has no legend
    green = (abs(lr_panel - [44 / 255, 160 / 255, 44 / 255]).max(axis=-1) < 0.1).sum()
    assert green > 20


def test_a_fallback_font_without_a_normal_weight_is_used_without_a_log_line(tmp_path, caplog):
    """WenQuanYi Zen Hei has only a medium weight: matplotlib logged "findfont: Failed to
    find font weight normal ..." into the middle of a run's progress output."""
    from matplotlib import font_manager

    from lightning_sdm.runs.plots import title_families

    if "WenQuanYi Zen Hei" not in title_families():
        pytest.skip("needs WenQuanYi Zen Hei installed (fonts-wqy-zenhei)")
    font_manager.fontManager._findfont_cached.cache_clear()  # matched once per process
    with caplog.at_level("INFO", logger="matplotlib.font_manager"):
        _tone_png(tmp_path / "cjk.png", "雨の日のピアノ")
    assert not [r for r in caplog.records if "findfont" in r.getMessage()]


def test_a_loss_spike_does_not_lift_the_smoothed_curve(tmp_path, monkeypatch):
    """The smoothed train curve carried a 400 spike for ~15 steps above the cut axis."""
    import matplotlib.axes

    from lightning_sdm.runs.plots import spike_cut

    drawn = {}
    original = matplotlib.axes.Axes.plot

    def recording_plot(self, *args, **kwargs):
        if kwargs.get("label") == "train (smoothed)":
            drawn["smoothed"] = list(args[1])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", recording_plot)
    losses = [3.0 + 5.0 * 0.98**step for step in range(200)]
    spiked = [*losses[:100], 400.0, 400.0, *losses[100:]]
    rows = ["step,train/loss"] + [f"{s},{v}" for s, v in enumerate(spiked)]
    (tmp_path / "metrics.csv").write_text("\n".join(rows) + "\n")
    plot_metrics(tmp_path)
    smoothed = drawn["smoothed"]
    assert spike_cut(spiked) is not None and max(smoothed[100:]) <= smoothed[99]
