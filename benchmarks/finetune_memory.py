"""Fine-tuning memory and step time for each memory option, measured side by side in one run,
and a model of training memory for MusicGen's sizes checked against the measurements.

    python benchmarks/finetune_memory.py [--dim 256 --layers 4 --frames 150 --json out.json]

Each option trains in its own process (peak memory is per process): one warm-up step, then
`--steps` timed steps of forward, backward and AdamW. "measured" is the peak resident memory
of the training steps above what the built model already held (gradients, optimizer state,
activations, allocator slack); "model" predicts the same from counts: gradients and AdamW
state for the trainable parameters, and the activations autograd keeps, whose per-token
cost is calibrated on this machine and checked on a run of another size. The table names
the device that produced its rows. The second table applies the model to MusicGen's sizes on a GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from process_memory import peak_rss_mb, rss_mb, run_child  # noqa: E402

from lightning_sdm.conditioning import TextConditionerConfig  # noqa: E402
from lightning_sdm.machine import machine, machine_line  # noqa: E402
from lightning_sdm.models.lm import LMConfig  # noqa: E402
from lightning_sdm.tasks.lm_task import (  # noqa: E402
    TextToMusicTask,
    masked_level_cross_entropy,
)
from lightning_sdm.tasks.optim import OptimConfig, build_optimizer  # noqa: E402

OPTIONS: dict[str, dict] = {
    "full fine-tune": {},
    "full + activation checkpointing": {"lm": {"activation_checkpointing": True}},
    "LoRA r=16": {"adapter": {"r": 16}},
    "LoRA r=16 + checkpointing": {
        "adapter": {"r": 16},
        "lm": {"activation_checkpointing": True},
    },
    "LoRA r=16 + T5 bf16": {"adapter": {"r": 16}, "text": {"frozen_dtype": "bf16"}},
    "LoRA r=16 + T5, decoder bf16": {
        "adapter": {"r": 16, "frozen_dtype": "bf16"},
        "text": {"frozen_dtype": "bf16"},
    },
}
SMALL_T5 = {"vocab_size": 384, "d_model": 256, "d_kv": 32, "d_ff": 1024, "num_layers": 4,
            "num_heads": 8}  # fmt: skip
ADAM_BYTES = 8  # two fp32 moments per trainable parameter


@dataclass
class Measurement:
    option: str
    device: str
    params: int
    trainable: int
    step_s: float
    measured_mb: float
    saved_activation_mb: float
    weights_mb: float = float("nan")  # parameters as held for training (dtype per option)
    model_mb: float = float("nan")


def build(args: argparse.Namespace, option: dict) -> TextToMusicTask:
    torch.manual_seed(0)
    lm = LMConfig(
        dim=args.dim, num_layers=args.layers, num_heads=args.heads, ffn_dim=4 * args.dim,
        pattern=args.pattern, interleave=args.interleave, **option.get("lm", {}),
    )  # fmt: skip
    text = TextConditionerConfig(
        t5_config=dict(SMALL_T5), cfg_dropout=0.0, **option.get("text", {})
    )
    task = TextToMusicTask(lm=lm, text=text, adapter=option.get("adapter")).train()
    task.lower_frozen_base_precision()  # what fitting does first
    return task


def batch(args: argparse.Namespace) -> dict:
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 2048, (args.batch, 4, args.frames), generator=generator)
    return {
        "codes": codes,
        "padding_mask": torch.ones(args.batch, args.frames, dtype=torch.bool),
        "captions": ["a caption of some length for the text encoder"] * args.batch,
    }


def saved_activation_bytes(task: TextToMusicTask, data: dict) -> int:
    """Bytes of the tensors autograd keeps for backward (each storage counted once)."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.requires_grad and tensor.is_leaf:  # a parameter: counted as weights
            return tensor
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        logits = task.model(data["codes"], data["captions"])
        masked_level_cross_entropy(logits, data["codes"], data["padding_mask"])
    return sum(storages.values())


def child(args: argparse.Namespace) -> None:
    """Train one option in this process and print its measurement as JSON."""
    torch.set_num_threads(args.threads or torch.get_num_threads())
    option = OPTIONS[args.child]
    task = build(args, option)
    data = batch(args)
    saved = saved_activation_bytes(task, data)
    optimizer, _ = build_optimizer(task.model, OptimConfig(warmup_steps=0), total_steps=100)

    def step() -> None:
        logits = task.model(data["codes"], data["captions"])
        loss, _ = masked_level_cross_entropy(logits, data["codes"], data["padding_mask"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    before = rss_mb()
    step()  # warm-up: optimizer state is created here
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    step_s = (time.perf_counter() - start) / args.steps
    parameters = list(task.parameters())
    result = Measurement(
        option=args.child, device=f"cpu ({torch.get_num_threads()} threads)",
        params=sum(p.numel() for p in parameters),
        trainable=sum(p.numel() for p in parameters if p.requires_grad),
        step_s=step_s, measured_mb=peak_rss_mb() - before, saved_activation_mb=saved / 2**20,
        weights_mb=sum(p.numel() * p.element_size() for p in parameters) / 2**20,
    )  # fmt: skip
    print(json.dumps(asdict(result)))


def measure(args: argparse.Namespace, option: str, **overrides) -> Measurement:
    options = {
        name: value
        for name, value in {**vars(args), **overrides}.items()
        if name not in ("child", "json") and value is not None and not isinstance(value, bool)
    }
    return Measurement(**run_child(__file__, option, options))


def positions(frames: int, pattern: str) -> int:
    """Decoder positions per item: delay C - 1 extra steps; stack patterns ~C + 1 per frame."""
    return frames + 3 if pattern == "delay" else 5 * frames


def predicted_mb(trainable: int, saved_bytes: float) -> float:
    """Gradients (fp32) + AdamW moments for the trainable parameters + kept activations."""
    return (trainable * (4 + ADAM_BYTES) + saved_bytes) / 2**20


MUSICGEN_SIZES = {  # decoder dim, layers, heads; all three condition on T5-base (110 M)
    "musicgen-small": (1024, 24, 16),
    "musicgen-medium": (1536, 48, 24),
    "musicgen-large": (2048, 48, 32),
}
T5_BASE_PARAMS = 109_628_544


def musicgen_table(per_position_per_dim_layer: float, ratios: dict[str, float]) -> str:
    """GPU memory by the model: weights, gradients, AdamW, kept activations at 30 s (1503
    positions, delay) per batch item, in fp32 (bf16-mixed keeps some in half precision).
    The full recipe keeps an EMA copy of the whole model; the LoRA recipes run without EMA
    (or with the adapter's alone). "+ decoder bf16" is LoRA + checkpointing with the
    frozen decoder projections in bf16 (`adapter.frozen_dtype`). "FSDP /N" shards weights,
    gradients and AdamW state over N GPUs (no EMA), plus two whole layers in flight.
    Backward's working set and allocator slack come on top."""
    from lightning_sdm.models.adapters import (
        AdapterConfig,
        freeze_all_but_adapters,
        hold_frozen_projections_in,
    )
    from lightning_sdm.models.text_to_music import TextToMusicConfig, TextToMusicLM

    lines = [
        f"{'':<18}{'decoder':>9}{'recipe':>24}{'weights':>9}{'grads+Adam':>11}"
        f"{'EMA':>7}{'act/item':>9}{'total b=1':>10}{'b=4':>7}",
    ]
    n = 1503
    for name, (dim, layers, heads) in MUSICGEN_SIZES.items():
        config = TextToMusicConfig(
            lm=LMConfig(dim=dim, num_layers=layers, num_heads=heads, ffn_dim=4 * dim,
                        pattern="delay", interleave=1, ffn_bias=False, head_bias=False),
            text=TextConditionerConfig(t5_config={"d_model": 8, "num_layers": 1}),
        )  # fmt: skip
        with torch.device("meta"):
            model = TextToMusicLM(config)
            decoder = sum(p.numel() for n_, p in model.named_parameters() if "encoder" not in n_)
            model.add_adapter(AdapterConfig(r=16))
            lora = sum(p.numel() for n_, p in model.named_parameters() if "lora_" in n_)
            freeze_all_but_adapters(model)
            hold_frozen_projections_in(model.lm.decoder, torch.bfloat16)
            low_decoder_bytes = sum(
                p.numel() * p.element_size()
                for n_, p in model.named_parameters()
                if "encoder" not in n_
            )
        activations = per_position_per_dim_layer * n * dim * layers
        block = 16 * dim * dim  # one decoder layer, gathered whole (and the next, prefetched)
        lora_weights = 4 * (decoder + lora) + 2 * T5_BASE_PARAMS  # T5 frozen in bf16
        # adapter.frozen_dtype: bf16 halves the decoder's frozen projections too (the
        # embeddings, heads and norms stay fp32)
        low_weights = low_decoder_bytes + 2 * T5_BASE_PARAMS
        for recipe, trainable, weight_bytes, ema, act in (
            ("full, fp32, EMA", decoder, 4 * (decoder + T5_BASE_PARAMS),
             4 * (decoder + T5_BASE_PARAMS), activations),
            ("full + checkpointing", decoder, 4 * (decoder + T5_BASE_PARAMS),
             4 * (decoder + T5_BASE_PARAMS), activations * ratios["checkpointing"]),
            ("LoRA r=16, T5 bf16", lora, lora_weights, 0, activations * ratios["lora"]),
            ("LoRA + checkpointing", lora, lora_weights, 0,
             activations * ratios["lora_checkpointing"]),
            ("+ decoder bf16", lora, low_weights, 0, activations * ratios["lora_checkpointing"]),
            *(
                (f"full + ckpt, FSDP /{gpus}", decoder / gpus,
                 4 * (decoder + T5_BASE_PARAMS) / gpus + 2 * 4 * block, 0,
                 activations * ratios["checkpointing"])
                for gpus in (4, 8)
            ),
        ):  # fmt: skip
            state = trainable * (4 + ADAM_BYTES)
            fixed = weight_bytes + state + ema
            lines.append(
                f"{name if recipe.startswith('full, ') else '':<18}{decoder / 1e6:>8.0f}M"
                f"{recipe:>24}{weight_bytes / 2**30:>8.2f}G{state / 2**30:>10.2f}G"
                f"{ema / 2**30:>6.2f}G{act / 2**30:>8.2f}G{(fixed + act) / 2**30:>9.1f}G"
                f"{(fixed + 4 * act) / 2**30:>6.1f}G"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--pattern", default="delay")
    parser.add_argument("--interleave", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    rows = []
    for option in OPTIONS:
        rows.append(measure(args, option))
        print(f"  measured {option}: {rows[-1].measured_mb:.0f} MB", flush=True)
    # The activation model: bytes kept per position x dim x layer for one batch item,
    # calibrated on the full fine-tune, checked on a run of another size.
    n = positions(args.frames, args.pattern)
    per_unit = rows[0].saved_activation_mb * 2**20 / (n * args.dim * args.layers * args.batch)
    plain_saved = rows[0].saved_activation_mb
    for row in rows:
        row.model_mb = predicted_mb(row.trainable, row.saved_activation_mb * 2**20)
    check_args = {
        "dim": args.dim * 3 // 2,
        "layers": max(1, args.layers // 2),
        "frames": args.frames * 2,
    }
    check = measure(args, "full fine-tune", **check_args)
    check_n = positions(check_args["frames"], args.pattern)
    check_kept = per_unit * check_n * check_args["dim"] * check_args["layers"] * args.batch
    check.model_mb = predicted_mb(check.trainable, check_kept)
    device = rows[0].device
    print(
        f"\n{args.layers} layers x {args.dim}, {args.pattern}, batch {args.batch} x "
        f"{args.frames} frames ({n} positions), AdamW; measured on {device}, {machine_line()}"
    )
    header = (
        f"{'option':<34}{'params':>9}{'trainable':>11}{'weights MB':>11}{'step s':>8}"
        f"{'kept acts MB':>13}{'measured MB':>12}{'model MB':>10}{'unmodelled':>11}"
    )
    print(header + "\n" + "-" * len(header))
    for row in rows:
        print(
            f"{row.option:<34}{row.params / 1e6:>8.2f}M{row.trainable / 1e6:>10.2f}M"
            f"{row.weights_mb:>11.0f}{row.step_s:>8.2f}{row.saved_activation_mb:>13.0f}{row.measured_mb:>12.0f}"
            f"{row.model_mb:>10.0f}{row.measured_mb - row.model_mb:>11.0f}"
        )
    checkpointing_ratio = rows[1].saved_activation_mb / plain_saved
    print(
        f"\nactivation model: {per_unit:.1f} bytes kept per position x dim x layer and batch "
        f"item (checkpointing keeps {checkpointing_ratio:.0%} of it). model = gradients + "
        "AdamW state of the trainable parameters + kept activations; unmodelled = backward's "
        "working set (activation gradients, recomputed layers) and allocator slack."
    )
    print(
        f"check at {check_args['layers']} layers x {check_args['dim']}, {check_args['frames']} "
        f"frames: kept activations {check.saved_activation_mb:.0f} MB measured, "
        f"{check_kept / 2**20:.0f} MB by the model; memory {check.measured_mb:.0f} MB measured, "
        f"{check.model_mb:.0f} MB by the model"
    )
    print("\nexpected GPU memory for MusicGen sizes (the model above, 30 s = 1503 positions):")
    ratios = {
        "checkpointing": checkpointing_ratio,
        "lora": rows[2].saved_activation_mb / plain_saved,  # LoRA's own inputs and dropout
        "lora_checkpointing": rows[3].saved_activation_mb / plain_saved,
    }
    print(musicgen_table(per_unit, ratios))
    if args.json:
        payload = {
            "machine": machine(),
            "rows": [asdict(row) for row in rows],
            "check": asdict(check),
            "activation_bytes_per_position_dim_layer": per_unit,
            "checkpointing_ratio": checkpointing_ratio,
        }
        args.json.write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
