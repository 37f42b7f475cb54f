"""Hugging Face models load whole from local folders or not at all."""

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import T5Config, T5EncoderModel
from transformers.utils import logging as transformers_logging

from lightning_sdm.errors import UserInputError
from lightning_sdm.local_weights import load_whole


@pytest.fixture
def t5_dir(tmp_path):
    config = T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=4)
    T5EncoderModel(config).save_pretrained(tmp_path / "t5")
    return tmp_path / "t5"


def test_a_whole_folder_loads_and_transformers_verbosity_is_restored(t5_dir):
    before = transformers_logging.get_verbosity()
    model = load_whole(T5EncoderModel, t5_dir, "T5 directory")
    assert isinstance(model, T5EncoderModel)
    assert transformers_logging.get_verbosity() == before


def test_a_copy_missing_tensors_is_refused_not_filled_at_random(t5_dir):
    weights = t5_dir / "model.safetensors"
    state = load_file(weights)
    save_file({k: v for k, v in state.items() if ".k." not in k}, weights)
    with pytest.raises(UserInputError, match=r"T5 directory .*t5: its weights lack 1 of"):
        load_whole(T5EncoderModel, t5_dir, "T5 directory")


def test_a_folder_without_weights_says_so_in_one_line(t5_dir):
    (t5_dir / "model.safetensors").unlink()
    with pytest.raises(UserInputError, match=r"T5 directory .*t5 does not load \(") as error:
        load_whole(T5EncoderModel, t5_dir, "T5 directory")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("keep", [100, "half"])
def test_a_weights_file_cut_short_is_one_line(t5_dir, keep):
    """A copy stopped half way (a full disk, an interrupted rsync): the safetensors reader
    raises its own error type, which came out as a traceback through generate and fit."""
    weights = t5_dir / "model.safetensors"
    size = weights.stat().st_size
    with weights.open("r+b") as handle:
        handle.truncate(size // 2 if keep == "half" else keep)
    with pytest.raises(
        UserInputError, match=r"T5 directory .*t5 does not load: a weights file"
    ) as error:
        load_whole(T5EncoderModel, t5_dir, "T5 directory")
    assert "truncated or damaged" in str(error.value) and "\n" not in str(error.value)


def test_a_diffusers_folder_missing_tensors_is_refused_too(tmp_path):
    from diffusers import AutoencoderOobleck

    small = {"encoder_hidden_size": 4, "decoder_channels": 4, "decoder_input_channels": 2}
    AutoencoderOobleck(
        **small, channel_multiples=[1, 2], downsampling_ratios=[2, 2]
    ).save_pretrained(tmp_path / "vae")
    weights = tmp_path / "vae" / "diffusion_pytorch_model.safetensors"
    save_file({k: v for k, v in load_file(weights).items() if "decoder" not in k}, weights)
    with pytest.raises(UserInputError, match=r"VAE directory .*vae: its weights lack"):
        load_whole(AutoencoderOobleck, tmp_path / "vae", "VAE directory")


def test_weights_of_another_size_than_the_config_are_one_line(t5_dir):
    """config.json of one model beside the weights of another (a mixed copy): transformers
    raised its own RuntimeError with a multi-line report, a traceback through every command."""
    weights = t5_dir / "model.safetensors"
    state = load_file(weights)
    state["shared.weight"] = state["shared.weight"][:32].clone()
    save_file(state, weights)
    with pytest.raises(UserInputError, match=r"T5 directory .*t5: 1 of its tensors") as error:
        load_whole(T5EncoderModel, t5_dir, "T5 directory")
    message = str(error.value)
    assert "shared.weight" in message and "32 × 16 in the file, 64 × 16" in message
    assert "\n" not in message


def test_a_diffusers_folder_with_tensors_of_another_size_is_one_line(tmp_path):
    from diffusers import AutoencoderOobleck

    small = {"encoder_hidden_size": 4, "decoder_channels": 4, "decoder_input_channels": 2}
    AutoencoderOobleck(
        **small, channel_multiples=[1, 2], downsampling_ratios=[2, 2]
    ).save_pretrained(tmp_path / "vae")
    weights = tmp_path / "vae" / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    name = next(k for k, v in state.items() if v.dim() == 3)
    state[name] = torch.cat([state[name], state[name]])
    save_file(state, weights)
    with pytest.raises(UserInputError, match=r"VAE directory .*vae: 1 of its tensors") as error:
        load_whole(AutoencoderOobleck, tmp_path / "vae", "VAE directory")
    assert name in str(error.value) and "\n" not in str(error.value)
