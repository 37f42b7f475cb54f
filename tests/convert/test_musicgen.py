"""Import of a tiny random MusicGen: logits, CFG and greedy tokens equal transformers'."""

import json
import shutil

import pytest
import soundfile
import torch
from safetensors.torch import load_file, save_file
from transformers import (
    ByT5Tokenizer,
    EncodecConfig,
    MusicgenConfig,
    MusicgenDecoderConfig,
    MusicgenForConditionalGeneration,
    T5Config,
)

from lightning_sdm.cli import main
from lightning_sdm.convert.musicgen import import_musicgen
from lightning_sdm.models.sampling import SamplingConfig
from lightning_sdm.models.text_to_music import TextToMusicLM

CARDINALITY, LEVELS = 64, 4
TEXTS = ["warm pad", "fast drums in c minor"]


def tiny_musicgen(text_width: int = 24) -> MusicgenForConditionalGeneration:
    config = MusicgenConfig(
        text_encoder=T5Config(
            vocab_size=384, d_model=text_width, d_kv=8, d_ff=48, num_layers=1, num_heads=3
        ),
        audio_encoder=EncodecConfig(
            sampling_rate=32000, audio_channels=1, normalize=False, chunk_length_s=None,
            codebook_size=CARDINALITY, codebook_dim=16, hidden_size=16, num_filters=4,
            num_lstm_layers=1, upsampling_ratios=[8, 5, 4, 4],
            target_bandwidths=[1.2],  # 4 codebooks of 6 bits at 50 Hz, like the decoder's
        ),
        decoder=MusicgenDecoderConfig(
            vocab_size=CARDINALITY, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            ffn_dim=64, num_codebooks=LEVELS, pad_token_id=CARDINALITY,
            bos_token_id=CARDINALITY, decoder_start_token_id=CARDINALITY,
        ),
    )  # fmt: skip
    torch.manual_seed(0)
    model = MusicgenForConditionalGeneration(config).eval()
    with torch.no_grad():  # norms off their init and larger weights: nothing matches by luck
        projection = getattr(model, "enc_to_dec_proj", torch.nn.Identity())
        for name, parameter in [*model.decoder.named_parameters(), *projection.named_parameters()]:
            if "layer_norm" in name:
                parameter.add_(0.1 * torch.randn_like(parameter))
            elif parameter.dim() == 2:
                parameter.normal_(0.0, 0.3 if "embed" in name else parameter.shape[-1] ** -0.5)
    return model


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    root = tmp_path_factory.mktemp("musicgen")
    musicgen = tiny_musicgen()
    musicgen.save_pretrained(root / "musicgen")
    ByT5Tokenizer().save_pretrained(root / "musicgen")
    import_musicgen(root / "musicgen", root / "ours")
    return musicgen, TextToMusicLM.from_pretrained(root / "ours").eval(), root


def delayed_inputs(codes: torch.Tensor) -> torch.Tensor:
    """MusicGen's decoder input: start token, then level k shifted right by k (pad elsewhere)."""
    batch, levels, frames = codes.shape
    steps = frames + levels - 1
    inputs = torch.full((batch, levels, steps), CARDINALITY)
    for level in range(levels):
        inputs[:, level, level + 1 : level + 1 + frames] = codes[:, level, : steps - level - 1]
    return inputs.reshape(batch * levels, steps)


def their_logits(musicgen, codes, tokens=None, null=False):
    """Logits [B, C, T, V] aligned with ours: level k's frame t is predicted at step t + k."""
    batch, levels, frames = codes.shape
    if null:  # MusicGen's unconditional input: zero text states, nothing to attend to
        states = torch.zeros(batch, 1, musicgen.config.text_encoder.hidden_size)
        kwargs = {"encoder_outputs": (states,), "attention_mask": torch.zeros(batch, 1)}
    else:
        kwargs = dict(tokens)
    with torch.no_grad():
        logits = musicgen(decoder_input_ids=delayed_inputs(codes), **kwargs).logits
    logits = logits.reshape(batch, levels, -1, CARDINALITY)
    return torch.stack([logits[:, k, k : k + frames] for k in range(levels)], dim=1)


def test_teacher_forced_logits_equal_transformers_with_and_without_guidance(imported):
    musicgen, ours, _ = imported
    codes = torch.randint(
        0, CARDINALITY, (2, LEVELS, 9), generator=torch.Generator().manual_seed(1)
    )
    tokens = ByT5Tokenizer()(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        conditional = ours(codes, TEXTS)
        unconditional = ours(codes, ["", ""])
    expected = their_logits(musicgen, codes, tokens)
    assert (conditional - expected).abs().max() <= 1e-4
    null = their_logits(musicgen, codes, null=True)
    assert (unconditional - null).abs().max() <= 1e-4
    guided, their_guided = (
        u + 3.0 * (c - u) for c, u in ((conditional, unconditional), (expected, null))
    )
    assert (guided - their_guided).abs().max() <= 1e-4
    assert (conditional - unconditional).abs().max() > 1e-3  # the text matters


@pytest.mark.parametrize("cfg_scale", [1.0, 3.0])
def test_greedy_generation_yields_transformers_tokens(imported, cfg_scale):
    musicgen, ours, _ = imported
    frames = 12
    tokens = ByT5Tokenizer()(TEXTS, padding=True, return_tensors="pt")
    captured = {}
    decode = musicgen.audio_encoder.decode

    def spy(codes, *args, **kwargs):
        captured["codes"] = codes
        return decode(codes, *args, **kwargs)

    musicgen.audio_encoder.decode = spy
    try:
        musicgen.generate(
            **tokens, do_sample=False, guidance_scale=cfg_scale, max_new_tokens=frames + LEVELS - 1
        )
    finally:
        musicgen.audio_encoder.decode = decode
    theirs = captured["codes"][0]
    mine = ours.generate(TEXTS, frames, sampling=SamplingConfig(temperature=0, cfg_scale=cfg_scale))
    assert theirs.shape == mine.shape == (2, LEVELS, frames)
    assert torch.equal(mine, theirs)


def test_the_import_carries_codec_tokenizer_and_window(imported):
    _, _, root = imported
    export = json.loads((root / "ours" / "export.json").read_text())
    assert export["trained_segment_frames"] == 1500 and export["kind"] == "musicgen"
    config = json.loads((root / "ours" / "config.json").read_text())
    assert config["lm"]["pattern"] == "delay" and config["lm"]["positional"] == "tensor2tensor"
    assert config["text"]["unconditional"] == "zeros" and config["lm"]["ffn_bias"] is False
    assert (root / "ours" / "codec" / "config.json").is_file()
    # the codec MusicGen learnt the tokens of, by content: fine-tunes and generate check it
    from lightning_sdm.codecs import CodecConfig, load_codec

    carried = load_codec(CodecConfig(str(root / "ours" / "codec"))).identity()
    assert export["trained_codec"]["weights_sha256"] == carried.weights_sha256
    assert export["trained_codec"]["pretrained"] == str((root / "ours" / "codec").resolve())


def test_equal_widths_skip_the_projection_like_musicgen(tmp_path):
    musicgen = tiny_musicgen(text_width=32)
    musicgen.save_pretrained(tmp_path / "mg")
    ByT5Tokenizer().save_pretrained(tmp_path / "mg")
    ours = TextToMusicLM.from_pretrained(import_musicgen(tmp_path / "mg", tmp_path / "ours"))
    codes = torch.randint(
        0, CARDINALITY, (2, LEVELS, 5), generator=torch.Generator().manual_seed(2)
    )
    tokens = ByT5Tokenizer()(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        assert (ours(codes, TEXTS) - their_logits(musicgen, codes, tokens)).abs().max() <= 1e-4


def test_import_command_and_its_errors(imported, tmp_path, capsys):
    _, _, root = imported
    assert main(["import-musicgen", str(root / "musicgen"), str(tmp_path / "out")]) == 0
    assert "imported" in capsys.readouterr().out
    assert main(["import-musicgen", str(tmp_path / "nothing"), str(tmp_path / "x")]) == 2
    assert "is not a MusicGen directory" in capsys.readouterr().err
    # our own model directory, or its codec: once loaded as a MusicGen of random weights
    assert main(["import-musicgen", str(tmp_path / "out"), str(tmp_path / "x")]) == 2
    assert "it holds a lightning_sdm model already" in capsys.readouterr().err
    assert main(["import-musicgen", str(tmp_path / "out" / "codec"), str(tmp_path / "x")]) == 2
    assert "it holds a 'encodec' model" in capsys.readouterr().err
    partial = tmp_path / "partial"
    shutil.copytree(root / "musicgen", partial)
    weights = partial / "model.safetensors"
    save_file({k: v for k, v in load_file(weights).items() if "lm_heads" not in k}, weights)
    assert main(["import-musicgen", str(partial), str(tmp_path / "x")]) == 2
    assert "its weights lack 4 of the model's tensors" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    # into a folder that holds files, the MusicGen's own among them: its config.json and
    # model.safetensors were written over with ours
    source = tmp_path / "source"
    shutil.copytree(root / "musicgen", source)
    config = (source / "config.json").read_bytes()
    assert main(["import-musicgen", str(source), str(source)]) == 2
    assert "already holds files: pass --overwrite" in capsys.readouterr().err
    assert main(["import-musicgen", str(source), str(source), "--overwrite", "true"]) == 2
    assert "--overwrite would delete" in capsys.readouterr().err
    assert (source / "config.json").read_bytes() == config
    assert main(["import-musicgen", str(source), str(tmp_path / "out"), "--overwrite", "true"]) == 0


def test_a_layout_the_import_would_get_wrong_is_refused(tmp_path, capsys):
    """scale_embedding multiplies MusicGen's token embeddings by sqrt(width); an import that
    ignored it gave other logits without a word."""
    musicgen = tiny_musicgen()
    musicgen.config.decoder.scale_embedding = True
    musicgen.save_pretrained(tmp_path / "mg")
    ByT5Tokenizer().save_pretrained(tmp_path / "mg")
    assert main(["import-musicgen", str(tmp_path / "mg"), str(tmp_path / "out")]) == 2
    assert "scale_embedding: true are not supported" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_imported_model_fine_tunes_and_its_loss_falls(imported):
    import lightning as L
    from torch.utils.data import DataLoader

    from lightning_sdm.tasks.lm_task import TextToMusicTask, masked_level_cross_entropy

    _, _, root = imported
    task = TextToMusicTask(
        init_from=str(root / "ours"),
        optim={"lr": 3e-3, "warmup_steps": 1},
        text={"cfg_dropout": 0.0},
    )
    assert task.model.config.lm.pattern == "delay" and task.model.config.text.cfg_dropout == 0.0
    codes = torch.randint(
        0, CARDINALITY, (4, LEVELS, 10), generator=torch.Generator().manual_seed(3)
    )
    batch = {
        "codes": codes,
        "padding_mask": torch.ones(4, 10, dtype=torch.bool),
        "captions": TEXTS * 2,
    }

    def loss() -> float:
        with torch.no_grad():
            return float(
                masked_level_cross_entropy(
                    task.model.eval()(codes, TEXTS * 2), codes, batch["padding_mask"]
                )[0]
            )

    before = loss()
    trainer = L.Trainer(
        max_steps=10, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(task, DataLoader([batch] * 10, batch_size=None))
    after = loss()
    assert after < before - 0.1, (before, after)


def test_init_from_keeps_the_architecture(imported):
    from lightning_sdm.errors import UserInputError
    from lightning_sdm.tasks.lm_task import TextToMusicTask

    _, _, root = imported
    with pytest.raises(UserInputError, match=r"model.lm.dim = 64 differs .* init_from fixes"):
        TextToMusicTask(lm={"dim": 64}, init_from=str(root / "ours"))
    with pytest.raises(UserInputError, match=r"model.init_from: .* not found"):
        TextToMusicTask(init_from=str(root / "nowhere"))
    # the Hugging Face folder itself, or its codec: a KeyError traceback from the config
    with pytest.raises(UserInputError, match=r"it is a Hugging Face MusicGen \(turn it into"):
        TextToMusicTask(init_from=str(root / "musicgen"))
    with pytest.raises(UserInputError, match=r"it is a codec \(encodec\)"):
        TextToMusicTask(init_from=str(root / "ours" / "codec"))


def test_init_from_another_family_s_model_is_refused(imported):
    from lightning_sdm.errors import UserInputError
    from lightning_sdm.tasks.diffusion_task import TextToAudioDiffusionTask

    _, _, root = imported
    with pytest.raises(UserInputError, match="holds a codebook LM; this task trains a latent"):
        TextToAudioDiffusionTask(init_from=str(root / "ours"))


def test_a_lora_fine_tune_of_imported_musicgen_learns_and_exports_both_ways(
    imported, tmp_path, monkeypatch
):
    import lightning as L
    from torch.utils.data import DataLoader

    from lightning_sdm.callbacks.samples import SampleGeneration
    from lightning_sdm.codecs import CodecConfig
    from lightning_sdm.tasks.lm_task import TextToMusicTask, masked_level_cross_entropy

    _, base, root = imported
    task = TextToMusicTask(
        init_from=str(root / "ours"),
        optim={"lr": 1e-2, "warmup_steps": 1, "weight_decay": 0.0},
        text={"cfg_dropout": 0.0},
        adapter={"r": 4, "alpha": 8, "dropout": 0.0},
    )
    trainable = sum(p.numel() for p in task.parameters() if p.requires_grad)
    assert 0 < trainable < sum(p.numel() for p in task.parameters()) / 4
    codes = torch.randint(
        0, CARDINALITY, (4, LEVELS, 10), generator=torch.Generator().manual_seed(3)
    )
    mask = torch.ones(4, 10, dtype=torch.bool)
    batch = {"codes": codes, "padding_mask": mask, "captions": TEXTS * 2}

    def loss(model) -> float:
        with torch.no_grad():
            return float(masked_level_cross_entropy(model.eval()(codes, TEXTS * 2), codes, mask)[0])

    before = loss(task.model)
    frozen = {n: p.detach().clone() for n, p in task.named_parameters() if not p.requires_grad}
    sampled = []
    original_generate = TextToMusicLM.generate

    def recording_generate(self, *args, **kwargs):
        sampled.append(original_generate(self, *args, **kwargs))
        return sampled[-1]

    monkeypatch.setattr(TextToMusicLM, "generate", recording_generate)
    samples = SampleGeneration(
        prompts=["a"], every_n_steps=0, at_validation_end=False, seconds=0.2, sampling={"top_k": 8},
        codec=CodecConfig(pretrained=str(root / "ours" / "codec")),
    )  # fmt: skip
    trainer = L.Trainer(
        max_steps=10, accelerator="cpu", logger=False, default_root_dir=tmp_path,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[samples],
    )  # fmt: skip
    trainer.fit(task, DataLoader([batch] * 10, batch_size=None))
    after = loss(task.model)
    # the base model's samples once, then the fine-tune's: same prompt and seed, new tokens
    base_wav, tuned_wav = (tmp_path / "samples" / d / "00-a.wav" for d in ("base", "step-0000010"))
    assert soundfile.read(base_wav)[0].shape == soundfile.read(tuned_wav)[0].shape
    base_codes, tuned_codes = sampled
    assert base_codes.shape == tuned_codes.shape and not torch.equal(base_codes, tuned_codes)
    assert after < before - 0.1, (before, after)
    assert all(torch.equal(p, frozen[n]) for n, p in task.named_parameters() if n in frozen)
    (checkpoint,) = tmp_path.rglob("*.ckpt")
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert saved["state_dict"] and all(".lora_" in name for name in saved["state_dict"])
    # resuming loads the adapter over the base the config starts from
    resumed = TextToMusicTask(**saved["hyper_parameters"], init_from=str(root / "ours"))
    L.Trainer(
        max_steps=11, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    ).fit(resumed, DataLoader([batch] * 10, batch_size=None), ckpt_path=checkpoint)  # fmt: skip
    assert abs(loss(resumed.model) - after) < 0.5 and loss(resumed.model) < before - 0.1
    for name, extra in (("alone", []), ("merged", ["--merge"])):
        argv = ["export", "--ckpt", str(checkpoint), "--output", str(tmp_path / name), *extra]
        assert main(argv) == 0
    alone = TextToMusicLM.from_pretrained(tmp_path / "alone")
    merged = TextToMusicLM.from_pretrained(tmp_path / "merged")
    assert alone.config.adapter is not None and merged.config.adapter is None
    assert (tmp_path / "alone" / "adapter.safetensors").is_file()
    assert not (tmp_path / "alone" / "model.safetensors").exists()
    assert abs(loss(alone) - after) < 1e-5 and abs(loss(merged) - after) < 1e-4
    assert abs(loss(base) - before) < 1e-6  # the base directory is untouched
    # generate takes the adapter directory like any model, with its base model's codec
    out = tmp_path / "generated"
    argv = ["generate", "--model", str(tmp_path / "alone"), "--prompt", "a", "--seconds", "0.2"]
    assert main([*argv, "--no-progress", "--output_dir", str(out)]) == 0
    sidecar = json.loads((out / "00-a.json").read_text())
    assert sidecar["model"]["adapter_over"] == str((root / "ours").resolve())
    assert (out / "00-a.wav").is_file()


def test_export_to_transformers_round_trips_a_fine_tune(imported, tmp_path, capsys):
    import shutil

    from transformers import AutoTokenizer

    from lightning_sdm.models.adapters import AdapterConfig

    _, _, root = imported
    tuned = TextToMusicLM.from_pretrained(root / "ours").add_adapter(AdapterConfig(r=2))
    with torch.no_grad():  # an adapter as after training, so the export is not the original
        for name, parameter in tuned.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(5))
    tuned.save_pretrained(tmp_path / "tuned")
    shutil.copytree(root / "ours" / "codec", tmp_path / "tuned" / "codec")
    argv = ["export", "--model", str(tmp_path / "tuned"), "--format", "transformers"]
    assert main([*argv, "--output", str(tmp_path / "hf")]) == 0
    assert "(transformers)" in capsys.readouterr().out
    musicgen = MusicgenForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    tokens = AutoTokenizer.from_pretrained(tmp_path / "hf")(
        TEXTS, padding=True, return_tensors="pt"
    )
    codes = torch.randint(
        0, CARDINALITY, (2, LEVELS, 9), generator=torch.Generator().manual_seed(2)
    )
    with torch.no_grad():
        ours = tuned.eval()(codes, TEXTS)
        unconditional = tuned(codes, ["", ""])
    original = TextToMusicLM.from_pretrained(root / "ours")(codes, TEXTS)
    assert (ours - original).abs().max() > 1e-2  # the fine-tune moved the logits
    assert (their_logits(musicgen, codes, tokens) - ours).abs().max() <= 1e-4
    assert (their_logits(musicgen, codes, null=True) - unconditional).abs().max() <= 1e-4


def test_export_to_transformers_refuses_other_layouts(tmp_path, capsys):
    from tests.conftest import tiny_model

    tiny_model("stack_delay", 3).save_pretrained(tmp_path / "model")
    argv = ["export", "--model", str(tmp_path / "model"), "--format", "transformers"]
    assert main([*argv, "--output", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert "cannot be exported as MusicGen: lm.pattern is 'stack_delay', not 'delay'" in err
    assert not (tmp_path / "hf").exists()
