"""Import a local Hugging Face MusicGen checkpoint as one of our model directories.

MusicGen is our delay pattern with layout choices of its own, each one of our config
options: tensor2tensor-spaced sinusoids (`lm.positional`), no FFN or head biases
(`lm.ffn_bias`, `lm.head_bias`) and a zero null condition for CFG (`text.unconditional`).
Everything else maps weight for weight, so the imported model gives transformers' logits.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, MusicgenForConditionalGeneration

from lightning_sdm.atomic import check_output_folder, write_directory
from lightning_sdm.codecs import CodecConfig, load_codec
from lightning_sdm.codecs.identity import TRAINED_CODEC_KEY
from lightning_sdm.conditioning import T5Conditioner, TextConditionerConfig
from lightning_sdm.convert.export import CODEC_DIR, EXPORT_FILE
from lightning_sdm.errors import UserInputError
from lightning_sdm.local_weights import load_whole
from lightning_sdm.models.lm import LMConfig
from lightning_sdm.models.text_to_music import TextToMusicConfig, TextToMusicLM

MUSICGEN_SECONDS = 30.0  # the crop length MusicGen was trained on


def read_musicgen(directory: str | Path) -> MusicgenForConditionalGeneration:
    path = Path(directory)
    if not (path / "config.json").is_file():
        raise UserInputError(
            f"{path} is not a MusicGen directory (no config.json); point it at a local copy "
            "of e.g. facebook/musicgen-small (this code never downloads weights)"
        )
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        kind = config.get("model_type")
    except (ValueError, UnicodeDecodeError, AttributeError) as error:
        raise UserInputError(f"{path}/config.json is not a JSON object ({error})") from error
    if kind != "musicgen":
        held = f"a {kind!r} model" if kind else "a config without a model_type"
        if kind is None and "text" in config:
            held = "a lightning_sdm model already (generate and fit read it as it is)"
        raise UserInputError(f"{path} is not a MusicGen directory: it holds {held}")
    model = load_whole(MusicgenForConditionalGeneration, path, "MusicGen directory")
    return model.eval()


def musicgen_config(model: MusicgenForConditionalGeneration, text_dir: str) -> TextToMusicConfig:
    decoder = model.config.decoder
    if decoder.audio_channels != 1:
        raise UserInputError("stereo MusicGen checkpoints are not supported (mono only)")
    if getattr(decoder, "scale_embedding", False):  # token embeddings times sqrt(width)
        raise UserInputError(
            "MusicGen checkpoints with scale_embedding: true are not supported (their "
            "embeddings are scaled by sqrt(hidden_size); the released ones are not)"
        )
    if decoder.activation_function != "gelu":
        raise UserInputError(f"activation {decoder.activation_function!r} is not supported")
    if decoder.pad_token_id != decoder.vocab_size:
        raise UserInputError(
            f"expected the pad/start token at id {decoder.vocab_size}, got {decoder.pad_token_id}"
        )
    lm = LMConfig(
        dim=decoder.hidden_size,
        num_layers=decoder.num_hidden_layers,
        num_heads=decoder.num_attention_heads,
        ffn_dim=decoder.ffn_dim,
        num_levels=decoder.num_codebooks,
        cardinality=decoder.vocab_size,
        dropout=float(decoder.dropout),
        pattern="delay",
        interleave=1,
        positional="tensor2tensor",
        ffn_bias=False,
        head_bias=False,
    )
    text = TextConditionerConfig(pretrained=text_dir, unconditional="zeros")
    return TextToMusicConfig(lm=lm, text=text)


def decoder_state(model: MusicgenForConditionalGeneration) -> dict[str, torch.Tensor]:
    """MusicGen's decoder and projection weights under our names."""
    decoder = model.decoder.model.decoder
    state: dict[str, torch.Tensor] = {
        "lm.token_embedding": torch.stack([e.weight for e in decoder.embed_tokens]),
        "lm.head_weight": torch.stack([head.weight for head in model.decoder.lm_heads]),
        "lm.decoder.final_norm.weight": decoder.layer_norm.weight,
        "lm.decoder.final_norm.bias": decoder.layer_norm.bias,
    }
    for index, layer in enumerate(decoder.layers):
        ours = f"lm.decoder.layers.{index}."
        for theirs, mine in (("self_attn", "self_attention"), ("encoder_attn", "cross_attention")):
            attention = getattr(layer, theirs)
            state[ours + f"{mine}.query.weight"] = attention.q_proj.weight
            state[ours + f"{mine}.key_value.weight"] = torch.cat(
                [attention.k_proj.weight, attention.v_proj.weight]
            )
            state[ours + f"{mine}.out.weight"] = attention.out_proj.weight
        for theirs, mine in (
            ("self_attn_layer_norm", "self_norm"),
            ("encoder_attn_layer_norm", "cross_norm"),
            ("final_layer_norm", "ffn_norm"),
        ):
            state[ours + f"{mine}.weight"] = getattr(layer, theirs).weight
            state[ours + f"{mine}.bias"] = getattr(layer, theirs).bias
        state[ours + "ffn.0.weight"] = layer.fc1.weight
        state[ours + "ffn.3.weight"] = layer.fc2.weight
    state.update(_projection(model))
    return {name: tensor.detach().clone() for name, tensor in state.items()}


def _projection(model: MusicgenForConditionalGeneration) -> dict[str, torch.Tensor]:
    """MusicGen projects text states only when the widths differ; otherwise: the identity."""
    text_width = model.config.text_encoder.hidden_size
    width = model.config.decoder.hidden_size
    if text_width != width or model.config.decoder.cross_attention_hidden_size is not None:
        if model.config.decoder.cross_attention_hidden_size not in (None, width):
            raise UserInputError("cross_attention_hidden_size != hidden_size is not supported")
        if text_width != width:
            return {
                "conditioner.projection.weight": model.enc_to_dec_proj.weight,
                "conditioner.projection.bias": model.enc_to_dec_proj.bias,
            }
    return {
        "conditioner.projection.weight": torch.eye(width),
        "conditioner.projection.bias": torch.zeros(width),
    }


def import_musicgen(source: str | Path, output: str | Path, overwrite: bool = False) -> Path:
    """Write config.json, model.safetensors, text_encoder/ (T5 + tokenizer), codec/
    (its EnCodec) and export.json (the 30 s training window) from a MusicGen directory.

    The output is built beside its place and moved in whole; one that holds files is
    refused unless `overwrite`, and never when it is or holds the source (an import into
    the MusicGen folder itself wrote our config.json and model.safetensors over its own).
    """
    source, output = Path(source), Path(output)
    check_output_folder(output, overwrite, inputs=[source])
    musicgen = read_musicgen(source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError) as error:
        raise UserInputError(
            f"{source} has no tokenizer files (spiece.model / tokenizer.json): {error}"
        ) from error
    config = musicgen_config(musicgen, text_dir=str(output / "text_encoder"))
    conditioner = T5Conditioner(
        config.text, config.lm.dim, encoder=musicgen.text_encoder, tokenizer=tokenizer
    )
    model = _assemble(config, conditioner, decoder_state(musicgen))
    frame_rate = musicgen.config.audio_encoder.frame_rate
    provenance: dict[str, Any] = {
        "imported_from": str(source.resolve()),
        "kind": "musicgen",
        "trained_segment_frames": round(MUSICGEN_SECONDS * frame_rate),
    }

    def write(folder: Path) -> None:
        model.save_pretrained(folder)
        musicgen.audio_encoder.save_pretrained(folder / CODEC_DIR)
        # MusicGen learnt the tokens of this EnCodec: fine-tuning and generating refuse others.
        codec = load_codec(CodecConfig(pretrained=str(folder / CODEC_DIR))).identity()
        codec = dataclasses.replace(codec, pretrained=str(Path(output).resolve() / CODEC_DIR))
        provenance[TRAINED_CODEC_KEY] = codec.to_dict()
        (folder / EXPORT_FILE).write_text(json.dumps(provenance, indent=2))

    write_directory(output, write, overwrite, inputs=[source], purpose="import-musicgen")
    return output


def _assemble(
    config: TextToMusicConfig, conditioner: T5Conditioner, state: dict[str, torch.Tensor]
) -> TextToMusicLM:
    model = TextToMusicLM(config, conditioner)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [name for name in missing if not name.startswith("conditioner.encoder.")]
    if missing or unexpected:
        raise RuntimeError(
            f"MusicGen mapping incomplete: missing {missing}, unexpected {unexpected}"
        )
    return model.eval()
