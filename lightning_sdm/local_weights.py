"""Hugging Face models from local directories, whole or not at all.

`from_pretrained` fills every tensor a directory's weights lack with a fresh random one and
only logs it, so a copy cut short (a full disk, a download stopped half way) or the wrong
folder would encode, condition or score with noise and say nothing; a tensor of another
shape than the folder's config.json says (one model's config beside another's weights)
ended in the library's multi-line report. Here each is an error that names the folder.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, TypeVar

from safetensors import SafetensorError

from lightning_sdm.errors import UserInputError, first_line

Model = TypeVar("Model")


def load_whole(model_class: type[Model], path: str | Path, what: str, **options: Any) -> Model:
    """`model_class.from_pretrained(path)` from local files only; `what` names the
    directory's role in the messages ("EnCodec directory", "T5 directory"); a transformers
    or diffusers class. The library's own load report is kept quiet: what it would list as
    missing is this error instead."""
    library = logging.getLogger(model_class.__module__.partition(".")[0])
    level = library.level
    library.setLevel(logging.ERROR)
    try:
        # Mismatched shapes are reported in `loading` (and refused below), not raised.
        model, loading = model_class.from_pretrained(  # type: ignore[attr-defined]
            path,
            local_files_only=True,
            output_loading_info=True,
            ignore_mismatched_sizes=True,
            **options,
        )
    except (OSError, ValueError, KeyError) as error:
        reason = first_line(error) or type(error).__name__
        raise UserInputError(f"{what} {path} does not load ({reason})") from error
    except SafetensorError as error:  # not an OSError: a copy cut short, or damaged
        raise UserInputError(
            f"{what} {path} does not load: a weights file is not whole (truncated or "
            f"damaged: {first_line(error)})"
        ) from error
    finally:
        library.setLevel(level)
    mismatched = sorted(loading.get("mismatched_keys") or [], key=lambda entry: entry[0])
    if mismatched:
        name, in_file, in_model = mismatched[0]
        raise UserInputError(
            f"{what} {path}: {len(mismatched)} of its tensors have another shape than its "
            f"config.json gives (e.g. {name}: {_shape(in_file)} in the file, "
            f"{_shape(in_model)} in the model): a config and weights of different models?"
        )
    missing = sorted(loading["missing_keys"])
    if missing:
        raise UserInputError(
            f"{what} {path}: its weights lack {len(missing)} of the model's tensors "
            f"(e.g. {missing[0]}): an incomplete copy, or another model's folder?"
        )
    return model


def _shape(shape: Any) -> str:
    return " × ".join(str(size) for size in shape)
