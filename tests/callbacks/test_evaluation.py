"""The evaluation callback logs its metrics during a short CPU fit."""

import csv

import numpy as np
import soundfile
import yaml

from lightning_sdm.cli import main
from tests.metrics.backends import save_tiny_ast, save_tiny_clap
from tests.test_training_cli import tiny_config


def test_a_short_fit_logs_fad_kld_clap_and_rtf(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    reference = tmp_path / "reference"
    reference.mkdir()
    for index in range(3):
        t = np.arange(8000) / 16000
        soundfile.write(
            reference / f"r{index}.wav", 0.3 * np.sin(2 * np.pi * 200 * (index + 1) * t), 16000
        )
        (reference / f"r{index}.txt").write_text(f"caption {index}")
    config_path = tiny_config(tmp_path)
    config = yaml.safe_load(config_path.read_text())
    config["trainer"]["callbacks"] = [
        {
            "class_path": "lightning_sdm.callbacks.evaluation.EvaluationMetrics",
            "init_args": {
                "reference": str(reference),
                "metrics": ["fad", "kld", "clap", "rtf"],
                "num_prompts": 2,
                "seconds": 0.2,
                "ast_dir": str(save_tiny_ast(tmp_path / "ast")),
                "clap_dir": str(save_tiny_clap(tmp_path / "clap")),
            },
        }
    ]
    config_path.write_text(yaml.safe_dump(config))
    assert main(["fit", "--config", str(config_path)]) == 0
    (metrics_file,) = (tmp_path / "run").rglob("metrics.csv")
    rows = list(csv.DictReader(metrics_file.open()))
    logged = {name: [float(r[name]) for r in rows if r.get(name)] for name in rows[0]}
    for name in ("eval/fad", "eval/kld", "eval/clap", "eval/rtf"):
        assert logged.get(name), name
    assert logged["eval/fad"][0] > 0 and logged["eval/rtf"][0] > 0


def test_a_metric_without_its_backend_is_refused_at_construction():
    import pytest

    from lightning_sdm.callbacks.evaluation import EvaluationMetrics
    from lightning_sdm.errors import UserInputError

    with pytest.raises(UserInputError, match="kld needs ast_dir"):
        EvaluationMetrics(reference="x", metrics=["kld"])
