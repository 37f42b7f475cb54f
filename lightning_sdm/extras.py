"""Optional dependencies: what each extra brings, and one line naming the extra to install
when a command needs one that is missing."""

from __future__ import annotations

import importlib.util

from lightning_sdm.errors import UserInputError

# extra -> the modules it installs (pyproject's [project.optional-dependencies])
EXTRAS = {"serve": ("fastapi", "uvicorn"), "diffusion": ("diffusers",)}


def require_extra(extra: str, purpose: str) -> None:
    """Raise UserInputError naming `pip install 'lightning_sdm[extra]'` when a module of
    `extra` is not installed."""
    missing = [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]
    if missing:
        raise UserInputError(
            f"{purpose} needs {', '.join(missing)}: pip install 'lightning_sdm[{extra}]'"
        )
