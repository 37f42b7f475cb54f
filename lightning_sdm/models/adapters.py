"""LoRA adapters on the LM's decoder through peft: only they train, and they fold back into
the base weights (`merge_adapters`) or travel alone: an adapter directory (its config, its
weights and the base model directory it loads over) and an adapter run's checkpoints hold
the adapter's weights only."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from lightning_sdm.digests import file_digest
from lightning_sdm.errors import MissingFile, UserInputError
from lightning_sdm.models.saving import WEIGHTS_FILE, read_weights

# Which decoder projections each target name covers (per layer).
TARGET_MODULES = {
    "self_attention": r"self_attention\.(query|key_value|out)",
    "cross_attention": r"cross_attention\.(query|key_value|out)",
    "ffn": r"ffn\.(0|3)",
}
ADAPTER_TYPES = ("lora",)
ADAPTER_FILE = "adapter.json"  # an adapter directory: these two files over a base model
ADAPTER_WEIGHTS_FILE = "adapter.safetensors"
FROZEN_BASE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class AdapterConfig:
    """LoRA: W + (alpha / r) * B A on the targeted projections; B starts at zero, so the
    adapted model starts exactly where the base model is."""

    type: str = "lora"
    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    targets: tuple[str, ...] = ("self_attention", "cross_attention", "ffn")
    # Training memory only: the frozen decoder projections held in this dtype while the
    # adapter trains (bf16 halves them). Export and generation load the base as saved.
    frozen_dtype: str = "fp32"

    def __post_init__(self) -> None:
        if self.frozen_dtype not in FROZEN_BASE_DTYPES:
            raise UserInputError(
                f"adapter frozen_dtype must be one of {sorted(FROZEN_BASE_DTYPES)}, "
                f"got {self.frozen_dtype!r}"
            )
        if self.type not in ADAPTER_TYPES:
            raise UserInputError(f"adapter type must be one of {ADAPTER_TYPES}, got {self.type!r}")
        if self.r < 1:
            raise UserInputError(f"adapter r must be at least 1, got {self.r}")
        if not 0 <= self.dropout < 1:
            raise UserInputError(f"adapter dropout must lie in [0, 1), got {self.dropout}")
        unknown = sorted(set(self.targets) - set(TARGET_MODULES))
        if unknown or not self.targets:
            raise UserInputError(
                f"adapter targets must be a non-empty subset of {sorted(TARGET_MODULES)}, "
                f"got {list(self.targets)}"
            )
        object.__setattr__(self, "targets", tuple(self.targets))

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["targets"] = list(self.targets)
        return data


def _lora_layers(decoder: nn.Module) -> list[tuple[str, nn.Module]]:
    from peft.tuners.lora import LoraLayer

    return [
        (name, module) for name, module in decoder.named_modules() if isinstance(module, LoraLayer)
    ]


def add_adapters(decoder: nn.Module, config: AdapterConfig) -> None:
    """Wrap the targeted projections of `decoder` in LoRA layers, in place."""
    from peft import LoraConfig, inject_adapter_in_model

    pattern = "|".join(TARGET_MODULES[target] for target in config.targets)
    lora = LoraConfig(
        r=config.r,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=rf".*layers\.\d+\.({pattern})$",
    )
    inject_adapter_in_model(lora, decoder)


def is_adapter_parameter(name: str) -> bool:
    return ".lora_" in name


def freeze_all_but_adapters(module: nn.Module) -> None:
    for name, parameter in module.named_parameters():
        parameter.requires_grad = is_adapter_parameter(name)


def adapter_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights alone, under their names in `module`."""
    return {
        name: tensor.detach().contiguous().cpu()
        for name, tensor in module.state_dict().items()
        if is_adapter_parameter(name)
    }


def merge_adapters(decoder: nn.Module) -> None:
    """Fold every LoRA layer into its base projection and put the plain projection back."""
    for name, layer in _lora_layers(decoder):
        layer.merge()
        parent_name, _, child = name.rpartition(".")
        parent = decoder.get_submodule(parent_name) if parent_name else decoder
        setattr(parent, child, layer.get_base_layer())
    for attribute in ("peft_config", "_hf_peft_config_loaded"):
        if hasattr(decoder, attribute):
            delattr(decoder, attribute)


def merged_projection(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """A LoRA layer as one fp32 weight (its base plus the scaled B·A of its active
    adapters, as `merge_adapters` folds it) and its bias, for decoding to prepare like a
    plain layer's; None for any other module. The layer itself is not changed."""
    lora = sys.modules.get("peft.tuners.lora")  # not imported: no module here is LoRA
    if lora is None or not isinstance(module, lora.LoraLayer):
        return None
    base = module.get_base_layer()
    if not isinstance(base, nn.Linear):
        return None
    with torch.no_grad():
        weight = base.weight.float()
        if not module.merged and not module.disable_adapters:
            for name in module.active_adapters:
                if name in module.lora_A:
                    weight = weight + module.get_delta_weight(name).float()
    return weight, None if base.bias is None else base.bias.detach().float()


class LowPrecisionFrozenLinear(nn.Linear):
    """A frozen projection stored in a low-precision dtype: the input is cast down for the
    matmul and the output back up, so autograd keeps the half-size input and no fp32 copy
    of the weight (casting the weight up instead would keep one per layer for backward)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.to(self.weight.dtype), self.weight, self.bias).to(x.dtype)


def hold_frozen_projections_in(decoder: nn.Module, dtype: torch.dtype) -> None:
    """Store every frozen linear layer of `decoder` in `dtype`, in place (the adapters'
    own layers train and stay as they are)."""
    frozen = [
        (name, module)
        for name, module in decoder.named_modules()
        if type(module) is nn.Linear and not any(p.requires_grad for p in module.parameters())
    ]
    for name, module in frozen:
        parent_name, _, child = name.rpartition(".")
        parent = decoder.get_submodule(parent_name) if parent_name else decoder
        low = LowPrecisionFrozenLinear(
            module.in_features, module.out_features, bias=module.bias is not None,
            device="meta",
        )  # fmt: skip
        low.weight = nn.Parameter(module.weight.detach().to(dtype), requires_grad=False)
        if module.bias is not None:
            low.bias = nn.Parameter(module.bias.detach().to(dtype), requires_grad=False)
        low.train(module.training)
        setattr(parent, child, low)


def adapter_description(directory: str | Path) -> dict[str, Any] | None:
    """The adapter directory's description (its base, the base's weights, the adapter's
    config), or None where the directory holds no adapter; one line when it is torn or is
    some other JSON."""
    path = Path(directory) / ADAPTER_FILE
    if not path.is_file():
        return None
    try:
        description = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise UserInputError(f"{path} is not JSON ({error}): export the adapter again") from error
    if not (
        isinstance(description, dict)
        and isinstance(description.get("base"), str)
        and isinstance(description.get("adapter"), dict)
    ):
        raise UserInputError(
            f"{path} is not a LoRA adapter's description (it needs its base model directory "
            "and the adapter's settings): export the adapter again"
        )
    return description


def adapter_base(directory: str | Path) -> Path | None:
    """The model directory an adapter directory loads over (None: not an adapter)."""
    description = adapter_description(directory)
    return None if description is None else Path(description["base"])


def missing_base(directory: str | Path, base: Path) -> MissingFile:
    """An adapter whose base model directory has moved or gone."""
    return MissingFile(
        f"{directory} is a LoRA adapter over {base}, which holds no model now (moved or "
        "deleted?): put the model it was trained over back there (an export with --merge true "
        "stands alone)"
    )


def adapter_weights_file(directory: str | Path) -> Path | None:
    path = Path(directory) / ADAPTER_WEIGHTS_FILE
    return path if adapter_base(directory) is not None else None


def base_weights_digest(base: str | Path) -> str | None:
    """What an adapter was trained over: the base directory's weights, by content."""
    weights = Path(base) / WEIGHTS_FILE
    return file_digest(weights) if weights.is_file() else None


def check_adapter_base(base: str | Path, trained_over: str | None, what: str) -> None:
    """A LoRA adapter over other weights of the same layout loads without a word and makes
    noise: the base directory must still hold the weights it was trained over (adapters
    and checkpoints written before the base was recorded, `trained_over` None, pass)."""
    if trained_over is not None:
        refuse_other_base(base, trained_over, base_weights_digest(base), what)


def refuse_other_base(base: str | Path, trained_over: str, found: str | None, what: str) -> None:
    """One line when the base weights `found` (a digest, None: none) are not those the
    adapter was `trained_over`."""
    if found != trained_over:
        now = f"other weights ({found})" if found else "no weights"
        raise UserInputError(
            f"{what} holds a LoRA adapter trained over {base} when its weights were "
            f"{trained_over}; it now holds {now}: put the model it was trained over back there"
        )


def save_adapter_directory(
    model: nn.Module,
    config: AdapterConfig,
    directory: str | Path,
    base: str | Path,
    trained_over: str | None = None,
) -> Path:
    """The adapter alone (a few MB), to load over the model directory `base`, whose
    weights were `trained_over` (by default what `base` holds now)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(adapter_state(model), directory / ADAPTER_WEIGHTS_FILE)
    description = {
        "base": str(Path(base).resolve()),
        "base_weights": trained_over or base_weights_digest(base),
        "adapter": config.to_dict(),
    }
    (directory / ADAPTER_FILE).write_text(json.dumps(description, indent=2))
    return directory


def load_adapter_directory(
    directory: str | Path, load_base: Callable[[Path], nn.Module], map_location: str = "cpu"
) -> nn.Module:
    """The base model (`load_base(base directory)`, which must offer `add_adapter`) with
    the directory's adapter on it."""
    directory = Path(directory)
    description = adapter_description(directory)
    assert description is not None, f"{directory} is not an adapter directory"
    base = Path(description["base"])
    if not (base / "config.json").is_file():
        raise missing_base(directory, base)
    check_adapter_base(base, description.get("base_weights"), str(directory))
    model = load_base(base)
    model.add_adapter(AdapterConfig(**description["adapter"]))
    state = read_weights(directory / ADAPTER_WEIGHTS_FILE, map_location)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing_adapter = [name for name in missing if is_adapter_parameter(name)]
    if missing_adapter or unexpected:
        raise RuntimeError(
            f"{directory}'s adapter does not fit {base}: missing {missing_adapter}, "
            f"unexpected {unexpected}"
        )
    return model


def checkpoint_state(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What an adapter run's checkpoint keeps: the adapter's weights (the base is the
    directory the run started from)."""
    return {name: tensor for name, tensor in state_dict.items() if is_adapter_parameter(name)}


def holds_adapter_only(state_dict: dict[str, Any]) -> bool:
    return all(is_adapter_parameter(name) for name in state_dict)
