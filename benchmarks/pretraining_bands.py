"""Where is the word information, and what does the codex keep? Band analysis of a demo run.

Two measurements on a finished ``duin demo`` directory (its own configs, split and channels):

1. **Word information per band**: a logistic regression on the demo's training trials, scored on
   its test trials, fed either the low-frequency waveform (< 12 Hz, 25 Hz samples) or the log
   high-gamma power (70-170 Hz, 100-ms bins) of the selected channels, or both.
2. **What the VQ-VAE reconstructs per band**: on the VQ-VAE's held-out pretraining crops, the
   share of each band in the signal's variance and the fraction of that band's variance the
   reconstruction explains (1 - |x_band - x̂_band|² / |x_band|²). With the band-power target
   (``power_loss_weight`` > 0) also the R² of the predicted log band power.

Run: ``python benchmarks/pretraining_bands.py DEMO_DIR [DEMO_DIR ...]``; writes
``benchmarks/results/pretraining_bands.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy.signal import butter, sosfiltfilt

from duin.models.duin import band_log_power
from duin.models.registry import load_model
from duin.training.stages import load_stage_config
from duin.workflows.prepare import prepare_data, pretrain_sets, subject_trials
from duin.workflows.rundir import read_channels

RESULTS = Path(__file__).resolve().parent / "results" / "pretraining_bands.json"
SFREQ = 1000.0
BANDS = {"0.5-8 Hz": (0.5, 8), "8-30 Hz": (8, 30), "30-70 Hz": (30, 70), "70-170 Hz": (70, 170)}


def _lf_waveform(x: np.ndarray) -> np.ndarray:
    sos = butter(4, 12, btype="low", fs=SFREQ, output="sos")
    return sosfiltfilt(sos, x, axis=-1)[..., ::40].reshape(len(x), -1)


def _hg_power(x: np.ndarray) -> np.ndarray:
    sos = butter(4, [70, 170], btype="band", fs=SFREQ, output="sos")
    power = sosfiltfilt(sos, x, axis=-1) ** 2
    bins = power[..., : power.shape[-1] // 100 * 100].reshape(*power.shape[:-1], -1, 100)
    return np.log(bins.mean(-1) + 1e-12).reshape(len(x), -1)


def word_information(demo: Path) -> dict[str, float]:
    """Test top-1 of a logistic regression on LF waveform, HG power and both."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    cfg = load_stage_config("cls", demo / "cls" / "config.yaml")
    prepared = prepare_data(cfg.data, demo / "cache", quiet=True)
    subject = prepared.subjects[0]
    trials = subject_trials(
        prepared,
        subject,
        cfg.data,
        n_times=cfg.model.n_times,
        seed=cfg.seed,
        protocol=cfg.protocol,
        channels=read_channels(demo / "cls")[subject],
    )
    x_tr, y_tr = trials.arrays(prepared.index, "train")
    x_te, y_te = trials.arrays(prepared.index, "test")
    features = {
        "lf_waveform": _lf_waveform,
        "hg_power": _hg_power,
        "both": lambda x: np.concatenate([_lf_waveform(x), _hg_power(x)], 1),
    }
    scores = {}
    for name, fn in features.items():
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=3000))
        clf.fit(fn(x_tr), y_tr)
        scores[name] = float(clf.score(fn(x_te), y_te))
    scores["chance"] = 1 / len(trials.labels)
    return scores


def reconstruction_by_band(demo: Path, n_crops: int = 64) -> dict[str, object]:
    """Variance share and explained fraction per band of the VQ-VAE's reconstruction."""
    cfg = load_stage_config("vqvae", demo / "vqvae" / "config.yaml")
    prepared = prepare_data(cfg.data, demo / "cache", quiet=True)
    subject = prepared.subjects[0]
    model = load_model(demo / "vqvae" / f"sub-{subject}" / "checkpoints" / "last").eval()
    _, val, _ = pretrain_sets(
        prepared,
        subject,
        cfg.data,
        n_times=model.config.n_times,
        seed=cfg.seed,
        channels=read_channels(demo / "vqvae")[subject],
        split=None,
    )
    x = torch.stack([torch.as_tensor(val[i]["x"]) for i in range(min(len(val), n_crops))])
    with torch.inference_mode():
        out = model(x, torch.zeros(len(x), dtype=torch.long), return_intermediates=True)
    rec, xn = out["reconstruction"].numpy(), x.numpy()
    bands = {}
    for name, (lo, hi) in BANDS.items():
        sos = butter(4, [lo, hi], btype="band", fs=SFREQ, output="sos")
        xb, rb = sosfiltfilt(sos, xn, axis=-1), sosfiltfilt(sos, rec, axis=-1)
        bands[name] = {
            "variance_share": float((xb**2).mean() / (xn**2).mean()),
            "explained": float(1 - ((xb - rb) ** 2).mean() / (xb**2).mean()),
        }
    result: dict[str, object] = {
        "bands": bands,
        "explained_total": float(1 - ((xn - rec) ** 2).mean() / (xn**2).mean()),
        "n_crops": len(x),
        "power_loss_weight": model.config.power_loss_weight,
    }
    if model.power_head is not None:
        cfg_m = model.config
        target = band_log_power(x, cfg_m.patch_len, cfg_m.power_bands)  # (B, C, L, n_bands)
        with torch.inference_mode():
            pred = model.power_head(out["dec_out"])
        pred = pred.view(len(x), -1, x.shape[1], len(cfg_m.power_bands)).transpose(1, 2)
        # R² after the same per-channel, per-band standardisation the loss uses
        mean, std = target.mean((0, 2), keepdim=True), target.std((0, 2), keepdim=True)
        z = (target - mean) / (std + 1e-6)
        r2 = 1 - (pred - z).pow(2).mean((0, 1, 2)) / z.pow(2).mean((0, 1, 2))
        result["band_power_r2"] = {
            f"{lo * 10}-{hi * 10} Hz": float(v)
            for (lo, hi), v in zip(cfg_m.power_bands, r2, strict=True)
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demos", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    t0 = time.time()
    runs = {}
    for demo in args.demos:
        runs[str(demo)] = {
            "word_information_top1": word_information(demo),
            "vqvae_reconstruction": reconstruction_by_band(demo),
        }
        print(demo, json.dumps(runs[str(demo)], indent=1))
    result = {
        "command": "python benchmarks/pretraining_bands.py " + " ".join(runs),
        "date": time.strftime("%Y-%m-%d"),
        "seconds": round(time.time() - t0, 1),
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
