"""Every attention backend gives the dense mask's logits and gradients, for every pattern."""

import dataclasses

import pytest
import torch

from lightning_sdm.models.text_to_music import TextToMusicLM
from tests.conftest import ALL_PATTERNS, tiny_config

CAPTIONS = ["warm rhodes chords", "fast techno"]


def model_with(name: str, k: int, attention: str) -> TextToMusicLM:
    config = tiny_config(name, k)
    config = dataclasses.replace(config, lm=dataclasses.replace(config.lm, attention=attention))
    torch.manual_seed(0)
    return TextToMusicLM(config).train()


def logits_and_grads(model: TextToMusicLM, codes: torch.Tensor):
    logits = model(codes, CAPTIONS)
    (logits.square().mean()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logits.detach(), grads


@pytest.mark.parametrize(("name", "k"), ALL_PATTERNS)
def test_auto_equals_the_dense_reference(name, k):
    codes = torch.randint(0, 16, (2, 4, 11), generator=torch.Generator().manual_seed(0))
    dense_logits, dense_grads = logits_and_grads(model_with(name, k, "dense"), codes)
    auto = model_with(name, k, "auto")
    auto_logits, auto_grads = logits_and_grads(auto, codes)
    assert (auto_logits - dense_logits).abs().max() <= 1e-5
    for parameter, grad in dense_grads.items():
        assert (auto_grads[parameter] - grad).abs().max() <= 1e-5, parameter
    # cached decoding stays exact against the fast path's logits
    auto.eval()
    assert (auto.score_cached(codes, CAPTIONS) - auto(codes, CAPTIONS)).abs().max() <= 1e-4


def test_causal_layouts_skip_the_mask_and_others_keep_it(monkeypatch):
    from lightning_sdm.nn.attention import MultiHeadAttention

    calls = []
    original = MultiHeadAttention.attend

    def spy(self, x, keys, values, mask, is_causal=False):
        calls.append((x.shape[1] == keys.shape[2], mask is None, is_causal))
        return original(self, x, keys, values, mask, is_causal)

    monkeypatch.setattr(MultiHeadAttention, "attend", spy)
    codes = torch.randint(0, 16, (2, 4, 5))
    for (name, k), expect_causal in ((("delay", 1), True), (("stack_delay", 3), False)):
        calls.clear()
        model_with(name, k, "auto")(codes, CAPTIONS)
        self_attention = [c[1:] for c in calls[::2]]  # per layer: self, then cross-attention
        assert self_attention and all(c[0] for c in calls[::2])
        assert all(c == (expect_causal, expect_causal) for c in self_attention), name


def test_forcing_causal_on_a_stack_layout_is_refused():
    model = model_with("stack_delay", 3, "causal")
    with pytest.raises(ValueError, match="needs a causal layout"):
        model(torch.randint(0, 16, (1, 4, 5)), CAPTIONS[:1])
    with pytest.raises(ValueError, match="attention must be one of"):
        dataclasses.replace(tiny_config().lm, attention="flash")
