"""Write one of our delay-pattern models as a transformers `MusicgenForConditionalGeneration`
directory, so a fine-tune runs in transformers' pipelines: the inverse of `import_musicgen`."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    EncodecModel,
    MusicgenConfig,
    MusicgenDecoderConfig,
    MusicgenForConditionalGeneration,
)

from lightning_sdm.errors import UserInputError
from lightning_sdm.models.text_to_music import TextToMusicLM

# What MusicGen's architecture fixes, as our config options: (section, option, value, why).
MUSICGEN_LAYOUT = (
    ("lm", "pattern", "delay", "MusicGen decodes the delay pattern only"),
    ("lm", "positional", "tensor2tensor", "MusicGen's sinusoids are laid out tensor2tensor-style"),
    ("lm", "token_positions", "step", "MusicGen numbers positions by decoding step"),
    ("lm", "ffn_bias", False, "MusicGen's feed-forward layers have no biases"),
    ("lm", "head_bias", False, "MusicGen's output heads have no biases"),
    ("text", "unconditional", "zeros", "MusicGen's CFG uses zeroed text states"),
)


def musicgen_incompatibilities(model: TextToMusicLM) -> list[str]:
    """Why `model` cannot be written as a MusicGen checkpoint (empty: it can)."""
    reasons = []
    for section, option, value, why in MUSICGEN_LAYOUT:
        found = getattr(getattr(model.config, section), option)
        if found != value:
            reasons.append(f"{section}.{option} is {found!r}, not {value!r} ({why})")
    text_width = model.conditioner.encoder.config.d_model
    projection = model.conditioner.projection
    if text_width == model.config.lm.dim and not (
        torch.equal(projection.weight, torch.eye(text_width)) and not projection.bias.any()
    ):
        reasons.append(
            "the text projection is not the identity, and MusicGen has no projection when "
            "the text and decoder widths are equal"
        )
    return reasons


def export_to_transformers(
    model: TextToMusicLM, codec: EncodecModel | None, output: str | Path
) -> Path:
    """Save `model` (an adapter is merged first) with `codec` as a
    MusicgenForConditionalGeneration directory, tokenizer included."""
    if model.config.adapter is not None:
        model.merge_adapter()
    reasons = musicgen_incompatibilities(model)
    if reasons:
        raise UserInputError(
            "this model cannot be exported as MusicGen: " + "; ".join(reasons)
            + ". Models imported with import-musicgen (and fine-tuned) can."
        )  # fmt: skip
    if codec is None:
        raise UserInputError("a MusicGen directory holds its EnCodec: pass --codec_dir")
    lm = model.config.lm
    if codec.config.codebook_size != lm.cardinality:
        raise UserInputError(
            f"the codec has {codec.config.codebook_size} codes per codebook, the model "
            f"{lm.cardinality}"
        )
    encoder = model.conditioner.encoder
    decoder_config = MusicgenDecoderConfig(
        vocab_size=lm.cardinality, hidden_size=lm.dim, num_hidden_layers=lm.num_layers,
        num_attention_heads=lm.num_heads, ffn_dim=lm.ffn_dim, num_codebooks=lm.num_levels,
        dropout=lm.dropout, pad_token_id=lm.cardinality, bos_token_id=lm.cardinality,
        decoder_start_token_id=lm.cardinality, activation_function="gelu",
    )  # fmt: skip
    config = MusicgenConfig(
        text_encoder=encoder.config, audio_encoder=codec.config, decoder=decoder_config
    )
    musicgen = MusicgenForConditionalGeneration(config).eval()
    musicgen.text_encoder.load_state_dict(encoder.state_dict())
    musicgen.audio_encoder.load_state_dict(codec.state_dict())
    _load_decoder(musicgen, model)
    output = Path(output)
    musicgen.save_pretrained(output)
    model.conditioner.tokenizer.save_pretrained(output)
    return output


def _load_decoder(musicgen: MusicgenForConditionalGeneration, model: TextToMusicLM) -> None:
    """Our decoder weights under MusicGen's names (`decoder_state` read backwards)."""
    theirs = musicgen.decoder.model.decoder
    lm = model.lm
    with torch.no_grad():
        for level, embedding in enumerate(theirs.embed_tokens):
            embedding.weight.copy_(lm.token_embedding[level])
        for level, head in enumerate(musicgen.decoder.lm_heads):
            head.weight.copy_(lm.head_weight[level])
        theirs.layer_norm.load_state_dict(lm.decoder.final_norm.state_dict())
        for layer, ours in zip(theirs.layers, lm.decoder.layers, strict=True):
            for their_name, attention in (
                ("self_attn", ours.self_attention),
                ("encoder_attn", ours.cross_attention),
            ):
                target = getattr(layer, their_name)
                keys, values = attention.key_value.weight.chunk(2)
                target.q_proj.weight.copy_(attention.query.weight)
                target.k_proj.weight.copy_(keys)
                target.v_proj.weight.copy_(values)
                target.out_proj.weight.copy_(attention.out.weight)
            layer.self_attn_layer_norm.load_state_dict(ours.self_norm.state_dict())
            layer.encoder_attn_layer_norm.load_state_dict(ours.cross_norm.state_dict())
            layer.final_layer_norm.load_state_dict(ours.ffn_norm.state_dict())
            layer.fc1.weight.copy_(ours.ffn[0].weight)
            layer.fc2.weight.copy_(ours.ffn[3].weight)
        projection = getattr(musicgen, "enc_to_dec_proj", None)
        if projection is not None:
            projection.load_state_dict(model.conditioner.projection.state_dict())
