"""The `lightning-sdm` command line: `main` dispatches, `commands` holds the typed
functions of the non-training commands, `fit` the LightningCLI of the training ones,
`parsing` what every parser shares (errors first, with a suggestion)."""

from lightning_sdm.cli.main import main

__all__ = ["main"]
