"""One end-to-end run of the product commands on a tiny simulated corpus.

simulate -> inspect -> pretrain-vqvae (with channel ranking) -> pretrain-mae -> finetune
-> evaluate -> predict, then the run directories are checked. The full demo is ``-m slow``.
"""

from __future__ import annotations

import csv
import io
import json

import pytest
import typer
from typer.testing import CliRunner

import duin
from duin.cli import register
from helpers.tiny_recipe import DROP, tiny_recipe, tiny_simulation

TINY = tiny_recipe(
    tiny_simulation(
        seed=3, n_words=6, contacts_per_shaft=[6, 7], pretrain_hours=0.02, oracle_trials_per_word=4
    ),
    epochs={"vqvae": 2, "mae": 2, "cls": 3},
    protocol="clean",
    trainer={"tensorboard": DROP},  # the default: this run also writes TensorBoard logs
    data={"n_channels": 4, "selection_epochs": 2},
    mae={"min_codex_perplexity": 1.0},  # a 2-epoch, 16-code codex; the floor itself is tested below
    cls={"variant": "mae"},
)


def make_app() -> typer.Typer:
    """A typer app with the product commands (what ``duin`` gets from ``register(app)``)."""
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        pass

    register(app)
    return app


def invoke(app: typer.Typer, *args: object) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result.output


def test_cli_end_to_end(tmp_path):
    app = make_app()
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    data, cache = tmp_path / "data", tmp_path / "cache"
    common = ["--config", cfg, "--cache", cache, "--data", data, "--quiet"]

    out = invoke(app, "simulate", "--out", data, "--format", "npz", "--config", cfg)
    assert "oracle accuracy" in out and "chance 16.67 %" in out
    assert "npz" in invoke(app, "inspect", data)

    invoke(app, "pretrain-vqvae", "--out", tmp_path / "vq", *common)
    invoke(app, "pretrain-mae", "--out", tmp_path / "mae", "--vqvae", tmp_path / "vq", *common)
    # A codex below the floor is refused before any MAE training, with the measured value; --force
    # trains anyway.
    refused = CliRunner().invoke(
        app,
        [
            str(a)
            for a in (
                "pretrain-mae",
                "--out",
                tmp_path / "mae-refused",
                "--vqvae",
                tmp_path / "vq",
                *common,
                "--set",
                "min_codex_perplexity=1000",
            )
        ],
    )
    assert refused.exit_code != 0
    assert "codex perplexity" in refused.output and "--force" in refused.output
    assert not (tmp_path / "mae-refused" / "sub-01" / "checkpoints").exists()
    invoke(
        app,
        "pretrain-mae",
        "--out",
        tmp_path / "mae-forced",
        "--vqvae",
        tmp_path / "vq",
        *common,
        "--set",
        "min_codex_perplexity=1000",
        "--force",
    )
    assert (tmp_path / "mae-forced" / "sub-01" / "checkpoints" / "last").is_dir()
    vq_record = json.loads((tmp_path / "vq/sub-01/metrics.jsonl").read_text().splitlines()[-1])
    assert {"train/codex_perplexity", "train/codes_used", "val/codex_perplexity"} <= set(vq_record)
    out = invoke(app, "finetune", "--out", tmp_path / "cls", "--init", tmp_path / "mae", *common)
    assert "oracle" in out and "chance" in out
    out = invoke(app, "evaluate", tmp_path / "cls")
    assert "16.67" in out  # chance for 6 words

    # --- run directories
    for stage, kind in (("vq", duin.load_model), ("mae", duin.load_model)):
        run = tmp_path / stage
        assert (run / "config.yaml").is_file() and (run / "channels.json").is_file()
        sub = run / "sub-01"
        assert sub.joinpath("metrics.jsonl").read_text().count("\n") == 2
        kind(sub / "checkpoints" / "last")
    assert type(duin.load_model(tmp_path / "vq/sub-01/checkpoints/last")).__name__ == "DuINVQVAE"
    assert type(duin.load_model(tmp_path / "mae/sub-01/checkpoints/last")).__name__ == "DuINMAE"
    channels = json.loads((tmp_path / "vq/channels.json").read_text())["channels"]["01"]
    assert len(channels) == 4
    assert (tmp_path / "vq/channel_ranking.csv").is_file()
    assert json.loads((tmp_path / "mae/channels.json").read_text())["channels"]["01"] == channels

    cls_run = tmp_path / "cls" / "sub-01" / "seed-3"
    assert (cls_run / "metrics.jsonl").read_text().count("\n") == 3
    assert (cls_run / "confusion.png").is_file() and (cls_run / "config.yaml").is_file()
    clf = duin.load_model(cls_run / "checkpoints" / "best")
    assert type(clf).__name__ == "DuINClassifier" and clf.config.n_channels == 4
    result = json.loads((cls_run / "result.json").read_text())
    assert result["variant"] == "mae" and result["protocol"] == "clean"
    assert "ties keep the earliest" in result["selection_rule"]
    report = json.loads((tmp_path / "cls" / "report.json").read_text())
    assert report["protocol"] == "clean" and "leak-free" in report["protocol_description"]
    assert report["n_classes"] == 6 and abs(report["chance"] - 1 / 6) < 1e-9
    assert 0 < report["oracle_accuracy"]["01"] <= 1
    assert {"top1", "top5", "balanced_accuracy"} <= set(report["summary"])
    assert (tmp_path / "cls" / "report.md").read_text().count("Oracle accuracy") == 1

    # --- the vqvae+vq variant is a configuration of the same command
    out = invoke(
        app, "finetune", "--out", tmp_path / "cls_vq", "--init", tmp_path / "vq",
        "--variant", "vqvae+vq", "--set", "optim.epochs=1", *common,
    )  # fmt: skip
    report_vq = json.loads((tmp_path / "cls_vq" / "report.json").read_text())
    assert report_vq["extra"]["variant"] == ["vqvae+vq"]
    clf_vq = duin.load_model(tmp_path / "cls_vq/sub-01/seed-3/checkpoints/best")
    assert clf_vq.config.quantize_features and clf_vq.config.quantizer.n_codes == 16
    # a wrong hand-off fails before any work
    result = CliRunner().invoke(
        app,
        ["finetune", "--out", str(tmp_path / "bad"), "--init", str(tmp_path / "vq"),
         "--variant", "mae", *map(str, common)],
    )  # fmt: skip
    assert result.exit_code == 1 and "needs a duin_mae checkpoint" in result.output
    assert not (tmp_path / "bad").exists()

    # --- predict: top-3 words for every event of the subject's task recordings
    invoke(app, "predict", cls_run, "--data", data, "--top-k", 3, "--out", tmp_path / "p.csv")
    rows = list(csv.DictReader(io.StringIO((tmp_path / "p.csv").read_text())))
    n_events = 6 * 10
    assert len(rows) == 3 * n_events
    assert {r["rank"] for r in rows} == {"1", "2", "3"}
    probs = [float(r["probability"]) for r in rows if r["rank"] == "1"]
    assert all(0 < p <= 1 for p in probs)


@pytest.mark.slow
def test_demo_beats_five_times_chance(tmp_path):
    """The packaged quick demo: 61 words, all three stages, > 5x chance on held-out trials."""
    from duin.workflows.demo import run_demo

    report = run_demo(tmp_path / "demo", quick=True)
    assert report["n_classes"] == 61
    assert report["summary"]["top1"]["mean"] > 5 / 61
    assert report["scratch"]["summary"]["top1"]["mean"] > 5 / 61
    assert (tmp_path / "demo" / "cls" / "report.md").is_file()
    assert (tmp_path / "demo" / "cls-scratch" / "report.md").is_file()
