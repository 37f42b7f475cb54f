"""The registry: recorded families, files from before they were recorded, sampling options
from JSON and YAML."""

from __future__ import annotations

import dataclasses
import json

import pytest

from lightning_sdm.errors import UserInputError
from lightning_sdm.families import (
    checkpoint_family_name,
    families,
    family_named,
    family_of,
    family_of_directory,
    register,
)
from lightning_sdm.models.sampling import DiffusionSamplingConfig, SamplingConfig
from lightning_sdm.models.saving import CONFIG_FILE, FAMILY_KEY
from tests.conftest import save_tiny_dit_with_codec, tiny_model


def test_the_built_in_families_are_listed_with_their_sampling_configs():
    assert {f.name: f.sampling_config for f in families()} == {
        "lm": SamplingConfig,
        "diffusion": DiffusionSamplingConfig,
    }
    assert family_named("lm").export_formats == ("lightning_sdm", "transformers")
    assert family_of(tiny_model("delay", 1)) is family_named("lm")
    with pytest.raises(UserInputError, match="unknown model family 'gan'"):
        family_named("gan")


def test_directories_record_their_family_and_older_ones_are_still_read(tmp_path):
    lm = tiny_model("delay", 1).save_pretrained(tmp_path / "lm")
    dit = save_tiny_dit_with_codec(tmp_path / "dit")
    for directory, name in ((lm, "lm"), (dit, "diffusion")):
        config = json.loads((directory / CONFIG_FILE).read_text())
        assert config[FAMILY_KEY] == name
        del config[FAMILY_KEY]  # as written before families were recorded
        (directory / CONFIG_FILE).write_text(json.dumps(config))
        assert family_of_directory(directory).name == name
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / CONFIG_FILE).write_text("[1, 2]")
    with pytest.raises(UserInputError, match="not a lightning_sdm model config"):
        family_of_directory(tmp_path / "odd")
    (tmp_path / "odd" / CONFIG_FILE).write_text(json.dumps({FAMILY_KEY: "gan"}))
    with pytest.raises(UserInputError, match="unknown model family 'gan'"):
        family_of_directory(tmp_path / "odd")


def test_a_codec_or_text_encoder_directory_is_not_taken_for_a_model(tmp_path):
    """Pointing --model at MODEL/codec once failed as "weights and config do not match
    ('text')"; it says what the directory is and where it belongs."""
    dit = save_tiny_dit_with_codec(tmp_path / "dit")
    with pytest.raises(UserInputError, match=r"codec \(encodec\); a codec goes to --codec_dir"):
        family_of_directory(dit / "codec")
    with pytest.raises(UserInputError, match="not a saved lightning_sdm model: it holds a 't5'"):
        family_of_directory(dit / "text_encoder")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / CONFIG_FILE).write_text(json.dumps({"model_type": "musicgen"}))
    with pytest.raises(UserInputError, match="lightning-sdm import-musicgen"):
        family_of_directory(tmp_path / "hf")
    (tmp_path / "hf" / CONFIG_FILE).write_text(json.dumps({"layers": 2}))
    with pytest.raises(UserInputError, match="has no model family or text section"):
        family_of_directory(tmp_path / "hf")


def test_checkpoints_without_a_recorded_family_are_told_apart_by_what_they_hold():
    assert checkpoint_family_name({FAMILY_KEY: "diffusion", "hyper_parameters": {}}) == (
        "diffusion"
    )
    assert checkpoint_family_name({"hyper_parameters": {"lm": {}, "text": {}}}) == "lm"
    assert checkpoint_family_name({"hyper_parameters": {"dit": {}, "text": {}}}) == "diffusion"
    assert checkpoint_family_name({"hyper_parameters": {"encodec_config": {}}}) == "codec"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"temprature": 1.0}, "a codebook LM has no sampling option 'temprature'; it takes"),
        ({"top_k": 2.5}, "sampling option top_k must be an int, got 2.5"),
        ({"top_k": "many"}, "sampling option top_k must be an int"),
        ({"temperature": float("nan")}, "sampling option temperature must be a float"),
        ({"temperature": True}, "sampling option temperature must be a float"),
        ({"temperature": -1}, "temperature must be >= 0"),
        # these overflowed the scaled logits: a traceback at the first decoding step
        ({"temperature": 1e-40}, "temperature 1e-40 samples as greedy decoding does: use 0"),
        ({"cfg_scale": 1e38}, "cfg_scale must be in .0, 1e.06. .1: no guidance"),
        ([1, 2], "sampling options must map names to values"),
    ],
)
def test_sampling_options_that_cannot_be_used_are_one_line_errors(options, message):
    with pytest.raises(UserInputError, match=message.replace("(", r"\(")):
        family_named("lm").sampling_from(options)


def test_json_numbers_become_the_declared_kinds():
    sampling = family_named("lm").sampling_from({"top_k": 20.0, "temperature": 1})
    assert sampling == SamplingConfig(top_k=20, temperature=1.0)
    assert isinstance(sampling.top_k, int) and isinstance(sampling.temperature, float)
    assert family_named("diffusion").sampling_from(None) == DiffusionSamplingConfig()


def test_a_name_is_registered_once():
    lm = family_named("lm")
    assert register(lm) is lm  # the same declaration again is fine
    with pytest.raises(ValueError, match="already registered"):
        register(dataclasses.replace(lm, description="another"))
