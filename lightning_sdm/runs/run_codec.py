"""The codec a checkpoint's tokens decode with, found without being told, from what its
run left behind: the run folder's config.yaml, the codec recorded in the checkpoint, the
model an adapter run started from."""

from __future__ import annotations

from pathlib import Path

import yaml

from lightning_sdm.codecs.identity import CodecIdentity

CODEC_DIR = "codec"  # a model directory's codec, as export and import-musicgen write it


def checkpoint_codec(
    path: Path, trained_codec: CodecIdentity | None, base: str | None = None
) -> Path | None:
    """The codec a checkpoint's tokens decode with, found without being told: the one its
    run's config.yaml names, else the folder the training shards' codec was read from
    (recorded in the checkpoint), else the codec/ of the model an adapter run started
    from. Relative paths are tried from here and from the run folder's ancestors."""
    named = _run_codec_name(path)
    recorded = trained_codec.pretrained if trained_codec is not None else None
    base_codec = str(Path(base) / CODEC_DIR) if base else None
    for pretrained in (named, recorded, base_codec):
        found = _codec_folder(pretrained, path) if pretrained else None
        if found is not None:
            return found
    if named or recorded:
        print(
            f"the run trained with the codec {named or recorded}, which is not found from "
            "here: pass --codec_dir to write audio"
        )
    return None


def _codec_folder(pretrained: str, checkpoint: Path) -> Path | None:
    """A codec folder by the path fit or tokenize was given: here, or (relative) from an
    ancestor of the run folder, where fit ran."""
    path = Path(pretrained)
    run = checkpoint.resolve().parent.parent
    candidates = [path] if path.is_absolute() else [path, *(a / path for a in (run, *run.parents))]
    return next((c for c in candidates if (c / "config.json").is_file()), None)


def _run_codec_name(checkpoint: Path) -> str | None:
    """The codec named by the run's config.yaml (RUN/checkpoints/x.ckpt -> RUN/config.yaml)."""
    config_path = checkpoint.resolve().parent.parent / "config.yaml"
    if not config_path.is_file():
        return None
    data = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    section = data.get("data") or {}
    section = section.get("init_args", section)
    return (section.get("codec") or {}).get("pretrained") or None
