"""How realistic is the simulator? Signal statistics beside a real ECoG recording.

Compares, on z-scored channels after duin's preprocessing (0.5-200 Hz, 50 Hz notches, 1 kHz):

- the real BIDS ECoG recording that py-neuromodulation ships (sub-testsub, 6 ECoG contacts,
  19 s; unreferenced, common average and bipolar), and
- the simulator's non-task and task signal (bipolar; the 10 most informative channels, what
  Du-IN is trained on, and 10 others), for the current defaults and for a background spectrum
  given on the command line (e.g. the previous default ``--old 1.6,0.3``).

Statistics: the PSD slope between 2 and 100 Hz, the fraction of power below 10 Hz and in high
gamma (70-170 Hz), autocorrelation at 10 ms and 100 ms, how compressible 100-ms patches are
(variance in the top 4/8 principal components of one channel's patches, top 16/64 of the
10-channel tokens: what a VQ-VAE must reconstruct), mean |correlation| between channels and
kurtosis. It also measures how much of the non-task signal carries word-part responses: the
fraction of 4-s crops in which at least one spontaneous utterance starts.

Run: ``python benchmarks/simulator_realism.py`` (about a minute on 2 cores); writes
``benchmarks/results/simulator_realism.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import time
from pathlib import Path

import numpy as np
import scipy.signal as sps

import duin
from duin.data.preprocess import PreprocessConfig, preprocess
from duin.data.simulate import SimulationConfig, simulate
from duin.data.simulate.signal import _spontaneous
from duin.data.simulate.subject import _rng, _SubjectModel, _vocabulary

RESULTS = Path(__file__).resolve().parent / "results" / "simulator_realism.json"


def signal_stats(x: np.ndarray, sfreq: float) -> dict[str, float]:
    """Statistics of ``x (n_channels, n_times)`` after per-channel z-scoring."""
    x = np.asarray(x, dtype=np.float64)
    x = (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)
    f, p = sps.welch(x, fs=sfreq, nperseg=2048, axis=-1)
    pm = p.mean(0)
    fit = (f >= 2) & (f <= 100)
    total = np.trapezoid(pm, f)

    def share(lo: float, hi: float) -> float:
        sel = (f >= lo) & (f < hi)
        return float(np.trapezoid(pm[sel], f[sel]) / total)

    def autocorr(lag: int) -> float:
        return float(np.mean([np.corrcoef(c[:-lag], c[lag:])[0, 1] for c in x]))

    patch = int(0.1 * sfreq)
    n = x.shape[1] // patch
    per_channel = x[:, : n * patch].reshape(x.shape[0], n, patch).reshape(-1, patch)
    ev = np.linalg.svd(per_channel[:20000] - per_channel.mean(0), compute_uv=False) ** 2
    ev /= ev.sum()
    tokens = x[:, : n * patch].reshape(x.shape[0], n, patch).transpose(1, 0, 2).reshape(n, -1)
    evt = np.linalg.svd(tokens[:20000] - tokens.mean(0), compute_uv=False) ** 2
    evt /= evt.sum()
    r = np.corrcoef(x)
    return {
        "n_channels": int(x.shape[0]),
        "seconds": float(x.shape[1] / sfreq),
        "psd_slope_2_100hz": float(np.polyfit(np.log10(f[fit]), np.log10(pm[fit]), 1)[0]),
        "power_below_10hz": share(0, 10),
        "power_high_gamma": share(70, 170),
        "autocorr_10ms": autocorr(int(0.01 * sfreq)),
        "autocorr_100ms": autocorr(patch),
        "patch_pca_top4": float(ev[:4].sum()),
        "patch_pca_top8": float(ev[:8].sum()),
        "token_pca_top16": float(evt[:16].sum()),
        "token_pca_top64": float(evt[:64].sum()),
        "mean_abs_channel_corr": float(np.abs(r[~np.eye(len(r), dtype=bool)]).mean()),
        "kurtosis": float(np.mean((x**4).mean(1))),
    }


def real_ecog() -> dict[str, dict[str, float]]:
    """Statistics of the py-neuromodulation ECoG contacts (empty when it is not installed)."""
    spec = importlib.util.find_spec("py_neuromodulation")
    if spec is None or not spec.submodule_search_locations:
        return {}
    root = Path(next(iter(spec.submodule_search_locations))) / "data"
    rec = duin.read_bids(root, "testsub", "gripforce")[0]
    out = {}
    for reference in ("none", "average", "bipolar"):
        pre = preprocess(rec, PreprocessConfig(reference=reference))
        rows = [i for i, c in enumerate(pre.ch_names) if c.upper().startswith("ECOG")]
        out[f"real ECoG, reference={reference}"] = signal_stats(pre.signals[rows], pre.sfreq)
    return out


def simulated(config: SimulationConfig, label: str) -> dict[str, dict[str, float]]:
    """Statistics of one simulated subject's non-task and task signal (bipolar)."""
    corpus = simulate(config)
    subject = corpus.subjects[0]
    rest = preprocess(subject.pretrain[0], PreprocessConfig())
    informative = subject.informative_among(rest.ch_names)[:10]
    rows = [rest.ch_names.index(c) for c in informative]
    others = [i for i in range(len(rest.ch_names)) if i not in rows][:10]
    task = preprocess(subject.task_runs[0], PreprocessConfig())
    task_rows = [task.ch_names.index(c) for c in informative]
    return {
        f"{label}: non-task, 10 informative": signal_stats(rest.signals[rows], rest.sfreq),
        f"{label}: non-task, 10 others": signal_stats(rest.signals[others], rest.sfreq),
        f"{label}: task, 10 informative": signal_stats(task.signals[task_rows], task.sfreq),
    }


def response_coverage(config: SimulationConfig, crop_s: float = 4.0) -> dict[str, float]:
    """Fraction of non-task ``crop_s`` crops in which a spontaneous utterance starts."""
    model = _SubjectModel(config, 0, _vocabulary(config.n_words))
    n_times = int(
        round(min(config.pretrain_hours, config.pretrain_recording_hours) * 3600 * config.sfreq)
    )
    onsets = np.array(
        [u.start for u in _spontaneous(model, _rng(config.seed, 0, 2, 0), n_times)], dtype=float
    )
    starts = np.arange(0, n_times - crop_s * config.sfreq, crop_s * config.sfreq)
    hits = [np.any((onsets >= s) & (onsets < s + crop_s * config.sfreq)) for s in starts]
    return {
        "utterances_per_minute": float(len(onsets) / (n_times / config.sfreq / 60)),
        f"crops_{crop_s:g}s_with_a_response": float(np.mean(hits)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", default="1.6,0.3", help="EXPONENT,KNEE of a second simulation")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    t0 = time.time()
    base = dict(
        seed=42,
        n_words=61,
        trials_per_word=4,
        pretrain_hours=0.05,
        difficulty=0.25,
        compute_baseline=False,
        oracle_trials_per_word=1,
    )
    current = SimulationConfig(**base)
    exponent, knee = (float(v) for v in args.old.split(","))
    old = SimulationConfig(**base, spectral_exponent=exponent, spectral_knee=knee)
    stats = {
        **real_ecog(),
        **simulated(
            current,
            f"simulator (1/f^{current.spectral_exponent:g}, knee {current.spectral_knee:g} Hz)",
        ),
        **simulated(old, f"simulator (1/f^{exponent:g}, knee {knee:g} Hz)"),
    }
    result = {
        "command": "python benchmarks/simulator_realism.py",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {platform.processor() or platform.system()}",
        "seconds": round(time.time() - t0, 1),
        "stats": stats,
        "non_task_response_coverage": response_coverage(
            SimulationConfig(seed=42, pretrain_hours=0.25)
        ),
    }
    keys = [
        "psd_slope_2_100hz",
        "power_below_10hz",
        "power_high_gamma",
        "autocorr_100ms",
        "token_pca_top16",
        "mean_abs_channel_corr",
        "kurtosis",
    ]
    print(f"{'signal':<58}" + "".join(f"{k[:14]:>15}" for k in keys))
    for name, row in stats.items():
        print(f"{name:<58}" + "".join(f"{row[k]:>15.3f}" for k in keys))
    print(json.dumps(result["non_task_response_coverage"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
