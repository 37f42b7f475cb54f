"""lightning_sdm.data.audio: why a file that cannot be loaded was refused."""

import os
import threading

import numpy as np
import pytest
import soundfile as sf

from lightning_sdm.data.audio import AudioRejected, load_mono


def test_a_missing_file_or_a_folder_is_named_as_such_not_as_a_system_error(tmp_path):
    with pytest.raises(AudioRejected, match=r"^missing audio file \(no such file\)$"):
        load_mono(tmp_path / "gone.wav", 32000)
    (tmp_path / "folder.wav").mkdir()
    with pytest.raises(AudioRejected, match=r"^a folder, not an audio file$"):
        load_mono(tmp_path / "folder.wav", 32000)
    os.mkfifo(tmp_path / "pipe.wav")  # read twice (header, data): it waited for a writer
    outcome: list[BaseException] = []

    def load_the_pipe() -> None:
        try:
            load_mono(tmp_path / "pipe.wav", 32000)
        except BaseException as error:  # handed to the test's thread
            outcome.append(error)

    loader = threading.Thread(target=load_the_pipe, daemon=True)
    loader.start()
    loader.join(timeout=10)
    assert not loader.is_alive(), "loading a named pipe blocked"
    assert isinstance(outcome[0], AudioRejected)
    assert str(outcome[0]).startswith("not a regular file (a pipe or a device)")
    (tmp_path / "junk.wav").write_bytes(b"not audio")
    with pytest.raises(AudioRejected, match=r"^unreadable audio: "):
        load_mono(tmp_path / "junk.wav", 32000)
    sf.write(tmp_path / "ok.wav", np.zeros(3200), 32000)
    assert load_mono(tmp_path / "ok.wav", 32000).samples.shape == (3200,)
