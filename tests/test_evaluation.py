"""Evaluation metrics, the paper's mean ± SE aggregation, reports and plots."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from duin.evaluation.metrics import (
    accuracy,
    aggregate_runs,
    balanced_accuracy,
    classification_metrics,
    confusion_matrix,
    cross_entropy,
    mean_se,
    top_k_accuracy,
)
from duin.evaluation.plots import plot_bars, plot_confusion_matrix
from duin.evaluation.report import RunResult, build_report, write_report

LOGITS = np.array(
    [
        [2.0, 1.0, 0.0],  # pred 0, label 0: top1 hit
        [0.0, 3.0, 1.0],  # pred 1, label 2: top2 hit
        [1.0, 0.0, 2.0],  # pred 2, label 1: miss in top2
        [0.5, 0.2, 0.1],  # pred 0, label 0: hit
    ]
)
LABELS = np.array([0, 2, 1, 0])


def test_topk_accuracy_by_hand():
    assert accuracy(LOGITS, LABELS) == pytest.approx(2 / 4)
    assert top_k_accuracy(LOGITS, LABELS, 2) == pytest.approx(3 / 4)
    assert top_k_accuracy(LOGITS, LABELS, 3) == 1.0
    # torch tensors give the same numbers
    assert accuracy(torch.tensor(LOGITS), torch.tensor(LABELS)) == pytest.approx(0.5)


def test_confusion_and_balanced_accuracy_by_hand():
    pred = LOGITS.argmax(1)  # [0, 1, 2, 0]
    cm = confusion_matrix(LABELS, pred, 3)
    expected = np.array([[2, 0, 0], [0, 0, 1], [0, 1, 0]])
    np.testing.assert_array_equal(cm, expected)
    # recalls: class 0 = 1, class 1 = 0, class 2 = 0
    assert balanced_accuracy(LABELS, pred, 3) == pytest.approx(1 / 3)


def test_cross_entropy_by_hand_and_against_torch():
    row = LOGITS[0]
    by_hand = -(row[0] - np.log(np.exp(row).sum()))
    assert cross_entropy(LOGITS[:1], LABELS[:1]) == pytest.approx(by_hand)
    ref = torch.nn.functional.cross_entropy(torch.tensor(LOGITS), torch.tensor(LABELS)).item()
    assert cross_entropy(LOGITS, LABELS) == pytest.approx(ref)
    # large logits do not overflow
    assert np.isfinite(cross_entropy(LOGITS * 1e4, LABELS))


def test_classification_metrics_bundle():
    out = classification_metrics(LOGITS, LABELS, top_k=(1, 2, 5))
    assert out["top1"] == 0.5 and out["top2"] == 0.75 and "top5" not in out
    assert out["chance"] == pytest.approx(1 / 3) and out["n_trials"] == 4
    assert np.asarray(out["confusion"]).sum() == 4


@pytest.mark.parametrize(
    ("logits", "labels", "match"),
    [
        (np.zeros(3), np.zeros(3, dtype=int), "n_classes"),
        (np.zeros((3, 2)), np.zeros(2, dtype=int), "labels must be"),
        (np.zeros((3, 2)), np.array([0, 1, 2]), r"\[0, 1\]"),
        (np.zeros((2, 2)), np.array([0.0, 1.0]), "integer"),
    ],
)
def test_bad_inputs_are_named(logits, labels, match):
    with pytest.raises(ValueError, match=match):
        accuracy(logits, labels)


# Du-IN (mae) per-subject means over 6 seeds (paper Tables 10-12) -> Table 2: 62.70 ± 4.69.
DUIN_MAE = [78.60, 83.61, 38.80, 70.98, 81.56, 46.90, 65.45, 59.09, 69.18, 34.23, 75.52, 48.54]
DUIN_SCRATCH = [71.25, 77.99, 23.04, 59.91, 77.60, 41.91, 59.63, 52.35, 66.39, 27.07, 73.56, 44.76]


def test_se_definition_reproduces_paper_table2():
    # The per-subject means are themselves rounded to 0.01, so the mean matches to +-0.01
    # (paper.md §8.1); the SE (population SD / sqrt(12)) matches to the printed digits.
    mean, se = mean_se(DUIN_MAE)
    assert mean == pytest.approx(62.70, abs=0.01) and round(se, 2) == 4.69
    mean, se = mean_se(DUIN_SCRATCH)
    assert mean == pytest.approx(56.29, abs=0.01) and round(se, 2) == 5.20
    # A sample SD (ddof=1) would not reproduce the table.
    assert round(float(np.std(DUIN_MAE, ddof=1) / np.sqrt(12)), 2) != 4.69


def test_aggregate_runs_means_seeds_first_then_subjects():
    # Subject a: seeds give 0.5 and 0.7 (mean 0.6); subject b: one seed at 0.2.
    agg = aggregate_runs({"a": {0: 0.5, 1: 0.7}, "b": [0.2]})
    assert agg.n_subjects == 2
    assert agg.mean == pytest.approx(0.4)
    assert agg.sd == pytest.approx(0.2)  # population SD of [0.6, 0.2]
    assert agg.se == pytest.approx(0.2 / np.sqrt(2))
    a = agg.subjects[0]
    assert a.subject == "a" and a.mean == pytest.approx(0.6) and a.sd == pytest.approx(0.1)
    # Per-subject rows reproduce Table 2 when every subject has six seeds.
    per_subject = {f"subj-{i:02d}": [m] * 6 for i, m in enumerate(DUIN_MAE, 1)}
    agg = aggregate_runs(per_subject)
    assert agg.mean == pytest.approx(62.70, abs=0.01) and round(agg.se, 2) == 4.69


def test_report_json_and_markdown(tmp_path):
    runs = [
        RunResult("sub-01", 42, {"top1": 0.5, "cross_entropy": 3.0}),
        RunResult("sub-01", 0, {"top1": 0.7, "cross_entropy": 2.0}),
        {"subject": "sub-02", "seed": 42, "metrics": {"top1": 0.2, "cross_entropy": 3.5}},
    ]
    json_path, md_path = write_report(
        tmp_path,
        runs,
        protocol="clean",
        n_classes=61,
        oracle_accuracy={"sub-01": 0.9, "sub-02": 0.6},
        title="test",
    )
    report = json.loads(json_path.read_text())
    assert report["protocol"] == "clean" and "leak-free" in report["protocol_description"]
    assert report["chance"] == pytest.approx(1 / 61)
    assert report["summary"]["top1"]["mean"] == pytest.approx(0.4)
    assert report["summary"]["top1"]["se"] == pytest.approx(0.2 / np.sqrt(2))
    assert [s["subject"] for s in report["subjects"]] == ["sub-01", "sub-02"]
    md = md_path.read_text()
    assert "**top1: 40.00 ± 14.14 %**" in md
    assert "| sub-01 | 2 | 60.00 ± 10.00 |" in md
    assert "Chance level: 1.64 %" in md and "`clean`" in md and "oracle" in md
    assert not list(tmp_path.glob(".tmp-*"))


def test_report_rejects_bad_input():
    with pytest.raises(ValueError, match="protocol"):
        build_report([RunResult("s", 1, {"top1": 0.1})], protocol="leaky", n_classes=2)
    with pytest.raises(ValueError, match="duplicate"):
        build_report([RunResult("s", 1, {"top1": 0.1})] * 2, protocol="clean", n_classes=2)
    with pytest.raises(ValueError, match="primary metric"):
        build_report([RunResult("s", 1, {"acc": 0.1})], protocol="reference", n_classes=2)


def test_plots_write_png(tmp_path):
    cm = confusion_matrix([0, 1, 1, 2], [0, 1, 2, 2], 3)
    path = plot_confusion_matrix(cm, tmp_path / "cm.png", class_names=["a", "b", "c"])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    path = plot_bars(
        {"scratch": 56.3, "mae": 62.7}, tmp_path / "bars.png", errors={"mae": 4.7}, chance=1.64
    )
    assert path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="square"):
        plot_confusion_matrix(np.zeros((2, 3)), tmp_path / "bad.png")
