"""The paper's code and duin on the same simulated subject: VQ-VAE -> MAE -> classifier.

Steps (each skipped when its output already exists, so an interrupted run continues):

1. ``duin simulate --format released``: one subject in the paper's layout, task runs and the
   pretraining files (8-s windows every 4 s, z-scored) both codes read.
2. Channels: ``duin select-channels`` (training trials only; ``--channels`` skips it); both
   codes get the same 10 channels.
3. The paper's code through ``ref_harness.py`` (its own run_vqvae/run_mae/run_cls): VQ-VAE ->
   MAE -> classifier from scratch and from the MAE.
4. duin through its CLI (``duin`` console script): the same stages on the same data, seed,
   epochs and warm-up. ``--recipe paper`` (default) is ``configs/paper.yaml`` with the paper
   code's choices (batch 32 for the VQ-VAE, betas (0.9, 0.999), ``protocol: reference``,
   k-means on the first batch, the sigmoid loss); ``--recipe quick`` runs ``configs/quick.yaml``
   (a smaller model: not the same recipe).
5. Codex usage measured the same way for both VQ-VAEs: the paper's checkpoint converted with
   ``duin.models.convert``, both tokenize the first 4 s of every pretraining file (eval mode):
   codes used and perplexity ``exp(entropy)`` of the code histogram.

Writes ``OUT/side_by_side.json`` and ``OUT/side_by_side.md``: per-epoch VQ-VAE reconstruction
loss (train/val), codex usage, MAE code accuracy, classifier test top-1 (scratch, mae) and wall
time per stage. Wall times of the two codes are only comparable when measured side by side on
an otherwise idle machine.

Tiny check (minutes on 2 cores)::

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/pretraining_side_by_side.py \\
        --out /tmp/sbs --tiny --epochs-vqvae 1 --epochs-mae 1 --epochs-cls 1

Measurement (the lead's budget)::

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/pretraining_side_by_side.py \\
        --out runs/sbs --epochs-vqvae 200 --epochs-mae 200 --epochs-cls 50 --threads 2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
HARNESS = REPO.parent / "shared" / "reference" / "harness" / "ref_harness.py"
TINY_SIM = ["trials_per_word=10", "pretrain_hours=0.05"]


# ------------------------------------------------------------------------------------- running
def _duin() -> list[str]:
    """The duin CLI: the console script beside this Python, else ``python -m duin``."""
    script = Path(sys.executable).with_name("duin")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "duin"]


def _run(cmd: list[str], log: Path, threads: int) -> float:
    """Run ``cmd`` (stdout+stderr to ``log``); return its wall time in seconds."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH", "")) if p
        ),
    }
    log.parent.mkdir(parents=True, exist_ok=True)
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    with log.open("w") as handle:
        done = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env)
    wall = time.perf_counter() - t0
    if done.returncode:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"command failed ({done.returncode}), see {log}:\n{tail}")
    return wall


def _has_option(duin: list[str], command: str, option: str) -> bool:
    """Whether ``duin COMMAND`` takes ``option`` (newer CLIs add options)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "COLUMNS": "200"}
    done = subprocess.run([*duin, command, "--help"], capture_output=True, text=True, env=env)
    return option in done.stdout


def _timed(out: Path, name: str, cmd: list[str], threads: int, done_marker: Path) -> float:
    """Run a stage once; its wall time is kept in ``OUT/walltimes.json``."""
    times_path = out / "walltimes.json"
    times = json.loads(times_path.read_text()) if times_path.is_file() else {}
    if done_marker.exists() and name in times:
        return float(times[name])
    times[name] = _run(cmd, out / "logs" / f"{name}.log", threads)
    times_path.write_text(json.dumps(times, indent=1))
    return float(times[name])


# ------------------------------------------------------------------------------------- codex
def _codex_usage(model: Any, x: np.ndarray) -> dict[str, float]:
    """Codes used and perplexity of a VQ-VAE's codes on ``x (n, C, T)`` (eval mode)."""
    import torch

    model.eval()
    codes = []
    with torch.no_grad():
        for start in range(0, len(x), 32):
            codes.append(model.tokenize(torch.from_numpy(x[start : start + 32])).reshape(-1))
    flat = torch.cat(codes)
    counts = torch.bincount(flat, minlength=model.config.quantizer.n_codes).double()
    p = counts[counts > 0] / counts.sum()
    return {
        "codes_used": int((counts > 0).sum()),
        "perplexity": float(torch.exp(-(p * p.log()).sum())),
        "n_codes": int(model.config.quantizer.n_codes),
        "n_tokens": int(flat.numel()),
    }


def _pretrain_crops(data: Path, channels: list[str], n_times: int) -> np.ndarray:
    from duin.data.readers.released import read_released_pretrain

    recs = read_released_pretrain(data, "01", ch_names=channels)
    return np.stack([r.signals[:, :n_times] for r in recs]).astype(np.float32)


def _ours_usage(ckpt: Path, crops: np.ndarray) -> dict[str, float]:
    from duin.models.registry import load_model

    return _codex_usage(load_model(ckpt), crops)


def _paper_usage(ckpt: Path, crops: np.ndarray) -> dict[str, float]:
    from duin.models.convert import convert_reference
    from duin.models.registry import load_model

    with tempfile.TemporaryDirectory() as tmp:
        converted = convert_reference("vqvae", ckpt, Path(tmp) / "vqvae")
        return _codex_usage(load_model(converted), crops)


# ------------------------------------------------------------------------------------- metrics
def _metrics(run: Path) -> list[dict[str, Any]]:
    path = run / "sub-01" / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _last_dir(run: Path) -> Path:
    return run / "sub-01" / "checkpoints" / "last"


def _ours_test_top1(run: Path) -> float | None:
    report = json.loads((run / "report.json").read_text())
    for subject in report.get("subjects", []):
        if str(subject.get("subject")) in ("01", "sub-01"):
            return float(subject["metrics"]["top1"]["mean"])
    return float(report["summary"]["top1"]["mean"])


def _get(record: dict[str, Any], *keys: str) -> float | None:
    for key in keys:
        if record.get(key) is not None:
            return float(record[key])
    return None


def _fmt(value: float | None, pct: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * value:.2f} %" if pct else f"{value:.4f}"


# ------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--epochs-vqvae", type=int, default=20)
    ap.add_argument("--epochs-mae", type=int, default=20)
    ap.add_argument("--epochs-cls", type=int, default=30)
    ap.add_argument("--recipe", choices=("paper", "quick"), default="paper")
    ap.add_argument("--sim-config", default="quick", help="config whose data.simulation is used")
    ap.add_argument("--sim-set", action="append", default=[], help="simulator KEY=VALUE")
    ap.add_argument("--tiny", action="store_true", help=f"small corpus: {' '.join(TINY_SIM)}")
    ap.add_argument("--data", type=Path, help="an existing released root (skips simulating)")
    ap.add_argument("--channels", help="comma-separated channels (skips select-channels)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--harness", type=Path, default=HARNESS)
    args = ap.parse_args(argv)

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    duin = _duin()
    threads = args.threads

    # 1. data
    data = args.data or out / "data"
    if args.data is None and not (data / "simulation.json").is_file():
        sim_set = ["n_subjects=1", *(TINY_SIM if args.tiny else []), *args.sim_set]
        cmd = [*duin, "simulate", "--out", str(data), "--format", "released"]
        cmd += ["--config", args.sim_config, "--seed", str(args.seed), "-q"]
        for item in sim_set:
            cmd += ["--set", item]
        if data.exists():
            shutil.rmtree(data)
        _timed(out, "simulate", cmd, threads, data / "simulation.json")

    # 2. channels (the same for both codes)
    config = args.recipe
    if args.channels:
        channels = args.channels.split(",")
    else:
        select = out / "ours" / "select"
        cmd = [*duin, "select-channels", "--out", str(select), "--data", str(data)]
        cmd += ["--config", config, "--seed", str(args.seed), "-q"]
        cmd += ["--set", f"data.selection_epochs={args.epochs_cls}"]
        _timed(out, "ours_select_channels", cmd, threads, select / "channels.json")
        channels = json.loads((select / "channels.json").read_text())["channels"]["01"]

    # 3. the paper's code
    paper = out / "paper"
    cmd = [sys.executable, str(args.harness), "--data", str(data), "--subj", "01"]
    cmd += ["--stage", "all", "--epochs-vqvae", str(args.epochs_vqvae)]
    cmd += ["--epochs-mae", str(args.epochs_mae), "--epochs-cls", str(args.epochs_cls)]
    cmd += ["--seed", str(args.seed), "--out", str(paper), "--channels", ",".join(channels)]
    cmd += ["--threads", str(threads), "--cls-init", "scratch,mae"]
    _timed(out, "paper_all", cmd, threads, paper / "result.json")
    result = json.loads((paper / "result.json").read_text())
    stages = result["stages"]

    # 4. ours, same data, channels, seed, epochs and warm-up
    common = ["--data", str(data), "--config", config, "--seed", str(args.seed), "-q"]
    common += ["--set", "data.channels=" + json.dumps({"01": channels})]

    def recipe(stage: str, epochs: int, warmup: int, batch: int | None) -> list[str]:
        sets = [f"optim.epochs={epochs}", f"optim.warmup_epochs={warmup}"]
        if args.recipe == "paper":
            # The paper code's choices where configs/paper.yaml follows the paper's text.
            sets += ["optim.betas=[0.9, 0.999]", "protocol=reference"]
            if batch is not None:
                sets.append(f"optim.batch_size={batch}")
            if stage == "vqvae":
                sets.append("model.quantizer.init_mode=first_batch")
            if stage == "cls":
                sets.append("model.loss=reference")
        return [x for s in sets for x in ("--set", s)]

    ours = out / "ours"
    vq, mae = ours / "vqvae", ours / "mae"
    wall: dict[str, dict[str, float]] = {"paper": {}, "ours": {}}
    sv, sm = stages["vqvae"], stages["mae"]
    cmd = [*duin, "pretrain-vqvae", "--out", str(vq), *common]
    cmd += recipe("vqvae", args.epochs_vqvae, sv["warmup_epochs"], sv["batch_size"])
    wall["ours"]["vqvae"] = _timed(out, "ours_vqvae", cmd, threads, _last_dir(vq))
    cmd = [*duin, "pretrain-mae", "--out", str(mae), "--vqvae", str(vq), *common]
    if _has_option(duin, "pretrain-mae", "--force"):
        cmd.append("--force")  # compare even a collapsed codex (the codex-health floor)
    cmd += recipe("mae", args.epochs_mae, sm["warmup_epochs"], sm["batch_size"])
    wall["ours"]["mae"] = _timed(out, "ours_mae", cmd, threads, _last_dir(mae))
    for init in ("scratch", "mae"):
        sc = stages["cls"][init]
        run = ours / f"cls-{init}"
        cmd = [*duin, "finetune", "--out", str(run), "--variant", init, *common]
        if init == "mae":
            cmd += ["--init", str(mae)]
        cmd += recipe("cls", args.epochs_cls, sc["warmup_epochs"], sc["batch_size"])
        wall["ours"][f"cls_{init}"] = _timed(
            out, f"ours_cls_{init}", cmd, threads, run / "report.json"
        )
    for key in ("vqvae", "mae"):
        wall["paper"][key] = float(result["summary"][key]["wall_sec"])
    for init in ("scratch", "mae"):
        wall["paper"][f"cls_{init}"] = float(result["summary"][f"cls_{init}"]["wall_sec"])

    # 5. collect
    crops = _pretrain_crops(data, channels, 4000)
    ours_vq, ours_mae = _metrics(vq), _metrics(mae)
    summary: dict[str, Any] = {
        "data": str(data),
        "seed": args.seed,
        "recipe": args.recipe,
        "channels": channels,
        "epochs": {"vqvae": args.epochs_vqvae, "mae": args.epochs_mae, "cls": args.epochs_cls},
        "warmup": {
            "vqvae": sv["warmup_epochs"],
            "mae": sm["warmup_epochs"],
            "cls": stages["cls"]["scratch"]["warmup_epochs"],
        },
        "vqvae_recon": {
            "paper": [
                {
                    "epoch": r["epoch"],
                    "train": r["train_loss"]["rgs"],
                    "val": r["validation_loss"]["rgs"],
                    "codes_used_logged": 2048 - r["codes_unused"]
                    if r.get("codes_unused") is not None
                    else None,
                }
                for r in sv["per_epoch"]
            ],
            "ours": [
                {
                    "epoch": r["epoch"],
                    "train": _get(r, "train/loss_recon"),
                    "val": _get(r, "val/loss_recon"),
                    "codex_perplexity": _get(r, "train/codex_perplexity"),
                    "codes_used_logged": _get(r, "train/codes_used"),
                }
                for r in ours_vq
            ],
        },
        "codex_usage_first_4s_of_each_file": {
            "paper": _paper_usage(paper / sv["checkpoint"], crops),
            "ours": _ours_usage(_last_dir(vq), crops),
        },
        "mae_code_accuracy": {
            "paper": [
                {"epoch": r["epoch"], "train": r["train_acc"], "val": r["val_acc"]}
                for r in sm["per_epoch"]
            ],
            "ours": [{"epoch": r["epoch"], "val": _get(r, "val/top1")} for r in ours_mae],
        },
        "cls_test_top1": {
            "paper": {
                init: {
                    "reference_rule": result["summary"][f"cls_{init}"]["test_acc_reference_rule"],
                    "leakfree_rule": result["summary"][f"cls_{init}"]["test_acc_leakfree"],
                }
                for init in ("scratch", "mae")
            },
            "ours": {init: _ours_test_top1(ours / f"cls-{init}") for init in ("scratch", "mae")},
            "chance": stages["cls"]["scratch"]["chance"],
        },
        "wall_sec": wall,
        "wall_note": "paper: the harness's per-stage wall time; ours: the CLI command "
        "(process start, data loading and caching included)",
    }
    (out / "side_by_side.json").write_text(json.dumps(summary, indent=1))
    (out / "side_by_side.md").write_text(_markdown(summary))
    print(_markdown(summary))
    return 0


def _markdown(s: dict[str, Any]) -> str:
    lines = [
        f"# Side by side: the paper's code vs duin ({s['recipe']} recipe, seed {s['seed']})",
        "",
        f"Epochs VQ-VAE/MAE/CLS {s['epochs']['vqvae']}/{s['epochs']['mae']}/{s['epochs']['cls']}"
        f" (warm-up {s['warmup']['vqvae']}/{s['warmup']['mae']}/{s['warmup']['cls']}); "
        f"channels {', '.join(s['channels'])}.",
        "",
        "## VQ-VAE reconstruction loss (MSE on z-scored crops)",
        "",
        "| epoch | paper train | paper val | ours train | ours val | ours codex perplexity |",
        "|---|---|---|---|---|---|",
    ]
    paper, ours = s["vqvae_recon"]["paper"], s["vqvae_recon"]["ours"]
    for i in range(max(len(paper), len(ours))):
        p = paper[i] if i < len(paper) else {}
        o = ours[i] if i < len(ours) else {}
        lines.append(
            f"| {i} | {_fmt(p.get('train'))} | {_fmt(p.get('val'))} | {_fmt(o.get('train'))} "
            f"| {_fmt(o.get('val'))} | {_fmt(o.get('codex_perplexity'))} |"
        )
    usage = s["codex_usage_first_4s_of_each_file"]
    lines += [
        "",
        "## Codex usage of the final VQ-VAE (first 4 s of every pretraining file, eval mode)",
        "",
        "| | codes used | perplexity | codex | tokens |",
        "|---|---|---|---|---|",
    ]
    for side in ("paper", "ours"):
        u = usage[side]
        lines.append(
            f"| {side} | {u['codes_used']} | {u['perplexity']:.2f} | {u['n_codes']} "
            f"| {u['n_tokens']} |"
        )
    lines += ["", "## MAE code accuracy (last epoch)", "", "| | train | val |", "|---|---|---|"]
    pm, om = s["mae_code_accuracy"]["paper"], s["mae_code_accuracy"]["ours"]
    lines.append(
        f"| paper | {_fmt(pm[-1]['train'] if pm else None, True)} "
        f"| {_fmt(pm[-1]['val'] if pm else None, True)} |"
    )
    lines.append(f"| ours | - | {_fmt(om[-1]['val'] if om else None, True)} |")
    c = s["cls_test_top1"]
    lines += [
        "",
        f"## Classifier test top-1 (chance {100 * c['chance']:.2f} %)",
        "",
        "| init | paper (reference rule) | paper (leak-free rule) | ours |",
        "|---|---|---|---|",
    ]
    for init in ("scratch", "mae"):
        p = c["paper"][init]
        lines.append(
            f"| {init} | {_fmt(p['reference_rule'], True)} | {_fmt(p['leakfree_rule'], True)} "
            f"| {_fmt(c['ours'][init], True)} |"
        )
    w = s["wall_sec"]
    lines += ["", "## Wall time per stage (s)", "", "| stage | paper | ours |", "|---|---|---|"]
    for stage in ("vqvae", "mae", "cls_scratch", "cls_mae"):
        lines.append(f"| {stage} | {w['paper'][stage]:.1f} | {w['ours'][stage]:.1f} |")
    lines += ["", s["wall_note"], ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
