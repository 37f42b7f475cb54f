"""The codebook LM family: T5-conditioned transformer over EnCodec tokens, decoded through
a codebook pattern."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning_sdm.codecs import EncodecCodec
from lightning_sdm.errors import UserInputError
from lightning_sdm.families.registry import ModelFamily, register
from lightning_sdm.generation.family_generation import lm_generation
from lightning_sdm.models.text_to_music import TextToMusicLM
from lightning_sdm.tasks.lm_task import TextToMusicTask


def check_codec(codec: EncodecCodec, model: TextToMusicLM) -> None:
    """The codec decodes what the model predicts: its codebooks and their size."""
    if codec.num_codebooks != model.num_levels or codec.cardinality != model.cardinality:
        raise UserInputError(
            f"the codec has {codec.num_codebooks} codebooks of {codec.cardinality} codes, "
            f"the model predicts {model.num_levels} of {model.cardinality}: pass the codec "
            "the model was trained with (--codec_dir)"
        )


def export_musicgen(model: TextToMusicLM, codec: Any, output: Path) -> Path:
    """transformers' MusicgenForConditionalGeneration (delay models with its layout)."""
    from lightning_sdm.convert.to_transformers import export_to_transformers

    return export_to_transformers(model, codec, output)


LM_FAMILY = register(
    ModelFamily(
        model_class=TextToMusicLM,
        task_class=TextToMusicTask,
        description="a codebook LM",
        options_section="sampling",
        generation=lm_generation,
        check_codec=check_codec,
        exporters={"transformers": export_musicgen},
    )
)
