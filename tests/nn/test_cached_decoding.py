"""The decoder's cached path over prepared weights: the teacher-forced logits, whatever the
projections are, and nothing shared with the model or between decodes."""

import pytest
import torch

from lightning_sdm.models.adapters import AdapterConfig, hold_frozen_projections_in
from lightning_sdm.nn.cached_decoding import StepDecoder
from tests.conftest import tiny_model
from tests.models.test_adapters import trained_adapter

CAPTIONS = ["warm rhodes chords", "fast techno"]


def codes_for(model, frames: int = 9) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, model.cardinality, (2, model.num_levels, frames), generator=generator)


@pytest.mark.parametrize("pack_weights", [True, False])
@pytest.mark.parametrize(
    "targets", [("self_attention",), ("self_attention", "cross_attention", "ffn")]
)
def test_unmerged_adapters_decode_to_the_teacher_forced_logits(pack_weights, targets):
    """LoRA layers are called as they are; the plain layers around them are prepared."""
    model = trained_adapter(tiny_model("delay", 1).add_adapter(AdapterConfig(r=4, targets=targets)))
    codes = codes_for(model)
    teacher_forced = model(codes, CAPTIONS)
    cached = model.score_cached(codes, CAPTIONS, pack_weights=pack_weights)
    assert (cached - teacher_forced).abs().max() <= 1e-4
    reduced = model.score_cached(codes, CAPTIONS, precision="bf16")
    assert (reduced - teacher_forced).abs().max() <= 0.05 * teacher_forced.abs().max()


def test_low_precision_frozen_projections_decode_in_the_models_own_dtype():
    """A fine-tuning run holds frozen layers in bf16; its sample decodes go through them."""
    model = trained_adapter(tiny_model("stack_delay", 3).add_adapter(AdapterConfig(r=4)))
    hold_frozen_projections_in(model.lm.decoder, torch.bfloat16)
    codes = codes_for(model)
    teacher_forced = model(codes, CAPTIONS)
    cached = model.score_cached(codes, CAPTIONS)
    assert cached.dtype == torch.float32
    assert (cached - teacher_forced).abs().max() <= 0.02 * teacher_forced.abs().max()


def test_decodes_at_two_precisions_interleaved_share_nothing():
    """Prepared weights live apart from the model: an fp32 decode stepping alongside a bf16
    one of the same model (two requests of a server) gets exactly the fp32 logits."""
    model = tiny_model("stack_delay", 3)
    codes = codes_for(model)
    alone = model.score_cached(codes, CAPTIONS)
    states = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    bf16 = model.lm.step_decoder(2, 9, precision="bf16")
    fp32 = model.lm.step_decoder(2, 9, precision="fp32")
    assert bf16.dtype == torch.bfloat16 and fp32.dtype == torch.float32
    assert model.lm.head_weight.dtype == torch.float32
    assert torch.equal(model.score_cached(codes, CAPTIONS), alone)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, states[name]) and tensor.dtype == states[name].dtype, name


def test_a_decoder_with_rotary_attention_is_refused_not_decoded_wrong():
    model = tiny_model("delay", 1)
    from lightning_sdm.nn.rotary import RotaryEmbedding

    layer = model.lm.decoder.layers[0]
    layer.self_attention.rotary = RotaryEmbedding(layer.self_attention.head_dim)
    with pytest.raises(ValueError, match="rotary"):
        StepDecoder(model.lm.decoder, 2, torch.float32, torch.float32)


@pytest.mark.parametrize("bf16_packs", [True, False])
def test_bf16_on_a_cpu_without_bf16_matmuls_says_fp32_is_faster(monkeypatch, bf16_packs):
    import warnings

    from lightning_sdm.nn import cached_decoding

    monkeypatch.setattr(cached_decoding, "packs", lambda dtype: bf16_packs)
    model = tiny_model("delay", 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.lm.step_decoder(2, 9, precision="fp32")
        model.lm.step_decoder(2, 9, precision="bf16")
    said = [w for w in caught if issubclass(w.category, cached_decoding.SlowPrecisionWarning)]
    assert len(said) == (0 if bf16_packs else 1)
    if said:
        assert "Use precision fp32 for speed" in str(said[0].message)


@pytest.mark.parametrize("pattern", [("delay", 1), ("stack_delay", 3)])
def test_a_short_caption_folds_into_the_step_and_decodes_to_the_same_logits(pattern, monkeypatch):
    """A few rows over a short caption: each layer's cross-attention reads the caption's
    folded scorer and mixer instead of its query and output weights; captions of two
    lengths exercise the padding mask."""
    import lightning_sdm.nn.cached_decoding as cached_decoding

    model = tiny_model(*pattern, dim=256)
    captions = ["a", "soft"]
    codes = codes_for(model)
    condition = model.condition(captions)
    assert not condition.mask.all()  # one caption is padded
    stepper = model.lm.step_decoder(2, 9)
    cache = stepper.new_cache(model.lm.layout(9).num_slots, condition.states, condition.mask)
    assert cache.cross_folded
    dim, keys = 256, condition.mask.shape[1]
    assert cache.cross_keys[0].shape == (2, dim, 4 * keys)  # scorer [R, D, H·S]

    teacher_forced = model(codes, captions)
    folded = model.score_cached(codes, captions)
    monkeypatch.setattr(cached_decoding, "folding_pays_per_step", lambda *args: False)
    unfolded = model.score_cached(codes, captions)
    assert (folded - teacher_forced).abs().max() <= 1e-4
    assert (folded - unfolded).abs().max() <= 1e-4
    reduced = model.score_cached(codes, captions, precision="bf16")
    assert (reduced - teacher_forced).abs().max() <= 0.05 * teacher_forced.abs().max()


def test_many_rows_or_a_long_caption_keep_the_projections():
    model = tiny_model("delay", 1, dim=64)  # rows·H·S > D/2 for any caption here
    condition = model.condition(["a caption of several words here"] * 2)
    stepper = model.lm.step_decoder(2, 9)
    cache = stepper.new_cache(model.lm.layout(9).num_slots, condition.states, condition.mask)
    assert not cache.cross_folded
