"""`model.compile`: each repeated block compiled in place, the same numbers as eager."""

import copy

import torch

from lightning_sdm.models.dit import DiTConfig
from lightning_sdm.nn.dit_block import DiTBlock
from lightning_sdm.tasks.compiling import compile_blocks, is_compiled
from lightning_sdm.tasks.diffusion_task import TextToAudioDiffusionTask

TINY_DIT = DiTConfig(latent_channels=8, dim=32, depth=2, num_heads=4, ada_rank=4, context_dim=32)


def dit_inputs(batch: int = 2, frames: int = 12) -> tuple:
    generator = torch.Generator().manual_seed(0)
    return (
        torch.randn(batch, 8, frames, generator=generator),  # noisy latents
        torch.zeros(batch, 8, frames),  # given
        torch.ones(batch, frames),  # to generate
        torch.tensor([10.0, 700.0]),  # timesteps
        torch.randn(batch, 5, 32, generator=generator),  # text states
        torch.ones(batch, 5, dtype=torch.bool),
    )


def test_compile_compiles_each_block_in_place_once_and_keeps_parameter_names():
    task = TextToAudioDiffusionTask(dit=TINY_DIT, text={"pretrained": "random"}, compile=True)
    names = list(task.state_dict())
    task.configure_model()
    task.configure_model()  # a second fit calls it again
    blocks = [m for m in task.model.modules() if isinstance(m, DiTBlock)]
    assert blocks and all(is_compiled(block) for block in blocks)
    assert list(task.state_dict()) == names  # checkpoints and exports unchanged
    eager = TextToAudioDiffusionTask(dit=TINY_DIT, text={"pretrained": "random"})
    eager.configure_model()
    assert not any(is_compiled(m) for m in eager.model.modules())


def test_compiled_blocks_give_eager_outputs_and_gradients():
    """Through AOTAutograd's graph capture of forward and backward (the `aot_eager`
    backend: inductor's code generation would take a minute on 2 cores)."""
    torch.manual_seed(0)
    dit = TextToAudioDiffusionTask(dit=TINY_DIT, text={"pretrained": "random"}).model.dit
    compiled = copy.deepcopy(dit)
    count = compile_blocks(compiled, (DiTBlock,), backend="aot_eager", fullgraph=True)
    assert count == TINY_DIT.depth + 1  # the middle block too
    results = []
    for model in (dit, compiled):
        output = model(*dit_inputs())
        output.square().mean().backward()
        results.append((output, [p.grad for p in model.parameters()]))
    (eager_out, eager_grads), (out, grads) = results
    torch.testing.assert_close(out, eager_out, rtol=1e-4, atol=1e-5)
    for got, wanted in zip(grads, eager_grads, strict=True):
        torch.testing.assert_close(got, wanted, rtol=1e-3, atol=1e-5)


def test_compiled_decoder_layers_give_the_lm_its_eager_loss_and_gradients():
    from lightning_sdm.nn.transformer import DecoderLayer
    from lightning_sdm.tasks.lm_task import TextToMusicTask

    torch.manual_seed(0)
    lm = {"dim": 32, "num_layers": 2, "num_heads": 4, "num_levels": 2, "cardinality": 16}
    model = TextToMusicTask(lm=lm, text={"pretrained": "random"}).model
    compiled = copy.deepcopy(model)
    count = compile_blocks(compiled, (DecoderLayer,), backend="aot_eager", fullgraph=True)
    assert count == 2
    codes = torch.randint(0, 16, (2, 2, 20), generator=torch.Generator().manual_seed(0))
    results = []
    for each in (model, compiled):
        loss = each.token_losses(codes, ["a caption", "another"]).mean()
        loss.backward()
        results.append((loss, [p.grad for p in each.parameters() if p.grad is not None]))
    (eager_loss, eager_grads), (loss, grads) = results
    torch.testing.assert_close(loss, eager_loss)
    assert len(grads) == len(eager_grads) > 0
    for got, wanted in zip(grads, eager_grads, strict=True):
        torch.testing.assert_close(got, wanted, rtol=1e-3, atol=1e-5)
