"""A command that needs an extra that is not installed names the extra in one line."""

from __future__ import annotations

import importlib.util

import pytest

from lightning_sdm.cli import main
from lightning_sdm.errors import UserInputError
from lightning_sdm.models.text_to_audio_diffusion import DiffusionConfig


@pytest.fixture
def without(monkeypatch):
    def hide(*modules: str) -> None:
        found = importlib.util.find_spec
        monkeypatch.setattr(
            importlib.util,
            "find_spec",
            lambda name, *a: None if name in modules else found(name, *a),
        )

    return hide


def test_diffusion_without_diffusers_names_its_extra(without):
    without("diffusers")
    with pytest.raises(UserInputError, match=r"pip install 'lightning_sdm\[diffusion\]'"):
        DiffusionConfig().scheduler()


def test_serve_without_fastapi_names_its_extra(without, capsys):
    without("fastapi")
    assert main(["serve"]) == 2
    assert "serve needs fastapi: pip install 'lightning_sdm[serve]'" in capsys.readouterr().err


def test_everything_the_package_offers_is_installed_here():
    from lightning_sdm.extras import EXTRAS

    for modules in EXTRAS.values():
        assert all(importlib.util.find_spec(module) for module in modules)
