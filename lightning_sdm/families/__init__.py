"""Model families, declared once (`registry`); the built-in ones are `lm` and `diffusion`."""

from lightning_sdm.families.registry import (
    ModelFamily,
    checkpoint_family_name,
    families,
    family_named,
    family_of,
    family_of_checkpoint,
    family_of_directory,
    register,
    unregister,
)

__all__ = [
    "ModelFamily",
    "checkpoint_family_name",
    "families",
    "family_named",
    "family_of",
    "family_of_checkpoint",
    "family_of_directory",
    "register",
    "unregister",
]
