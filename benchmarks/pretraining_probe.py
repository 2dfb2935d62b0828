"""Does Du-IN's MAE learn features of the task? A linear probe on a finished demo run.

For the demo's subject, split and channels, the trials are encoded by (a) the MAE's encoder
(subject layer + tokenizer + transformer, as fine-tuning starts from it) and (b) the same
architecture randomly initialised (seeded). Each token sequence is mean-pooled over 100-ms
windows into one vector per trial; a logistic regression is fit on the training trials and
scored on the held-out test trials. Nothing is fine-tuned: the probe measures what pretraining
alone put into the features. Both encoders see 3-s trials (the MAE was trained on 4-s crops;
its sinusoidal time table is recomputed for 30 tokens, as in fine-tuning).

Run: ``python benchmarks/pretraining_probe.py DEMO_DIR [DEMO_DIR ...]``; writes
``benchmarks/results/pretraining_probe.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from duin.models.registry import load_model
from duin.training.stages import build_classifier, load_stage_config
from duin.workflows.prepare import prepare_data, subject_trials
from duin.workflows.rundir import read_channels

RESULTS = Path(__file__).resolve().parent / "results" / "pretraining_probe.json"


def _features(model: torch.nn.Module, x: np.ndarray, subject: int = 0) -> np.ndarray:
    """``(n, n_tokens // 5 * d_model)``: encoder output averaged over 5-token (0.5 s) bins."""
    model.eval()
    out = []
    with torch.inference_mode():
        for lo in range(0, len(x), 64):
            xb = torch.from_numpy(x[lo : lo + 64])
            f = model.features(xb, torch.full((len(xb),), subject, dtype=torch.long))
            n, t, d = f.shape
            out.append(f[:, : t // 5 * 5].reshape(n, t // 5, 5, d).mean(2).reshape(n, -1).numpy())
    return np.concatenate(out)


def _stack(dataset) -> tuple[np.ndarray, np.ndarray]:
    items = [dataset[i] for i in range(len(dataset))]
    return np.stack([it["x"].numpy() for it in items]), np.array(
        [int(it["labels"]) for it in items]
    )


def probe(demo: Path) -> dict[str, float]:
    """Probe accuracies (MAE encoder vs random encoder) for one demo directory."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # The demo's own classifier recipe (its config.yaml records the seed and any overrides).
    cfg = load_stage_config("cls", demo / "cls" / "config.yaml")
    prepared = prepare_data(cfg.data, demo / "cache", quiet=True)
    subject = prepared.subjects[0]
    channels = read_channels(demo / "cls")[subject]
    trials = subject_trials(
        prepared,
        subject,
        cfg.data,
        n_times=cfg.model.n_times,
        seed=cfg.seed,
        protocol=cfg.protocol,
        channels=channels,
    )
    x_tr, y_tr = _stack(trials.dataset(prepared.index, "train"))
    x_te, y_te = _stack(trials.dataset(prepared.index, "test"))
    mae = load_model(demo / "mae" / f"sub-{subject}" / "checkpoints" / "last")
    torch.manual_seed(cfg.seed)
    pretrained = build_classifier(cfg.model, n_channels=len(channels), variant="mae", init=mae)
    torch.manual_seed(cfg.seed)
    random_init = build_classifier(cfg.model, n_channels=len(channels), variant="scratch")
    scores = {}
    for name, model in (("mae_encoder", pretrained), ("random_encoder", random_init)):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=3000))
        clf.fit(_features(model, x_tr), y_tr)
        scores[name] = float(clf.score(_features(model, x_te), y_te))
    scores["chance"] = 1 / len(trials.labels)
    scores["n_train"], scores["n_test"] = len(y_tr), len(y_te)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demos", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    t0 = time.time()
    runs = {str(d): probe(d) for d in args.demos}
    for d, s in runs.items():
        print(
            f"{d}: probe top-1 MAE encoder {100 * s['mae_encoder']:.2f} %, random encoder "
            f"{100 * s['random_encoder']:.2f} % (chance {100 * s['chance']:.2f} %)"
        )
    result = {
        "command": "python benchmarks/pretraining_probe.py " + " ".join(runs),
        "date": time.strftime("%Y-%m-%d"),
        "seconds": round(time.time() - t0, 1),
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
