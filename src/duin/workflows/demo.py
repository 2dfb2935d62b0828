"""The demo: simulate a small corpus, run VQ-VAE -> MAE -> classifier, compare with scratch.

Reads a packaged recipe (``quick`` by default). Writes ``OUT/cache``, the run directories
``OUT/vqvae``, ``OUT/mae``, ``OUT/cls`` and ``OUT/cls-scratch`` (same split and channels,
no pretraining) and ``OUT/timings.json``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from duin.training.stages import load_stage_config, write_json
from duin.workflows.codex import format_pretraining, pretraining_health
from duin.workflows.evaluate import format_table
from duin.workflows.finetune import finetune
from duin.workflows.prepare import prepare_data
from duin.workflows.pretrain import pretrain_mae, pretrain_vqvae
from duin.workflows.rundir import read_channels, write_channels

__all__ = ["run_demo"]


def run_demo(
    out: str | Path,
    quick: bool = True,
    *,
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
    seed: int | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Simulate a small corpus, run the three stages and the evaluation.

    Parameters
    ----------
    out : str or pathlib.Path
        Demo directory: ``vqvae/``, ``mae/``, ``cls/`` run directories and ``cache/``.
    quick : bool
        Use the packaged ``quick`` recipe (minutes on a CPU) instead of ``paper``.
    config : str or pathlib.Path, optional
        Another config file (overrides ``quick``).
    overrides : sequence of str
        ``--set`` overrides applied to every stage section.
    seed : int, optional
        Seed of everything (default: the config's).
    quiet : bool
        Hide progress bars.

    Returns
    -------
    dict
        The report of the classifier stage, plus ``run_dir`` and ``table`` (printable).
    """
    out = Path(out)
    if out.is_dir() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; choose another --out for the demo")
    name = config if config is not None else ("quick" if quick else "paper")
    extra = [*overrides, *([f"seed={seed}"] if seed is not None else [])]
    cfgs = {stage: load_stage_config(stage, name, extra) for stage in ("vqvae", "mae", "cls")}
    t0 = time.perf_counter()
    prepared = prepare_data(cfgs["vqvae"].data, out / "cache", quiet=quiet)
    timings = {"prepare_s": time.perf_counter() - t0}
    t = time.perf_counter()
    pretrain_vqvae(
        cfgs["vqvae"], out / "vqvae", selection=cfgs["cls"], prepared=prepared, quiet=quiet
    )  # type: ignore[arg-type]
    timings["vqvae_s"] = time.perf_counter() - t
    t = time.perf_counter()
    # force: the demo always shows both rows; a collapsed codex is reported in its health table.
    pretrain_mae(
        cfgs["mae"], out / "mae", out / "vqvae", prepared=prepared, quiet=quiet, force=True
    )  # type: ignore[arg-type]
    timings["mae_s"] = time.perf_counter() - t
    t = time.perf_counter()
    report = finetune(cfgs["cls"], out / "cls", out / "mae", "mae", prepared=prepared, quiet=quiet)  # type: ignore[arg-type]
    timings["cls_s"] = time.perf_counter() - t
    # The same classifier trained from scratch on the same split: shows what pretraining adds
    # (or, when a short run's codex collapses, costs) on this corpus.
    t = time.perf_counter()
    # Same channels as the pretrained path (finetune keeps a channel choice found in its run dir).
    (out / "cls-scratch").mkdir()
    write_channels(
        out / "cls-scratch",
        read_channels(out / "cls"),
        method=f"from {out / 'cls'} (the pretrained path's channels)",
        seed=None,
    )
    scratch = finetune(
        cfgs["cls"], out / "cls-scratch", None, "scratch", prepared=prepared, quiet=quiet
    )  # type: ignore[arg-type]
    timings["cls_scratch_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    write_json(out / "timings.json", timings)
    report = dict(report)
    report["run_dir"] = str(out / "cls")
    report["timings"] = timings
    report["scratch"] = dict(scratch)
    report["pretraining"] = pretraining_health(out / "vqvae", out / "mae")
    report["table"] = (
        "Du-IN (mae): VQ-VAE -> MAE -> classifier\n"
        + format_table(report)
        + f"\n\nDu-IN (scratch): classifier only, same split ({out / 'cls-scratch'})\n"
        + format_table(scratch)
        + "\n\n"
        + format_pretraining(report["pretraining"])
    )
    return report
