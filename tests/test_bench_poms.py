"""``duin bench`` rows of the multi-subject models: ``duin_poms`` and ``labram_popt``, per subject
and mean +- SE next to the paper's numbers, on a 2-subject simulated corpus."""

from __future__ import annotations

import json

import pytest
import torch

from duin.workflows.bench import run_bench
from helpers.tiny_recipe import tiny_recipe, tiny_simulation

TINY = tiny_recipe(
    tiny_simulation(
        seed=3,
        n_subjects=2,
        n_words=4,
        contacts_per_shaft=[6, 8],
        pretrain_hours=0.01,
        oracle_trials_per_word=2,
    ),
    epochs={"vqvae": 1, "mae": 1, "cls": 1},
    bench={
        "name": "tiny multi-subject bench",
        "recipe": "quick",
        "models": ["labram_popt", "duin_poms"],
        "seeds": [3],
        "baseline_size": "quick",
        "baselines": {
            "labram_popt": {
                "model": {
                    "n_blocks": 1,
                    "n_heads": 2,
                    "d_head": 16,
                    "d_ff": 32,
                    "conv_filters": [4, 4, 4],
                    "norm_groups": 2,
                }
            }
        },
    },
    vqvae={"model": {"n_times": 1000}},
)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_poms_and_popt_rows_per_subject_next_to_the_paper(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    out = tmp_path / "bench"
    bench = run_bench(cfg, out, quiet=True)
    assert bench["cells"] == {"ran": 4, "done": 0}
    assert list(bench["models"]) == ["labram_popt", "duin_poms"]
    assert bench["subjects"] == ["01", "02"]
    paper = {"labram_popt": {"mean": 11.78, "se": 2.70}, "duin_poms": {"mean": 59.18, "se": 4.63}}
    for name, row in bench["models"].items():
        assert row["paper_top1"] == paper[name]
        per_subject = {r["subject"]: r["metrics"]["top1"]["mean"] for r in row["subjects"]}
        assert sorted(per_subject) == ["01", "02"]
        summary = row["summary"]["top1"]
        assert summary["n_subjects"] == 2
        assert summary["mean"] == pytest.approx(sum(per_subject.values()) / 2)
        # the paper's SE: population SD of the subject means / sqrt(n)
        spread = abs(per_subject["01"] - per_subject["02"]) / 2
        assert summary["se"] == pytest.approx(spread / 2**0.5)
    md = (out / "bench.md").read_text()
    assert "| labram_popt |" in md and "| duin_poms |" in md
    assert "11.78" in md and "59.18" in md
    assert bench["models"]["duin_poms"]["paper_parameters"] == "5.18M"
    # one pooled VQ-VAE + MAE for both subjects (per seed), over both subjects' channels
    pooled = out / "shared" / "pooled" / "seed-3"
    (mae,) = pooled.glob("mae-*")
    assert len(list(pooled.glob("vqvae-*"))) == 1
    channels = json.loads((mae / "channels.json").read_text())["channels"]
    assert list(channels) == ["01", "02"]
    for subject in ("01", "02"):
        result = out / "cells" / "duin_poms" / f"sub-{subject}_seed-3" / f"sub-{subject}"
        assert json.loads((result / "seed-3" / "result.json").read_text())["variant"] == "poms"
