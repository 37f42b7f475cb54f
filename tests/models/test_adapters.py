"""LoRA adapters: only they train, they merge into equal outputs, and they save and load."""

import pytest
import torch

from lightning_sdm.models.adapters import AdapterConfig, is_adapter_parameter
from lightning_sdm.models.text_to_music import TextToMusicLM
from lightning_sdm.tasks.lm_task import TextToMusicTask, masked_level_cross_entropy
from tests.conftest import tiny_config, tiny_model

CAPTIONS = ["warm rhodes chords", "fast techno"]
CODES = torch.randint(0, 32, (2, 4, 7), generator=torch.Generator().manual_seed(0))


def trained_adapter(model: TextToMusicLM, seed: int = 1) -> TextToMusicLM:
    """An adapter whose B is no longer zero, as after some training."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def test_a_fresh_adapter_leaves_the_outputs_unchanged():
    model = tiny_model("stack_delay", 3, cardinality=32).eval()
    before = model(CODES, CAPTIONS)
    model.add_adapter(AdapterConfig(r=4))
    assert torch.equal(model(CODES, CAPTIONS), before)


def test_only_adapter_parameters_get_gradients():
    config = tiny_config("delay", 1, cardinality=32)
    task = TextToMusicTask(lm=config.lm, text=config.text, adapter={"r": 4, "targets": ["ffn"]})
    trainable = [n for n, p in task.named_parameters() if p.requires_grad]
    assert trainable and all(is_adapter_parameter(n) and ".ffn." in n for n in trainable)
    loss, _ = masked_level_cross_entropy(
        task.model(CODES, CAPTIONS), CODES, torch.ones(2, 7, dtype=torch.bool)
    )
    loss.backward()
    with_grad = {n for n, p in task.named_parameters() if p.grad is not None}
    assert with_grad == set(trainable)


@pytest.mark.parametrize(
    "targets", [("self_attention",), ("self_attention", "cross_attention", "ffn")]
)
def test_merging_gives_the_adapted_outputs(targets):
    model = trained_adapter(
        tiny_model("delay", 1, cardinality=32).add_adapter(AdapterConfig(r=4, targets=targets))
    )
    adapted = model(CODES, CAPTIONS)
    base = tiny_model("delay", 1, cardinality=32).eval()(CODES, CAPTIONS)
    assert (adapted - base).abs().max() > 1e-3  # the adapter does something
    model.merge_adapter()
    assert model.config.adapter is None
    assert not any(is_adapter_parameter(n) for n, _ in model.named_parameters())
    assert (model(CODES, CAPTIONS) - adapted).abs().max() <= 1e-5
    # cached decoding goes through the same merged projections
    assert (model.score_cached(CODES, CAPTIONS) - adapted).abs().max() <= 1e-4


def test_adapters_save_whole_or_alone_and_load_back(tmp_path):
    base = tiny_model("stack_delay", 1, cardinality=32)
    base.save_pretrained(tmp_path / "base")
    model = trained_adapter(
        TextToMusicLM.from_pretrained(tmp_path / "base").add_adapter(AdapterConfig(r=2))
    )
    expected = model(CODES, CAPTIONS)
    model.save_pretrained(tmp_path / "whole")
    model.save_adapter(tmp_path / "alone", base=tmp_path / "base")
    for directory in ("whole", "alone"):
        loaded = TextToMusicLM.from_pretrained(tmp_path / directory)
        assert loaded.config.adapter == AdapterConfig(r=2)
        assert (loaded(CODES, CAPTIONS) - expected).abs().max() <= 1e-6
    alone = sum(f.stat().st_size for f in (tmp_path / "alone").iterdir())
    whole = sum(f.stat().st_size for f in (tmp_path / "whole").rglob("*") if f.is_file())
    assert alone < whole / 4


def test_an_adapter_over_a_missing_base_says_so(tmp_path):
    base = tiny_model("delay", 1, cardinality=32)
    base.save_pretrained(tmp_path / "base")
    model = TextToMusicLM.from_pretrained(tmp_path / "base").add_adapter(AdapterConfig(r=2))
    model.save_adapter(tmp_path / "alone", base=tmp_path / "moved")
    with pytest.raises(FileNotFoundError, match=r"is a LoRA adapter over .*moved, which holds"):
        TextToMusicLM.from_pretrained(tmp_path / "alone")


def test_generate_names_an_adapter_whose_base_moved_or_whose_description_is_torn(tmp_path, capsys):
    """generate said the base 'is not a saved lightning_sdm model' (the adapter unnamed);
    a torn adapter.json printed a bare JSON error, one without its base a KeyError."""
    from lightning_sdm.cli import main

    tiny_model("delay", 1, cardinality=32).save_pretrained(tmp_path / "base")
    model = TextToMusicLM.from_pretrained(tmp_path / "base").add_adapter(AdapterConfig(r=2))
    model.save_adapter(tmp_path / "alone", base=tmp_path / "base")
    (tmp_path / "base").rename(tmp_path / "elsewhere")
    command = ["generate", "--model", str(tmp_path / "alone"), "--prompt", "x", "--seconds", "1"]
    command += ["--output_dir", str(tmp_path / "out")]
    assert main(command) == 2
    error = capsys.readouterr().err
    assert "alone is a LoRA adapter over" in error and "holds no model now" in error
    description = tmp_path / "alone" / "adapter.json"
    for torn, message in [
        ('{"base": ', "adapter.json is not JSON"),
        ('{"adapter": {}}', "adapter.json is not a LoRA adapter's description"),
        ("[1, 2]", "adapter.json is not a LoRA adapter's description"),
    ]:
        description.write_text(torn)
        assert main(command) == 2
        error = capsys.readouterr().err
        assert message in error and "Traceback" not in error and error.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"type": "ia3"}, "adapter type must be one of"),
        ({"r": 0}, "r must be at least 1"),
        ({"targets": ("mlp",)}, "non-empty subset of"),
        ({"dropout": 1.0}, r"dropout must lie in \[0, 1\)"),
    ],
)
def test_bad_adapter_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        AdapterConfig(**options)


def test_an_adapter_over_a_base_whose_weights_were_replaced_is_refused(tmp_path):
    """A different model of the same layout saved where the base was (a re-import, an
    export into the same folder) loaded the adapter without a word: noise, not music."""
    from lightning_sdm.errors import UserInputError

    tiny_model("delay", 1, cardinality=32).save_pretrained(tmp_path / "base")
    model = trained_adapter(
        TextToMusicLM.from_pretrained(tmp_path / "base").add_adapter(AdapterConfig(r=2))
    )
    model.save_adapter(tmp_path / "alone", base=tmp_path / "base")
    TextToMusicLM.from_pretrained(tmp_path / "alone")  # the base as trained over: loads
    torch.manual_seed(7)
    other = TextToMusicLM(tiny_config("delay", 1, cardinality=32))
    other.save_pretrained(tmp_path / "base")  # same layout, other weights
    with pytest.raises(UserInputError, match=r"trained over .*base when its weights were"):
        TextToMusicLM.from_pretrained(tmp_path / "alone")


@pytest.mark.parametrize("targets", [("ffn",), ("self_attention", "cross_attention", "ffn")])
def test_an_adapter_decodes_through_prepared_merged_weights_and_stays_unchanged(
    targets, packed_layer_counts
):
    """Each LoRA projection was called as an opaque module in every step (its base, A, B and
    the sum: 2x a merged model's step time on a 2-core Xeon); a decode now prepares one
    merged weight per projection, like a plain layer's, and leaves the model's own alone."""
    from tests.models.test_lm_equivalence import prepared_weights

    model = trained_adapter(
        tiny_model("delay", 1, cardinality=32).add_adapter(AdapterConfig(r=4, targets=targets))
    )
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    adapted = model(CODES, CAPTIONS)
    cached = model.score_cached(CODES, CAPTIONS)
    assert packed_layer_counts == [prepared_weights(model)]  # every projection prepared
    assert (cached - adapted).abs().max() <= 1e-4
    plain = model.score_cached(CODES, CAPTIONS, pack_weights=False)
    assert (plain - adapted).abs().max() <= 1e-4
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())
    assert any(is_adapter_parameter(name) for name in before)  # still an adapter model
