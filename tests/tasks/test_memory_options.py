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


def test_a_bf16_frozen_base_keeps_the_first_step_and_trains_the_adapter_alone():
    adapter = {"r": 4, "dropout": 0.0}
    reference_loss, reference_grads = loss_and_grads(task(adapter=adapter))
    low = task(adapter={**adapter, "frozen_dtype": "bf16"})
    low.lower_frozen_base_precision()
    dtypes = {n: p.dtype for n, p in low.model.lm.decoder.named_parameters() if p.ndim == 2}
    frozen = {d for n, d in dtypes.items() if "lora_" not in n and "layers." in n}
    assert frozen == {torch.bfloat16}
    assert {d for n, d in dtypes.items() if "lora_" in n} == {torch.float32}
    loss, grads = loss_and_grads(low)
    assert abs(loss - reference_loss) <= 2e-2
    assert grads.keys() == reference_grads.keys() and all("lora_" in n for n in grads)
    for name, grad in grads.items():
        scale = reference_grads[name].abs().max().clamp(min=1e-3)
        assert (grad - reference_grads[name]).abs().max() <= 0.1 * scale, name
    # the sample callback decodes with the low-precision base during training
    low.model.eval()
    codes = low.model.generate(["a slow harp"], 6, seed=0)
    assert codes.shape == (1, 4, 6)


def test_a_bf16_frozen_base_is_for_training_only(tmp_path, capsys):
    """The run holds the base in bf16; its checkpoint holds the adapter alone, and export
    merges it into the base as saved (fp32), not into the rounded copy."""
    from lightning_sdm.cli import main
    from lightning_sdm.models.text_to_music import TextToMusicLM

    base = task().model
    base.save_pretrained(tmp_path / "base")
    run = TextToMusicTask(
        init_from=str(tmp_path / "base"),
        optim={"warmup_steps": 0, "lr": 1e-2},
        text={"cfg_dropout": 0.0},
        adapter={"r": 4, "dropout": 0.0, "frozen_dtype": "bf16"},
    )
    batch = {"codes": CODES, "padding_mask": MASK, "captions": CAPTIONS}
    trainer = L.Trainer(
        max_steps=3, accelerator="cpu", logger=False, default_root_dir=tmp_path,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(run, DataLoader([batch] * 3, batch_size=None))
    assert run.model.lm.decoder.layers[0].ffn[0].base_layer.weight.dtype == torch.bfloat16
    (checkpoint,) = tmp_path.rglob("*.ckpt")
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    assert saved and all(".lora_" in n and t.dtype == torch.float32 for n, t in saved.items())
    assert main(["export", "--ckpt", str(checkpoint), "--output", str(tmp_path / "merged"),
                 "--merge"]) == 0  # fmt: skip
    merged = TextToMusicLM.from_pretrained(tmp_path / "merged")
    assert {p.dtype for p in merged.parameters()} == {torch.float32}
    # unadapted weights come back exactly as the base saved them
    merged_state, base_state = merged.state_dict(), base.state_dict()
    norm = "lm.decoder.layers.0.ffn_norm.weight"
    assert torch.equal(merged_state[norm], base_state[norm])
    ffn = "lm.decoder.layers.0.ffn.0.weight"
    assert not torch.equal(merged_state[ffn], base_state[ffn])  # the adapter trained
    # the same adapter merged into the fp32 base by hand
    capsys.readouterr()
    assert main(["export", "--ckpt", str(checkpoint), "--output", str(tmp_path / "alone")]) == 0
    # exported without --codec_dir: said, since generate from it then writes no audio
    assert "no codec copied in (--codec_dir DIR): generate from it" in capsys.readouterr().out
    by_hand = TextToMusicLM.from_pretrained(tmp_path / "alone").merge_adapter().state_dict()
    assert all(torch.equal(by_hand[n], t) for n, t in merged_state.items())


def test_bf16_mixed_precision_keeps_the_first_step():
    """trainer.precision: bf16-mixed is autocast around the step (as Lightning runs it)."""
    reference_loss, reference_grads = loss_and_grads(task())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, grads = loss_and_grads(task())
    assert abs(loss - reference_loss) <= 2e-2
    for name, grad in grads.items():
        scale = reference_grads[name].abs().max().clamp(min=1e-3)
        assert (grad - reference_grads[name]).abs().max() <= 0.2 * scale, name


def test_an_adapter_run_refuses_a_base_replaced_since_it_trained(tmp_path, capsys):
    """The checkpoint holds the adapter alone and names its base by path: resume, export
    and generate --ckpt over a base that now holds other weights made noise in silence."""
    from lightning_sdm.cli import main
    from lightning_sdm.errors import UserInputError

    task().model.save_pretrained(tmp_path / "base")
    options = {
        "init_from": str(tmp_path / "base"),
        "optim": {"warmup_steps": 0, "lr": 1e-2},
        "adapter": {"r": 4, "dropout": 0.0},
    }
    batch = {"codes": CODES, "padding_mask": MASK, "captions": CAPTIONS}

    def fit(run: TextToMusicTask, steps: int, ckpt_path: str | None = None) -> None:
        trainer = L.Trainer(
            max_steps=steps, accelerator="cpu", logger=False, default_root_dir=tmp_path,
            enable_progress_bar=False, enable_model_summary=False,
        )  # fmt: skip
        trainer.fit(run, DataLoader([batch] * 4, batch_size=None), ckpt_path=ckpt_path)

    fit(TextToMusicTask(**options), 2)
    (checkpoint,) = tmp_path.rglob("*.ckpt")
    fit(TextToMusicTask(**options), 3, ckpt_path=str(checkpoint))  # same base: resumes
    torch.manual_seed(5)
    replaced = TextToMusicTask(
        lm=task().model.config.lm.to_dict(), text=task().model.config.text.to_dict()
    )
    replaced.model.save_pretrained(tmp_path / "base")
    with pytest.raises(UserInputError, match="it now holds other weights"):
        fit(TextToMusicTask(**options), 4, ckpt_path=str(checkpoint))
    capsys.readouterr()
    assert main(["export", "--ckpt", str(checkpoint), "--output", str(tmp_path / "out")]) == 2
    assert "holds a LoRA adapter trained over" in capsys.readouterr().err
    argv = ["generate", "--ckpt", str(checkpoint), "--prompt", "a", "--timesteps", "3"]
    assert main([*argv, "--output_dir", str(tmp_path / "gen")]) == 2
    said = capsys.readouterr().err
    assert said.startswith(f"error: {checkpoint}: this checkpoint holds a LoRA adapter")
    assert "put the model it was trained over back there" in said
