from lightning_sdm.errors import first_line


def test_first_line_of_a_library_message_or_nothing():
    assert first_line(RuntimeError("\n  Weights only load failed.\nIn PyTorch 2.6 ...")) == (
        "Weights only load failed."
    )
    assert first_line(OSError()) == ""
