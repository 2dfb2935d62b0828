"""``duin bench``: a tiny benchmark end to end, rerun skipping, grid expansion, bad model names."""

from __future__ import annotations

import json
import os

import pytest
import torch
import typer
from typer.testing import CliRunner

from duin.cli import register
from duin.config import ConfigError
from duin.workflows.bench import DUIN_MODELS, load_bench, model_names
from helpers.tiny_recipe import tiny_recipe, tiny_simulation

TINY = tiny_recipe(
    tiny_simulation(
        seed=3, n_words=6, contacts_per_shaft=[6, 7], pretrain_hours=0.02, oracle_trials_per_word=4
    ),
    epochs={"vqvae": 1, "mae": 1, "cls": 2},
    bench={
        "name": "tiny bench",
        "recipe": "quick",
        "models": ["neurobert", "duin_mae"],
        "seeds": [3],
        "baseline_size": "quick",
        "baselines": {
            "neurobert": {
                "model": {"n_blocks": 1, "d_model": 32, "n_heads": 2, "d_head": 16, "d_ff": 32},
                "pretrain": {
                    "neurobert_pretrain": {"n_times": 2000, "decoder_filters": [16, 16, 16]}
                },
                "pretrain_optim": {"epochs": 1, "warmup_epochs": 0},
            }
        },
    },
    data={"n_channels": 4, "selection_epochs": 1},
    quick={"bench": {"seeds": [3, 4]}},
)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        pass

    register(app, ["bench"])
    return app


def test_tiny_bench_end_to_end_and_rerun_skips(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    out = tmp_path / "bench"
    runner = CliRunner()
    result = runner.invoke(
        make_app(), ["bench", "--config", str(cfg), "--out", str(out), "--quiet"]
    )
    assert result.exit_code == 0, (result.output, result.exception)
    assert "cells: 2 run, 0 already finished" in result.output

    bench = json.loads((out / "bench.json").read_text())
    assert list(bench["models"]) == ["neurobert", "duin_mae"]
    assert bench["n_classes"] == 6 and abs(bench["chance"] - 1 / 6) < 1e-9
    assert bench["subjects"] == ["01"] and bench["seeds"] == [3]
    assert 0 < bench["oracle_accuracy"]["01"] <= 1
    for m in bench["models"].values():
        top1 = m["summary"]["top1"]
        assert 0.0 <= top1["mean"] <= 1.0 and top1["se"] == 0.0  # one subject: SE 0
        assert m["runs"][0]["seed"] == 3 and m["n_parameters"] > 0
    assert bench["models"]["neurobert"]["token_level"] == "region"
    assert bench["models"]["neurobert"]["pretrained"] is True
    assert bench["models"]["duin_mae"]["paper_top1"] == {"mean": 62.70, "se": 4.69}

    md = (out / "bench.md").read_text()
    assert "| neurobert |" in md and "| duin_mae |" in md
    assert "chance" in md and "16.67" in md and "Simulator oracle ceiling" in md
    assert "Per subject" in md and "sub-01" in md
    png = (out / "bench.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"

    # one split, one channel set, one pretraining cache per (subject, seed)
    shared = out / "shared" / "sub-01" / "seed-3"
    assert len(list(shared.glob("channels-*"))) == 1
    assert len(list(shared.glob("vqvae-*"))) == 1 and len(list(shared.glob("mae-*"))) == 1
    assert len(list(shared.glob("neurobert-pretrain-*"))) == 1
    splits = []
    for model in ("neurobert", "duin_mae"):
        cell = out / "cells" / model / "sub-01_seed-3"
        res = json.loads((cell / "sub-01" / "seed-3" / "result.json").read_text())
        splits.append(res["split"])
        assert (cell / "report.json").is_file()
        assert json.loads((cell / "cell.json").read_text())["status"] == "done"
    assert splits[0] == splits[1]

    # rerun: finished cells are skipped (their files are untouched)
    results = sorted(out.glob("cells/*/*/sub-01/seed-3/result.json"))
    before = {p: p.stat().st_mtime_ns for p in results}
    metrics_before = {
        p: p.stat().st_mtime_ns for p in out.glob("cells/*/*/sub-01/seed-3/metrics.jsonl")
    }
    result = runner.invoke(
        make_app(), ["bench", "--config", str(cfg), "--out", str(out), "--quiet"]
    )
    assert result.exit_code == 0, (result.output, result.exception)
    assert "cells: 0 run, 2 already finished" in result.output
    assert {p: p.stat().st_mtime_ns for p in results} == before
    assert {p: p.stat().st_mtime_ns for p in metrics_before} == metrics_before

    # a changed recipe does not silently reuse a finished cell
    result = runner.invoke(
        make_app(),
        ["bench", "--config", str(cfg), "--out", str(out), "--set", "cls.optim.lr=5e-4", "--quiet"],
    )
    assert result.exit_code == 1
    assert "another configuration" in result.output


def test_bad_model_name_fails_before_any_work(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    out = tmp_path / "bench"
    result = CliRunner().invoke(
        make_app(),
        [
            "bench",
            "--config",
            str(cfg),
            "--out",
            str(out),
            "--set",
            "bench.models=[duin_mae,transformer]",
        ],
    )
    assert result.exit_code == 1
    assert "unknown model(s) ['transformer']" in result.output
    for name in ("tstcc", "labram", "duin_scratch", "duin_vqvae+vq", "duin_mae"):
        assert name in result.output
    assert not out.exists()
    with pytest.raises(ConfigError, match="valid:"):
        load_bench(cfg, ["bench.baselines.nope.optim.lr=1e-3"])


def test_grid_expansion_of_packaged_ablations():
    plan = load_bench("configs/ablations/mask_ratio.yaml")
    assert plan.is_grid
    assert [e.name for e in plan.entries] == [f"mask-{r}" for r in (0.1, 0.3, 0.5, 0.7, 0.9)]
    assert [e.stages["mae"].model.mask_ratio for e in plan.entries] == [0.1, 0.3, 0.5, 0.7, 0.9]
    assert all(e.settings.models == ["duin_mae"] for e in plan.entries)
    # the rest of the recipe is the base's: same VQ-VAE for every entry
    assert len({json.dumps(str(e.stages["vqvae"])) for e in plan.entries}) == 1

    codex = load_bench("ablations/codex_size", quick=True)
    assert [e.stages["vqvae"].model.quantizer.n_codes for e in codex.entries] == [
        512,
        1024,
        2048,
        4096,
        8192,
    ]
    assert all(e.settings.seeds == [42] and e.settings.recipe == "quick" for e in codex.entries)

    channels = load_bench("ablations/channels")
    assert [e.stages["cls"].data.n_channels for e in channels.entries] == [5, 10, 20, None]
    assert [e.name for e in load_bench("ablations/channels", quick=True).entries] == [
        "top-10",
        "all",
    ]
    # a child's own keys win over its parent's quick section; the parent's quick still applies
    quick_channels = load_bench("ablations/channels", quick=True).entries[0].settings
    assert quick_channels.name.startswith("Ablation") and quick_channels.recipe == "quick"
    tokens = load_bench("ablations/token_level").entries[0].settings.models
    assert {"brainbert", "brant", "labram"} < set(tokens) and "duin_mae" in tokens


def test_grid_in_a_user_file_and_validation(tmp_path):
    cfg = tmp_path / "grid.yaml"
    cfg.write_text(
        TINY
        + "grid:\n"
        + "  - {name: a, set: {cls.optim.lr: 1.0e-4}}\n"
        + "  - {name: b, set: ['cls.optim.lr=2e-4', 'bench.models=[duin_scratch]']}\n"
    )
    plan = load_bench(cfg, quick=True)
    assert [e.name for e in plan.entries] == ["a", "b"]
    assert [e.stages["cls"].optim.lr for e in plan.entries] == [1e-4, 2e-4]
    assert plan.entries[1].settings.models == ["duin_scratch"]
    assert plan.entries[0].settings.seeds == [3, 4]  # --quick merged before the grid
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY + "grid:\n  - {name: a, set: {cls.optim.lrr: 1.0}}\n")
    with pytest.raises(ConfigError, match="lrr"):
        load_bench(bad)
    dup = tmp_path / "dup.yaml"
    dup.write_text(TINY + "grid:\n  - {name: a}\n  - {name: a}\n")
    with pytest.raises(ConfigError, match="unique"):
        load_bench(dup)


def test_model_names_cover_table2():
    names = model_names()
    assert set(DUIN_MODELS) <= set(names)
    assert {"tstcc", "cnn_bigru", "eeg_conformer", "neurobert", "dewave"} <= set(names)
    assert len(names) == len(set(names)) == 14  # Table 2: 9 baselines, 5 Du-IN rows
    assert os.path.basename(str(load_bench("bench").source)) == "bench.yaml"
