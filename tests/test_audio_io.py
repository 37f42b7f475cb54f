import pytest

from lightning_sdm.audio_io import slug


@pytest.mark.parametrize(
    ("caption", "name"),
    [
        ("Warm pad, slow!", "warm-pad-slow"),
        ("café crème", "café-crème"),
        ("cafe\u0301", "café"),  # decomposed accent: one name for what looks the same
        ("雨の日のピアノ", "雨の日のピアノ"),
        ("Lo-fi  __ beat", "lo-fi-beat"),
        ("🎹🎹", "sample"),
        ("", "sample"),
        ("/../etc/passwd", "etc-passwd"),
    ],
)
def test_a_caption_names_its_file_in_its_own_script(caption, name):
    assert slug(caption) == name


def test_a_long_caption_is_cut_without_a_trailing_hyphen():
    name = slug("a " * 40)
    assert len(name) <= 40 and not name.endswith("-")
