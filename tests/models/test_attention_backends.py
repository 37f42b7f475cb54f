"""Every attention backend gives the dense mask's logits and gradients, for every pattern."""

import dataclasses

import pytest
import torch

from lightning_sdm.models.lm import LMConfig
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


# T 11 keeps every mask one block; T 130 spans several query chunks of the sparse plan.
@pytest.mark.parametrize(("backend", "num_timesteps"), [("auto", 11), ("block_sparse", 130)])
@pytest.mark.parametrize(("name", "k"), ALL_PATTERNS)
def test_every_backend_equals_the_dense_reference(name, k, backend, num_timesteps):
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 16, (2, 4, num_timesteps), generator=generator)
    dense_logits, dense_grads = logits_and_grads(model_with(name, k, "dense"), codes)
    fast = model_with(name, k, backend)
    fast_logits, fast_grads = logits_and_grads(fast, codes)
    assert (fast_logits - dense_logits).abs().max() <= 1e-5
    for parameter, grad in dense_grads.items():
        assert (fast_grads[parameter] - grad).abs().max() <= 1e-5, parameter
    # cached decoding stays exact against the fast path's logits
    fast.eval()
    assert (fast.score_cached(codes, CAPTIONS) - fast(codes, CAPTIONS)).abs().max() <= 1e-4


def test_auto_takes_the_sparse_path_once_it_skips_most_scores(monkeypatch):
    from lightning_sdm.nn.attention import MultiHeadAttention
    from lightning_sdm.nn.sparse_attention import BlockSparseMask

    masks = []
    original = MultiHeadAttention.attend

    def spy(self, x, keys, values, mask, is_causal=False):
        masks.append(mask)
        return original(self, x, keys, values, mask, is_causal)

    monkeypatch.setattr(MultiHeadAttention, "attend", spy)
    model = model_with("stack_delay", 3, "auto")
    for num_timesteps, sparse in ((300, True), (11, False)):  # T 11: one block, nothing to skip
        masks.clear()
        model(torch.randint(0, 16, (1, 4, num_timesteps)), CAPTIONS[:1])
        self_masks = masks[::2]
        assert all(isinstance(m, BlockSparseMask) == sparse for m in self_masks)
    assert model.lm.sparse_mask(300, torch.device("cpu")).scores_fraction <= 0.5


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
    with pytest.raises(
        ValueError, match=r"needs a causal layout.*'auto', 'block_sparse' or 'dense'"
    ):
        model(torch.randint(0, 16, (1, 4, 5)), CAPTIONS[:1])
    with pytest.raises(ValueError, match="attention must be one of"):
        dataclasses.replace(tiny_config().lm, attention="flash")


def test_the_earlier_name_of_the_block_sparse_backend_still_reads():
    assert LMConfig(attention="flex").attention == "block_sparse"
