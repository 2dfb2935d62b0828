"""Channel contribution ranking and top-k selection."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from duin.models.config import ClassifierConfig
from duin.models.duin import DuINClassifier
from duin.training.channels import (
    ChannelRanking,
    contribution_scores,
    plot_ranking,
    save_rankings,
    select_top_k,
)

CONFIG = """
seed: 1
optim: {batch_size: 8}
trainer: {device: cpu, log_every: 0, tensorboard: false, progress: false}
model: {n_blocks: 1, n_heads: 2, d_head: 16, d_ff: 32, tokenizer_filters: [16, 16, 8]}
data:
  n_channels: 6
  selection_epochs: 30
  simulation: {seed: 1, n_words: 6, trials_per_word: 20, blocks_per_run: 2, n_shafts: 3,
               contacts_per_shaft: [8, 8], pretrain_hours: 0.0, difficulty: 0.3,
               oracle_trials_per_word: 2, compute_baseline: false, artefact_rate: 0.0}
cls:
  optim: {epochs: 30, warmup_epochs: 1, lr: 3.0e-3, lr_min: 1.0e-4, weight_decay: 0.05}
  model: {n_times: 2000, head_hidden: [16]}
"""


def _ranking(n: int = 5, coords: bool = False) -> ChannelRanking:
    return ChannelRanking(
        subject="01",
        ch_names=[f"A{i}-A{i + 1}" for i in range(n)],
        scores=list(np.linspace(1, 0.2, n)),
        regions=["vSMC"] * n,
        coords=[[0.01 * i, 0.02, -0.01 * i] for i in range(n)] if coords else None,
        info={"epochs": 3},
    )


def test_contribution_scores_are_normalised_mean_abs_weights():
    torch.manual_seed(0)
    model = DuINClassifier(
        ClassifierConfig(n_channels=4, n_times=300, n_blocks=1, n_heads=1, d_head=8, d_ff=8)
    )
    with torch.no_grad():
        model.subject_layer.weight.zero_()
        model.subject_layer.weight[0, 2] = 4.0  # channel 2: largest |W|
        model.subject_layer.weight[0, 0] = -2.0
    scores = contribution_scores(model)
    assert scores.shape == (4,)
    assert scores.max() == 1.0 and scores[2] == 1.0
    assert np.isclose(scores[0], 0.5) and scores[1] == 0.0


def test_top_k_round_trip_and_files(tmp_path):
    ranking = _ranking()
    assert select_top_k(ranking, 2) == ["A0-A1", "A1-A2"]
    assert select_top_k(ranking, None) == ranking.ch_names
    assert ranking.top(99) == ranking.ch_names
    with pytest.raises(ValueError, match="k must be"):
        select_top_k(ranking, 0)
    again = ChannelRanking.from_dict(json.loads(json.dumps(ranking.to_dict())))
    assert again.ch_names == ranking.ch_names and again.regions == ranking.regions
    paths = save_rankings([ranking], tmp_path)
    rows = paths["csv"].read_text().splitlines()
    assert rows[0] == "subject,rank,channel,score,region" and len(rows) == 6
    assert json.loads(paths["json"].read_text())["subjects"]["01"]["ranking"][0]["rank"] == 1


@pytest.mark.parametrize("coords", [True, False])
def test_plot_on_coordinates_or_bars(tmp_path, coords):
    path = plot_ranking(_ranking(coords=coords), tmp_path / "r.png", k=2, truth=["A0-A1"])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ranking_recovers_informative_channels(tmp_path):
    """Trained on training trials only, the top-k beat chance at finding word-informative channels."""
    from duin.training.stages import load_stage_config
    from duin.workflows.prepare import prepare_data, select_channels

    (tmp_path / "c.yaml").write_text(CONFIG)
    cfg = load_stage_config("cls", tmp_path / "c.yaml")
    prepared = prepare_data(cfg.data, tmp_path / "cache", quiet=True)
    chosen = select_channels(prepared, cfg, tmp_path / "sel", quiet=True)["01"]
    assert len(chosen) == 6
    # Truth from the simulator: a bipolar channel carries word information through its
    # contacts' weights; "strongly informative" = a contact with weight >= 0.5.
    weights = prepared.truth["subjects"]["01"]["channel_weights"]
    names = prepared.ch_names("01")

    def strength(ch: str) -> float:
        return max(weights.get(c, 0.0) for c in ch.split("-"))

    strong = {c for c in names if strength(c) >= 0.5}
    base_rate = len(strong) / len(names)
    precision = sum(c in strong for c in chosen) / len(chosen)
    assert 0 < base_rate < 1
    assert precision >= base_rate + 0.15, (precision, base_rate, chosen, sorted(strong))
    # selection used only the training trials of its split
    ranking = json.loads((tmp_path / "sel" / "channel_ranking.json").read_text())
    info = ranking["subjects"]["01"]["info"]
    split = prepared.trials("01", 0.0, 2.0)
    assert info["n_train_trials"] < len(split)
    assert (tmp_path / "sel" / "channels_sub-01.png").is_file()
    assert json.loads((tmp_path / "sel" / "channels.json").read_text())["channels"]["01"] == chosen


def test_label_budget_reaches_the_split_and_the_ranking(tmp_path):
    """``data.train_trials_per_word`` trims training trials only, ranking included."""
    import dataclasses

    from duin.training.stages import load_stage_config
    from duin.workflows.prepare import prepare_data, select_channels, subject_trials

    (tmp_path / "c.yaml").write_text(CONFIG)
    cfg = load_stage_config("cls", tmp_path / "c.yaml", overrides=["data.selection_epochs=1"])
    prepared = prepare_data(cfg.data, tmp_path / "cache", quiet=True)
    budget = dataclasses.replace(cfg.data, train_trials_per_word=3)
    kwargs = dict(n_times=2000, seed=1, protocol="clean", channels=None)
    full = subject_trials(prepared, "01", cfg.data, **kwargs)
    limited = subject_trials(prepared, "01", budget, **kwargs)
    assert len(full.split.train) == 6 * 16 and len(limited.split.train) == 6 * 3
    assert limited.split.val == full.split.val and limited.split.test == full.split.test
    assert limited.split.summary()["details"] == {"train_trials_per_label": 3}
    assert not np.allclose(limited.stats.mean["01"], full.stats.mean["01"])  # kept trials only
    select_channels(prepared, dataclasses.replace(cfg, data=budget), tmp_path / "sel", quiet=True)
    ranking = json.loads((tmp_path / "sel" / "channel_ranking.json").read_text())
    assert ranking["subjects"]["01"]["info"]["n_train_trials"] == 6 * 3
