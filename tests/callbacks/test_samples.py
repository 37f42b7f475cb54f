"""Samples longer than the training crops continue window by window, as generate does."""

from __future__ import annotations

import soundfile

from lightning_sdm.callbacks.samples import SampleGeneration
from lightning_sdm.codecs import CodecConfig
from lightning_sdm.generation import windows
from tests.tasks.test_lm_task import tiny_data, tiny_task, trainer


def test_a_sample_longer_than_the_crops_is_made_in_windows(tmp_path, monkeypatch):
    calls = []
    original = windows.generate_in_windows

    def spy(generate_window, total, plan, prompt=None):
        calls.append((total, plan.window, plan.stride))
        return original(generate_window, total, plan, prompt)

    monkeypatch.setattr("lightning_sdm.callbacks.samples.generate_in_windows", spy)
    samples = SampleGeneration(
        prompts=["caption of item0001"], every_n_steps=0, at_validation_end=False,
        seconds=1.0, codec=CodecConfig(pretrained="random"),
    )  # fmt: skip
    trainer(tmp_path, 2, callbacks=[samples]).fit(tiny_task(), datamodule=tiny_data(tmp_path))
    assert calls == [(50, 20, 12)]  # 1 s at 50 Hz over the 0.4 s crops, 60 % new per window
    audio, rate = soundfile.read(samples.written[-1])
    assert len(audio) == rate  # the whole second
