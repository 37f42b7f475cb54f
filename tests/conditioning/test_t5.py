import warnings

import pytest
import torch

from lightning_sdm.conditioning import (
    EMPTY_CONDITION,
    CaptionCutWarning,
    T5Conditioner,
    TextConditionerConfig,
)
from tests.conftest import tiny_model


def test_cfg_dropout_replaces_texts_with_the_empty_condition_at_its_rate():
    texts = [f"caption {i}" for i in range(10_000)]
    generator = torch.Generator().manual_seed(0)
    dropped = T5Conditioner(TextConditionerConfig(cfg_dropout=0.1), 16).cfg_dropout(
        texts, generator
    )
    empties = sum(text == EMPTY_CONDITION for text in dropped)
    assert 850 < empties < 1150
    assert all(d in (t, EMPTY_CONDITION) for t, d in zip(texts, dropped, strict=True))
    assert T5Conditioner(TextConditionerConfig(cfg_dropout=0.0), 16).cfg_dropout(texts) == texts
    assert set(T5Conditioner(TextConditionerConfig(cfg_dropout=1.0), 16).cfg_dropout(texts)) == {""}


def test_frozen_encoder_gets_no_gradient_and_stays_in_eval():
    conditioner = T5Conditioner(TextConditionerConfig(), 16).train()
    assert not conditioner.encoder.training
    condition = conditioner(["a", "longer caption"])
    condition.states.sum().backward()
    assert all(p.grad is None for p in conditioner.encoder.parameters())
    assert conditioner.projection.weight.grad is not None


def test_padding_is_masked_and_does_not_change_the_model_output():
    model = tiny_model("stack_delay", 3)
    codes = torch.randint(
        0, model.cardinality, (1, 4, 7), generator=torch.Generator().manual_seed(0)
    )
    alone = model(codes, ["short"])
    batched = model(torch.cat([codes, codes]), ["short", "a much, much longer caption than that"])
    condition = model.condition(["short", "a much, much longer caption than that"])
    assert condition.mask[0].sum() < condition.mask[1].sum()
    assert torch.all(condition.states[0][~condition.mask[0]] == 0)
    assert (alone[0] - batched[0]).abs().max() <= 1e-5


def test_loads_t5_from_a_local_directory(tmp_path):
    built = T5Conditioner(TextConditionerConfig(), 16)
    built.save_pretrained(tmp_path / "t5")
    loaded = T5Conditioner(TextConditionerConfig(pretrained=str(tmp_path / "t5")), 16)
    loaded.projection.load_state_dict(built.projection.state_dict())
    texts = ["ambient pad", ""]
    assert torch.allclose(built(texts).states, loaded(texts).states)


def test_missing_t5_directory_fails_without_reaching_a_hub(tmp_path):
    with pytest.raises(FileNotFoundError, match="never fetches weights"):
        T5Conditioner(TextConditionerConfig(pretrained=str(tmp_path / "t5-base")), 16)


def test_a_single_string_is_rejected():
    with pytest.raises(TypeError, match="list of texts"):
        T5Conditioner(TextConditionerConfig(), 16)("one text")


def test_a_caption_longer_than_the_encoder_reads_is_said_to_be_cut():
    conditioner = T5Conditioner(TextConditionerConfig(max_length=16), 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing said of captions that fit, even exactly
        condition = conditioner(["short", "x" * 15])  # ByT5: a token per byte, + the end
    assert condition.mask.sum(dim=1).tolist() == [6, 16]
    with pytest.warns(CaptionCutWarning, match=r"text.max_length: 16 tokens"):
        condition = conditioner(["short", "猫の歌 " * 40])
    assert condition.mask.shape[1] == 16  # still cut: the warning says so, nothing fails
