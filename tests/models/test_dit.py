"""EzAudio-DiT: the paper's parameter counts, its initial state, masks and shapes."""

import math
from pathlib import Path

import pytest
import torch
import yaml

from lightning_sdm.models.dit import DiTConfig, EzAudioDiT, trainable_parameters
from lightning_sdm.nn.attention import MultiHeadAttention
from lightning_sdm.nn.dit_block import DiTBlock
from lightning_sdm.nn.rotary import RotaryEmbedding

ROOT = Path(__file__).resolve().parents[2]


def dit_config_of(config_file: str) -> DiTConfig:
    config = yaml.safe_load((ROOT / "configs" / config_file).read_text())
    return DiTConfig(**config["model"]["init_args"]["dit"])


@pytest.mark.parametrize(
    ("config_file", "paper"), [("ezaudio_l.yaml", 596e6), ("ezaudio_xl.yaml", 874e6)]
)
def test_the_configs_have_the_papers_parameter_counts(config_file, paper):
    with torch.device("meta"):
        model = EzAudioDiT(dit_config_of(config_file))
    assert abs(trainable_parameters(model) - paper) / paper < 0.005


def test_per_block_adaln_costs_a_linear_per_block_where_sola_shares_one():
    """adaLN-SOLA against plain adaLN at EzAudio-L's sizes: each of the 25 blocks trades its
    rank-32 adjustment and bias for a whole Linear(1024, 6144); the shared one goes."""
    sola = dit_config_of("ezaudio_l.yaml")
    with torch.device("meta"):
        shared = trainable_parameters(EzAudioDiT(sola))
        per_block = trainable_parameters(
            EzAudioDiT(DiTConfig(**{**sola.to_dict(), "modulation": "per_block"}))
        )
    dim, rank, blocks = sola.dim, sola.ada_rank, sola.depth + 1
    adjustment = dim * 6 * rank + 6 * rank * 6 * dim + 6 * dim
    linear = dim * 6 * dim + 6 * dim
    assert per_block - shared == blocks * (linear - adjustment) - linear


def tiny(**changes) -> EzAudioDiT:
    torch.manual_seed(0)
    config = dict(latent_channels=6, dim=32, depth=2, num_heads=4, ada_rank=4, context_dim=16)
    return EzAudioDiT(DiTConfig(**{**config, **changes}))


def inputs(batch=2, frames=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(
        noisy=torch.randn(batch, 6, frames, generator=g),
        given=torch.randn(batch, 6, frames, generator=g),
        to_generate=torch.ones(batch, frames, dtype=torch.bool),
        timesteps=torch.tensor([10, 900])[:batch],
        context=torch.randn(batch, 5, 16, generator=g),
        context_mask=torch.tensor([[True] * 5, [True, True, False, False, False]])[:batch],
    )


@pytest.mark.parametrize("modulation", ["sola", "per_block"])
def test_text_and_modulation_start_silent(modulation):
    """Zero-initialised cross-attention outputs and modulation: at init the text changes
    nothing and the timestep changes nothing; training opens both."""
    model = tiny(modulation=modulation)
    base = model(**inputs())
    other_text = {**inputs(), "context": torch.randn(2, 5, 16)}
    other_time = {**inputs(), "timesteps": torch.tensor([500, 3])}
    assert torch.equal(model(**other_text), base)
    assert torch.equal(model(**other_time), base)
    assert base.shape == (2, 6, 12) and base.abs().sum() > 0


def test_padding_in_the_text_and_the_frames_is_ignored():
    model = tiny()
    for parameter in model.parameters():  # wake the zero-initialised paths
        torch.nn.init.normal_(parameter, std=0.05)
    args = inputs()
    base = model(**args)
    changed = {**args, "context": args["context"].clone()}
    changed["context"][1, 2:] = 100.0  # padded text tokens of row 1
    assert torch.allclose(model(**changed), base, atol=1e-5)
    assert not torch.allclose(model(**{**args, "timesteps": torch.tensor([500, 3])}), base)
    frame_mask = torch.ones(2, 12, dtype=torch.bool)
    frame_mask[:, 9:] = False
    masked = model(**args, frame_mask=frame_mask)
    noisy = args["noisy"].clone()
    noisy[:, :, 9:] = 50.0
    again = model(**{**args, "noisy": noisy}, frame_mask=frame_mask)
    # padded frames' inputs do not reach real frames (the conv at the end sees one frame over)
    assert torch.allclose(again[:, :, :8], masked[:, :, :8], atol=1e-5)


def test_blocks_checkpoint_without_changing_gradients():
    plain, checkpointed = tiny(), tiny(activation_checkpointing=True)
    for parameter in plain.parameters():
        torch.nn.init.normal_(parameter, std=0.05)
    checkpointed.load_state_dict(plain.state_dict())
    for model in (plain, checkpointed):
        model(**inputs()).square().mean().backward()
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name


def test_rope_makes_scores_depend_on_offsets_only():
    rotary = RotaryEmbedding(8)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    scores = []
    for shift in (0, 5):
        sequence_q = torch.zeros(1, 1, 10, 8)
        sequence_k = torch.zeros(1, 1, 10, 8)
        sequence_q[..., 3 + shift, :], sequence_k[..., 1 + shift, :] = q, k
        rq, rk = rotary(sequence_q), rotary(sequence_k)
        scores.append((rq[..., 3 + shift, :] * rk[..., 1 + shift, :]).sum())
    assert torch.allclose(scores[0], scores[1], atol=1e-5)


def test_configs_are_checked():
    with pytest.raises(ValueError, match="depth must be even"):
        DiTConfig(depth=3)
    with pytest.raises(ValueError, match="modulation must be one of sola, per_block"):
        DiTConfig(modulation="single")
    with pytest.raises(ValueError, match="heads of even size"):
        DiTConfig(dim=24, num_heads=8)
    with pytest.raises(ValueError, match="even head dimension"):
        MultiHeadAttention(12, 4, rotary=True)


def test_the_fused_key_value_projection_starts_as_two_xavier_projections():
    torch.manual_seed(0)
    dit = EzAudioDiT(DiTConfig(latent_channels=8, dim=256, depth=2, num_heads=4, context_dim=32))
    bound = math.sqrt(6 / (256 + 256))  # Xavier of one [D, D] projection
    for block in dit.modules():
        if isinstance(block, DiTBlock):
            for half in block.self_attention.key_value.weight.chunk(2):
                assert half.abs().max() <= bound
                assert half.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)


def test_each_ezaudio_choice_turns_back_to_the_plain_dits():
    """The ablations' switches: no long skips drops each output block's skip projection;
    learned positions add a [max_frames, D] table and take RoPE out; no QK-norm drops the
    per-head norms. Every variant runs forward and backward."""
    base = tiny()
    count = trainable_parameters
    no_skips = tiny(long_skips=False)
    dim = 32
    assert count(base) - count(no_skips) == 2 * dim * 2 + (2 * dim * dim + dim)  # norm + linear
    learned = tiny(positions="learned", max_frames=40)
    assert count(learned) - count(base) == 40 * dim
    assert not any(isinstance(m, RotaryEmbedding) for m in learned.modules())
    assert any(isinstance(m, RotaryEmbedding) for m in base.modules())
    no_qk = tiny(qk_norm=False)
    assert all(m.query_norm is None for m in no_qk.modules() if isinstance(m, MultiHeadAttention))
    plain = tiny(modulation="per_block", long_skips=False, positions="learned", qk_norm=False)
    for model in (no_skips, learned, no_qk, plain):
        output = model(**inputs())
        assert output.shape == (2, 6, 12)
        output.square().mean().backward()


def test_learned_positions_make_the_model_position_aware_and_refuse_longer_inputs():
    model = tiny(positions="learned", max_frames=12, long_skips=False)
    for parameter in model.parameters():
        torch.nn.init.normal_(parameter, std=0.05)
    args = inputs(batch=1)
    same = {**args, "noisy": args["noisy"][..., :1].expand(-1, -1, 12).contiguous()}
    same["given"] = args["given"][..., :1].expand(-1, -1, 12).contiguous()
    output = model(**same)
    # identical frames everywhere: only the positions tell them apart
    assert not torch.allclose(output[..., 3], output[..., 8], atol=1e-4)
    with pytest.raises(ValueError, match="exceed the learned positions' 12"):
        model(**inputs(frames=13))
    with pytest.raises(ValueError, match="positions must be one of rope, learned"):
        DiTConfig(positions="absolute")
