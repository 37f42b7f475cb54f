"""The model families, declared once: what each one's model, task, sampling options,
generation and export formats are. Loading, generation, export, the callbacks and the web
app ask here instead of testing types or sniffing keys.

A model directory's config.json and a fit checkpoint record the family by name (the
model class's `family`); files written before that are read by `old_files`.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning_sdm.errors import UserInputError
from lightning_sdm.models.adapters import adapter_base, missing_base
from lightning_sdm.models.saving import CONFIG_FILE, FAMILY_KEY

# The families that ship with the package, registered when first asked for (their modules
# import models, tasks and generation, which must not import this one back at load time).
BUILT_IN = ("lightning_sdm.families.lm", "lightning_sdm.families.diffusion")


@dataclass(frozen=True)
class ModelFamily:
    """One kind of text-to-audio model.

    Attributes:
        model_class: An nn.Module class with `family` (its name, recorded in its files),
            `sampling_config_type`, `save_pretrained` and `from_pretrained(directory)`.
        task_class: Its LightningModule (a TextConditionedTask): `from_checkpoint`,
            `export_model`.
        description: What it is, for messages and the app ("a codebook LM").
        options_section: `generate`'s flags for its sampling config (--SECTION.name).
        generation: (model, sampling, decoding) -> the generation steps (a
            FamilyGeneration) that `generate`, the app and the sample callback drive.
        check_codec: (codec, model) -> None, raising UserInputError when the codec cannot
            decode what the model makes.
        exporters: Export formats besides lightning_sdm: name -> (model, codec model or
            None, output) -> output.
    """

    model_class: type
    task_class: type
    description: str
    options_section: str
    generation: Callable[..., Any]
    check_codec: Callable[[Any, Any], None]
    exporters: Mapping[str, Callable[[Any, Any, Path], Path]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.model_class.family

    @property
    def sampling_config(self) -> type:
        return self.model_class.sampling_config_type

    @property
    def export_formats(self) -> tuple[str, ...]:
        return ("lightning_sdm", *self.exporters)

    def sampling_from(self, options: Mapping[str, Any] | None) -> Any:
        """The family's sampling config from option names and values (JSON or YAML);
        unknown names and values of the wrong kind are one-line errors."""
        return config_from_options(self.sampling_config, options or {}, self.description)

    def sampling_fields(self) -> list[dict[str, Any]]:
        """Each sampling option's name, kind and default (what the app's form shows)."""
        defaults = self.sampling_config()
        kinds = typing.get_type_hints(self.sampling_config)
        return [
            {
                "name": option.name,
                "kind": kinds[option.name].__name__,
                "default": getattr(defaults, option.name),
            }
            for option in dataclasses.fields(self.sampling_config)
        ]


_FAMILIES: dict[str, ModelFamily] = {}
_built_ins_loaded = False


def register(family: ModelFamily) -> ModelFamily:
    """Add a family (a name may be registered once; the same declaration again is a no-op)."""
    known = _FAMILIES.get(family.name)
    if known is not None and known != family:
        raise ValueError(f"a model family named {family.name!r} is already registered")
    _FAMILIES[family.name] = family
    return family


def unregister(name: str) -> None:
    """Remove a family (a test's, say); unknown names are ignored."""
    _FAMILIES.pop(name, None)


def _load_built_ins() -> None:
    global _built_ins_loaded
    if not _built_ins_loaded:
        _built_ins_loaded = True
        for module in BUILT_IN:
            importlib.import_module(module)


def families() -> list[ModelFamily]:
    """Every registered family, the built-in ones first."""
    _load_built_ins()
    return list(_FAMILIES.values())


def family_named(name: str) -> ModelFamily:
    """The family registered under `name`; an unknown name is a one-line error."""
    _load_built_ins()
    if name not in _FAMILIES:
        raise UserInputError(
            f"unknown model family {name!r}; known: {', '.join(sorted(_FAMILIES))}"
        )
    return _FAMILIES[name]


def family_of(model: Any) -> ModelFamily:
    """The family of a model instance (or class)."""
    _load_built_ins()
    model_class = model if isinstance(model, type) else type(model)
    for family in _FAMILIES.values():
        if issubclass(model_class, family.model_class):
            return family
    raise UserInputError(f"{model_class.__name__} is not a registered model family's model")


# What to do about a folder without a model, where the model is read for generation.
MAKE_A_MODEL = "make one with `lightning-sdm export CKPT DIR`, or pass --ckpt"


def family_of_directory(directory: str | Path, advice: str = MAKE_A_MODEL) -> ModelFamily:
    """The family a model directory records (an adapter directory: its base model's);
    `advice` follows the reason when the folder holds no model."""
    from lightning_sdm.families.old_files import old_directory_family

    directory = Path(directory)
    base = adapter_base(directory)
    if base is not None:
        if not (base / CONFIG_FILE).is_file():
            raise missing_base(directory, base)
        return family_of_directory(base, advice)
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise UserInputError(
            f"{directory} is not a saved lightning_sdm model (no {CONFIG_FILE}); {advice}"
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise UserInputError(f"{config_path} is not JSON: {error}") from error
    if not isinstance(config, dict):
        raise UserInputError(f"{config_path} is not a lightning_sdm model config")
    if FAMILY_KEY not in config and "text" not in config:  # every model of ours has a text section
        raise UserInputError(f"{directory} is not a saved lightning_sdm model: {_foreign(config)}")
    return family_named(config.get(FAMILY_KEY) or old_directory_family(config))


def _foreign(config: Mapping[str, Any]) -> str:
    """What a directory holding someone else's config.json is, and where it belongs."""
    kind = config.get("model_type") or config.get("_class_name")
    if kind is None:
        return "its config.json has no model family or text section"
    if kind == "musicgen":
        return "it is a Hugging Face MusicGen (turn it into one: `lightning-sdm import-musicgen`)"
    if kind in CODEC_KINDS:
        return f"it is a codec ({kind}); a codec goes to --codec_dir or codec.pretrained"
    return f"it holds a {kind!r} model"


# What codec directories' configs call themselves (transformers' model_type, diffusers'
# _class_name): EnCodec, DAC, Mimi, and the waveform VAE.
CODEC_KINDS = frozenset({"encodec", "dac", "mimi", "AutoencoderOobleck"})


def checkpoint_family_name(checkpoint: Mapping[str, Any]) -> str:
    """The family a fit checkpoint records (or, for an older one, what it holds says)."""
    from lightning_sdm.families.old_files import old_checkpoint_family

    recorded = checkpoint.get(FAMILY_KEY)
    if recorded:
        return str(recorded)
    return old_checkpoint_family(checkpoint.get("hyper_parameters") or {})


def family_of_checkpoint(checkpoint: Mapping[str, Any], path: str | Path) -> ModelFamily:
    """The family of a loaded fit checkpoint (`path` names it in errors); a codec task's
    checkpoint is refused: it is not a text-to-audio model."""
    name = checkpoint_family_name(checkpoint)
    _load_built_ins()
    if name not in _FAMILIES:
        raise UserInputError(
            f"{path} is a {name} checkpoint; generation and export as a model need a "
            f"text-to-audio model's ({', '.join(sorted(_FAMILIES))})"
        )
    return _FAMILIES[name]


def sampling_from_sections(family: ModelFamily, sections: Mapping[str, Any]) -> Any:
    """The family's sampling config among the command line's sections (--sampling.*,
    --diffusion.*, ...: each family's options_section); another family's section set away
    from its defaults is refused, since it would be silently ignored."""
    _load_built_ins()
    for section, given in sections.items():
        if section == family.options_section or given == type(given)():
            continue
        owner = next((f for f in _FAMILIES.values() if f.options_section == section), None)
        flags = ", ".join(
            f"--{family.options_section}.{f['name']}" for f in family.sampling_fields()
        )
        raise UserInputError(
            f"--{section}.* options are for {owner.description if owner else 'another family'}; "
            f"this is {family.description}: use {flags or 'its defaults'}"
        )
    return sections.get(family.options_section)


def config_from_options(kind: type, options: Mapping[str, Any], owner: str) -> Any:
    """`kind(**options)` with the names checked and JSON numbers made the declared kind."""
    if not isinstance(options, Mapping):
        raise UserInputError(f"sampling options must map names to values, got {options!r}")
    kinds = typing.get_type_hints(kind)
    names = [option.name for option in dataclasses.fields(kind)]
    values = {}
    for name, value in options.items():
        if name not in names:
            raise UserInputError(
                f"{owner} has no sampling option {name!r}; it takes {', '.join(names)}"
            )
        values[name] = _as_kind(value, kinds[name], name)
    return kind(**values)


def _as_kind(value: Any, kind: Any, name: str) -> Any:
    if kind not in (bool, int, float):
        return value
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        if kind is float:
            return float(value)
        if kind is int and value == int(value):
            return int(value)
    article = "an" if kind is int else "a"
    raise UserInputError(f"sampling option {name} must be {article} {kind.__name__}, got {value!r}")
