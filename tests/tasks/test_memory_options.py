"""Memory options change the first step's loss and gradients by no more than stated."""

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from lightning_sdm.tasks.lm_task import TextToMusicTask, masked_level_cross_entropy
from tests.conftest import tiny_config

CAPTIONS = ["warm rhodes chords", "fast techno", "a slow harp", "bright brass"]
CODES = torch.randint(0, 16, (4, 4, 12), generator=torch.Generator().manual_seed(0))
MASK = torch.ones(4, 12, dtype=torch.bool)


def task(lm=None, text=None, **options) -> TextToMusicTask:
    config = tiny_config("stack_delay", 3)
    torch.manual_seed(0)
    return TextToMusicTask(
        lm={**config.lm.to_dict(), **(lm or {})},
        text={**config.text.to_dict(), **(text or {})},
        optim={"warmup_steps": 0, "lr": 1e-3},
        **options,
    )


def loss_and_grads(model: TextToMusicTask) -> tuple[float, dict[str, torch.Tensor]]:
    model.train()
    loss, _ = masked_level_cross_entropy(model.model(CODES, CAPTIONS), CODES, MASK)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return float(loss.detach()), grads


@pytest.mark.parametrize(
    ("lm", "text", "tolerance"),
    [
        ({"activation_checkpointing": True}, None, 1e-6),  # the same arithmetic, recomputed
        (None, {"frozen_dtype": "bf16"}, 2e-2),  # the frozen T5 in bf16 moves its states
    ],
)
def test_a_memory_option_keeps_the_first_step(lm, text, tolerance):
    reference_loss, reference_grads = loss_and_grads(task())
    loss, grads = loss_and_grads(task(lm, text))
    assert abs(loss - reference_loss) <= tolerance
    assert grads.keys() == reference_grads.keys()
    for name, grad in grads.items():
        scale = reference_grads[name].abs().max().clamp(min=1e-3)
        assert (grad - reference_grads[name]).abs().max() <= 50 * tolerance * scale, name


def test_checkpointed_layers_keep_fewer_activations():
    def saved_bytes(model: TextToMusicTask) -> int:
        total = 0

        def pack(tensor):
            nonlocal total
            total += tensor.numel() * tensor.element_size()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            model.train().model(CODES, CAPTIONS).sum()
        return total

    assert saved_bytes(task({"activation_checkpointing": True})) < 0.6 * saved_bytes(task())


def test_gradient_accumulation_equals_the_whole_batch():
    def one_step(batches: list[dict], accumulate: int) -> dict[str, torch.Tensor]:
        model = task(text={"cfg_dropout": 0.0})
        trainer = L.Trainer(
            max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False,
            accumulate_grad_batches=accumulate,
        )  # fmt: skip
        trainer.fit(model, DataLoader(batches, batch_size=None))
        return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def batch(rows: slice) -> dict:
        return {"codes": CODES[rows], "padding_mask": MASK[rows], "captions": CAPTIONS[rows]}

    whole = one_step([batch(slice(0, 4))], accumulate=1)
    halves = one_step([batch(slice(0, 2)), batch(slice(2, 4))], accumulate=2)
    for name, value in whole.items():
        assert (halves[name] - value).abs().max() <= 1e-6, name


def test_frozen_dtype_needs_a_frozen_encoder():
    encoder = task(text={"frozen_dtype": "bf16"}).model.conditioner.encoder
    assert {p.dtype for p in encoder.parameters()} == {torch.bfloat16}
    with pytest.raises(ValueError, match="set freeze: true"):
        task(text={"freeze": False, "frozen_dtype": "bf16"})
