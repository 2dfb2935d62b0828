"""Benchmark cells and the benchmark runner.

A cell is one (model, subject, seed): Du-IN variants and baselines are fine-tuned through the
one path, :func:`duin.workflows.finetune.finetune` (baselines with their own ``build_model``
hook). Per (subject, seed), the channel ranking, the VQ-VAE, the MAE and the baselines'
pretraining are computed once and shared between cells.

Reads the data and a :class:`~duin.workflows.bench.plan.BenchPlan`. Writes under ``OUT``:
``bench_config.yaml``, ``cache/``, ``shared/sub-XX/seed-N/`` (content-keyed pretraining runs and
channel rankings), ``[<entry>/]cells/<model>/sub-XX_seed-N/`` (``cell.json`` and a fine-tuning
run directory) and the results (:mod:`duin.workflows.bench.report`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from duin.config import ConfigError, OptimConfig, config_to_yaml, from_dict, to_dict
from duin.models.baselines import BASELINES, transfer_backbone
from duin.models.registry import create_model, get_model_class, load_model, save_model
from duin.training.stages import load_weights
from duin.training.trainer import Trainer
from duin.utils.io import atomic_write_json, atomic_write_text
from duin.workflows.bench.plan import (
    DUIN_MODELS,
    BaselineSettings,
    BenchEntry,
    BenchPlan,
    content_key,
    deep_merge,
    load_bench,
)
from duin.workflows.bench.report import collect_entry, write_entry_outputs, write_grid
from duin.workflows.finetune import BuiltClassifier, finetune
from duin.workflows.pooled import pretrain_mae_pooled, pretrain_vqvae_pooled
from duin.workflows.prepare import SubjectTrials, prepare_data, pretrain_sets, select_channels
from duin.workflows.pretrain import pretrain_mae, pretrain_vqvae

__all__ = ["run_bench"]

logger = logging.getLogger(__name__)


def _subject_view(prepared: Any, *subjects: str) -> Any:
    """The prepared data restricted to some subjects (same cache and index)."""
    loaded = dataclasses.replace(
        prepared.loaded, recordings={s: prepared.loaded.recordings[s] for s in subjects}
    )
    return dataclasses.replace(prepared, loaded=loaded)


def _with_subject(cfg: Any, seed: int, subject: str, channels: list[str], **extra: Any) -> Any:
    data = dataclasses.replace(cfg.data, subjects=[subject], channels={subject: list(channels)})
    return dataclasses.replace(cfg, seed=seed, data=data, **extra)


def _done(path: Path) -> bool:
    return path.is_file()


@dataclass
class _Cell:
    """One (model, subject, seed) of an entry."""

    model: str
    subject: str
    seed: int
    dir: Path

    @property
    def label(self) -> str:
        return f"{self.model} sub-{self.subject} seed {self.seed}"


class _Context:
    """Lazily computed artefacts of one (entry, subject, seed): channels and pretraining."""

    def __init__(
        self,
        entry: BenchEntry,
        prepared: Any,
        subject: str,
        seed: int,
        shared: Path,
        quiet: bool,
        pooled: _Pooled | None = None,
    ) -> None:
        self.entry = entry
        self.pooled = pooled
        self.view = _subject_view(prepared, subject)
        self.subject = subject
        self.seed = seed
        self.shared = shared / f"sub-{subject}" / f"seed-{seed}"
        self.quiet = quiet
        self._channels: tuple[list[str], str] | None = None
        self._vqvae: Path | None = None
        self._mae: Path | None = None

    # ---------------------------------------------------------------- channels
    def channels(self) -> tuple[list[str], str]:
        """(channels, content key): ranked on this split's training trials, cached."""
        if self._channels is not None:
            return self._channels
        cls = self.entry.stages["cls"]
        data = cls.data
        all_channels = self.view.ch_names(self.subject)
        if data.channels is not None:
            if self.subject not in data.channels:
                raise ValueError(f"data.channels has no list for subject {self.subject!r}")
            chosen = list(data.channels[self.subject])
            self._channels = (chosen, content_key({"given": chosen}))
            return self._channels
        k = data.n_channels
        if k is None or len(all_channels) <= k:
            self._channels = (list(all_channels), content_key({"all": all_channels}))
            return self._channels
        selection = dataclasses.replace(cls, seed=self.seed, seeds=None, variant="scratch")
        key = content_key({"selection": selection, "subject": self.subject, "k": k})
        out = self.shared / f"channels-{key}"
        marker = out / "channels.json"
        if not _done(marker):
            if out.exists():  # an interrupted ranking: the ranking run is redone from scratch
                shutil.rmtree(out)
            logger.info("bench: ranking channels of sub-%s (seed %d)", self.subject, self.seed)
            select_channels(self.view, selection, out, seed=self.seed, k=k, quiet=self.quiet)
        chosen = json.loads(marker.read_text())["channels"][self.subject]
        self._channels = (list(chosen), key)
        return self._channels

    # ---------------------------------------------------------------- Du-IN pretraining
    def _vq_cfg(self) -> Any:
        chans, _ = self.channels()
        return _with_subject(self.entry.stages["vqvae"], self.seed, self.subject, chans)

    def vqvae(self) -> Path:
        """The shared VQ-VAE run of this subject and seed (trained on first use)."""
        if self._vqvae is None:
            cfg = self._vq_cfg()
            out = self.shared / f"vqvae-{content_key(cfg)}"
            if not _done(out / "data.json"):
                logger.info("bench: VQ-VAE sub-%s seed %d -> %s", self.subject, self.seed, out)
                pretrain_vqvae(cfg, out, prepared=self.view, resume=True, quiet=self.quiet)
            self._vqvae = out
        return self._vqvae

    def mae(self) -> Path:
        """The shared MAE run (on the shared VQ-VAE) of this subject and seed."""
        if self._mae is None:
            vq = self.vqvae()
            chans, _ = self.channels()
            cfg = _with_subject(self.entry.stages["mae"], self.seed, self.subject, chans)
            out = self.shared / f"mae-{content_key({'mae': cfg, 'vqvae': vq.name})}"
            if not _done(out / "data.json"):
                logger.info("bench: MAE sub-%s seed %d -> %s", self.subject, self.seed, out)
                pretrain_mae(
                    cfg, out, vq, prepared=self.view, resume=True, quiet=self.quiet, force=True
                )
            self._mae = out
        return self._mae

    def upstream(self, model: str) -> dict[str, Any]:
        """What a cell's result depends on besides its own recipe (for the cell key)."""
        chans, key = self.channels()
        deps: dict[str, Any] = {"channels": key}
        variant = DUIN_MODELS.get(model)
        if variant in ("vqvae", "vqvae+vq"):
            deps["vqvae"] = content_key(self._vq_cfg())
        elif variant == "mae":
            cfg = _with_subject(self.entry.stages["mae"], self.seed, self.subject, chans)
            deps["vqvae"] = content_key(self._vq_cfg())
            deps["mae"] = content_key(cfg)
        elif variant == "poms":
            deps["pooled"] = self._pooled().key(self.seed)
        return deps

    def _pooled(self) -> _Pooled:
        if self.pooled is None:
            raise ValueError("duin_poms needs the benchmark's pooled pretraining (run_bench)")
        return self.pooled

    def positions(self) -> list[list[float]]:
        """Electrode coordinates (metres) of this subject's channels, in channel order."""
        chans, _ = self.channels()
        _, coords = self.view.channel_info(self.subject)
        missing = [c for c in chans if c not in coords]
        if missing:
            raise ValueError(
                f"labram_popt needs electrode coordinates: sub-{self.subject} of "
                f"{self.view.loaded.source or 'the simulated corpus'} has none for {missing[:3]}"
                f"{'...' if len(missing) > 3 else ''} (BIDS electrodes.tsv gives them)"
            )
        return [list(coords[c]) for c in chans]


class _Pooled:
    """The multi-subject VQ-VAE and MAE of ``duin_poms``, one pair per seed (lazily trained)."""

    def __init__(
        self, entry: BenchEntry, prepared: Any, contexts: Mapping[tuple[str, int], _Context]
    ) -> None:
        self.entry = entry
        self.contexts = contexts
        self.subjects = sorted({s for s, _ in contexts})
        self.view = _subject_view(prepared, *self.subjects)
        self._runs: dict[int, Path] = {}

    def _configs(self, seed: int) -> tuple[Any, Any, str]:
        """(VQ-VAE config, MAE config, content key) of this seed's pooled pretraining."""
        chosen = {s: self.contexts[(s, seed)].channels() for s in self.subjects}
        channels = {s: list(c) for s, (c, _) in chosen.items()}

        def pooled(stage: str) -> Any:
            cfg = self.entry.stages[stage]
            data = dataclasses.replace(cfg.data, subjects=self.subjects, channels=channels)
            return dataclasses.replace(cfg, seed=seed, data=data)

        vq, mae = pooled("vqvae"), pooled("mae")
        key = content_key({"vqvae": vq, "mae": mae, "channels": [k for _, k in chosen.values()]})
        return vq, mae, key

    def key(self, seed: int) -> str:
        """Content key of this seed's pooled pretraining (for the cell keys)."""
        return self._configs(seed)[2]

    def mae(self, seed: int) -> Path:
        """The pooled MAE run of ``seed`` (VQ-VAE and MAE trained on first use)."""
        if seed not in self._runs:
            vq_cfg, mae_cfg, key = self._configs(seed)
            ctx = self.contexts[(self.subjects[0], seed)]
            root = ctx.shared.parent.parent / "pooled" / f"seed-{seed}"
            vq, mae = root / f"vqvae-{key}", root / f"mae-{key}"
            quiet = ctx.quiet
            if not _done(vq / "data.json"):
                logger.info(
                    "bench: pooled VQ-VAE seed %d (%d subjects) -> %s", seed, len(self.subjects), vq
                )
                pretrain_vqvae_pooled(vq_cfg, vq, prepared=self.view, resume=True, quiet=quiet)
            if not _done(mae / "data.json"):
                logger.info("bench: pooled MAE seed %d -> %s", seed, mae)
                pretrain_mae_pooled(
                    mae_cfg, mae, vq, prepared=self.view, resume=True, quiet=quiet, force=True
                )
            self._runs[seed] = mae
        return self._runs[seed]


# ---------------------------------------------------------------------------------------------
# Cells
# ---------------------------------------------------------------------------------------------


def _cls_config(ctx: _Context, variant: str) -> Any:
    chans, _ = ctx.channels()
    return _with_subject(
        ctx.entry.stages["cls"], ctx.seed, ctx.subject, chans, seeds=[ctx.seed], variant=variant
    )


def _run_duin_cell(ctx: _Context, cell: _Cell) -> None:
    variant = DUIN_MODELS[cell.model]
    init = None
    if variant in ("vqvae", "vqvae+vq"):
        init = ctx.vqvae()
    elif variant == "mae":
        init = ctx.mae()
    elif variant == "poms":
        init = ctx._pooled().mae(ctx.seed)
    cfg = _cls_config(ctx, variant)
    finetune(cfg, cell.dir, init, variant, prepared=ctx.view, resume=True, quiet=ctx.quiet)  # type: ignore[arg-type]


def _baseline_config(cfg_class: type, size: str, fixed: Mapping[str, Any], extra: Mapping) -> Any:
    base = cfg_class.quick() if size == "quick" else cfg_class()
    data = deep_merge(dataclasses.asdict(base), dict(extra))
    data.update(fixed)
    try:
        return cfg_class.from_dict(data)
    except ValueError as exc:
        raise ConfigError(f"{cfg_class.__name__}: {exc}") from None


def _optim(base: Any, extra: Mapping[str, Any], where: str) -> Any:

    if not extra:
        return base
    return from_dict(OptimConfig, deep_merge(to_dict(base), extra), path=where)


def _baseline_plan(ctx: _Context, name: str, sfreq: float, n_classes: int) -> dict[str, Any]:
    """Configs of a baseline cell: classifier, pretraining stages, optimisers."""

    info = BASELINES[name]
    settings = ctx.entry.settings
    extra = settings.baselines.get(name, BaselineSettings())
    chans, _ = ctx.channels()
    cls = ctx.entry.stages["cls"]
    fixed: dict[str, Any] = {"n_channels": len(chans), "n_subjects": 1, "sfreq": float(sfreq)}
    model_fixed = {**fixed, "n_times": cls.model.n_times, "n_classes": n_classes}
    if "channel_positions" in {f.name for f in dataclasses.fields(info.config_class)}:
        model_fixed["channel_positions"] = ctx.positions()  # LaBraM-PopT
    model_cfg = _baseline_config(
        info.config_class, settings.baseline_size, model_fixed, extra.model
    )
    pretrained = info.pretrained if extra.pretrained is None else extra.pretrained
    stages: list[tuple[str, Any]] = []
    if pretrained and info.pretrain:
        for stage in info.pretrain:
            cfg_class = get_model_class(stage)[1]
            stage_fixed = dict(fixed)
            if stage == "labram_pretrain":  # the codex size follows the tokenizer
                stage_fixed["n_codes"] = stages[-1][1].quantizer.n_codes
            # The classifier's architecture overrides also shape the pretrained backbone (so it
            # transfers); the window length and classes are the classifier's own.
            names = {f.name for f in dataclasses.fields(cfg_class)}
            shared = {
                k: v
                for k, v in extra.model.items()
                if k in names and k not in ("n_times", "n_classes")
            }
            overrides = deep_merge(shared, extra.pretrain.get(stage, {}))
            stages.append(
                (stage, _baseline_config(cfg_class, settings.baseline_size, stage_fixed, overrides))
            )
    return {
        "model": model_cfg,
        "pretrain": stages,
        "optim": _optim(cls.optim, extra.optim, f"bench.baselines.{name}.optim"),
        "pretrain_optim": _optim(
            ctx.entry.stages["mae"].optim,
            extra.pretrain_optim,
            f"bench.baselines.{name}.pretrain_optim",
        ),
    }


def _pretrain_baseline(ctx: _Context, name: str, plan: Mapping[str, Any], split: Any) -> Any:
    """Train (or reuse) the baseline's pretraining stages; return the last pretrained model."""

    mae = ctx.entry.stages["mae"]
    chans, chan_key = ctx.channels()
    key = content_key(
        {
            "stages": [(s, c) for s, c in plan["pretrain"]],
            "optim": plan["pretrain_optim"],
            "trainer": mae.trainer,
            "data": mae.data,
            "channels": chan_key,
        }
    )
    root = ctx.shared / f"{name}-pretrain-{key}"
    previous = None
    for stage, cfg in plan["pretrain"]:
        run_dir = root / stage
        last = run_dir / "checkpoints" / "last"
        if not _done(run_dir / "done.json"):
            train, val, info = pretrain_sets(
                ctx.view,
                ctx.subject,
                mae.data,
                n_times=cfg.n_times,
                seed=ctx.seed,
                channels=chans,
                split=split,
            )
            torch.manual_seed(ctx.seed)
            model = create_model(stage, cfg)
            if previous is not None:
                model.set_target_tokenizer(previous)
            run_cfg = dataclasses.replace(
                mae, seed=ctx.seed, model=cfg, optim=plan["pretrain_optim"]
            )
            logger.info("bench: %s sub-%s seed %d", stage, ctx.subject, ctx.seed)
            Trainer(
                model,
                train,
                val,
                run_dir=run_dir,
                optim=plan["pretrain_optim"],
                trainer=mae.trainer,
                seed=ctx.seed,
                config=run_cfg,
                save_model_fn=save_model,
                load_weights_fn=load_weights,
                resume=True,
                quiet=ctx.quiet,
            ).fit()
            atomic_write_json(run_dir / "done.json", {"stage": stage, "pretraining": info})
        model = load_model(last)
        if previous is not None:
            model.set_target_tokenizer(previous)
        previous = model
    return previous


def _run_baseline_cell(ctx: _Context, cell: _Cell) -> None:
    """Fine-tune one baseline on the shared split and channels (the one fine-tuning path)."""

    def build(trials: SubjectTrials, seed: int) -> BuiltClassifier:
        plan = _baseline_plan(ctx, cell.model, trials.sfreq, len(trials.labels))
        pretrained = None
        if plan["pretrain"]:
            pretrained = _pretrain_baseline(ctx, cell.model, plan, trials.split)
        torch.manual_seed(seed)  # pretraining drew random numbers: the classifier's own seed
        model = create_model(cell.model, plan["model"])
        if pretrained is not None:
            transfer_backbone(pretrained, model)
        run_cfg = dataclasses.replace(cls, model=plan["model"], optim=plan["optim"])
        return BuiltClassifier(model, run_cfg, {"pretrained": pretrained is not None})

    cls = _cls_config(ctx, "scratch")
    finetune(
        cls,
        cell.dir,
        None,
        cell.model,
        build_model=build,
        prepared=ctx.view,
        resume=True,
        quiet=ctx.quiet,
    )


def _count_parameters(cell_dir: Path) -> int | None:

    for result in sorted(cell_dir.glob("sub-*/seed-*/result.json")):
        ckpt = cell_dir / json.loads(result.read_text())["checkpoint"]
        try:
            model = load_model(ckpt)
        except (OSError, ValueError):  # informative only
            return None
        return int(sum(p.numel() for p in model.parameters()))
    return None


def _run_cell(ctx: _Context, cell: _Cell, cell_key: str) -> str:
    """Run one cell unless finished; return ``"done"``, ``"ran"``."""
    meta_path = cell.dir / "cell.json"
    if (cell.dir / "report.json").is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("key") != cell_key:
            raise ValueError(
                f"{cell.dir}: this finished cell was run with another configuration "
                f"(key {meta.get('key')} != {cell_key}); use another --out or delete the cell"
            )
        return "done"
    cell.dir.mkdir(parents=True, exist_ok=True)
    meta = {"model": cell.model, "subject": cell.subject, "seed": cell.seed, "key": cell_key}
    previous = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if previous.get("key") not in (None, cell_key):
        raise ValueError(
            f"{cell.dir}: an unfinished cell with another configuration is there; use another "
            "--out or delete the cell"
        )
    atomic_write_json(meta_path, {**meta, "status": "running"})
    t0 = time.perf_counter()
    if cell.model in DUIN_MODELS:
        _run_duin_cell(ctx, cell)
    else:
        _run_baseline_cell(ctx, cell)
    wall = time.perf_counter() - t0 + float(previous.get("wall_s", 0.0))
    atomic_write_json(
        meta_path,
        {
            **meta,
            "status": "done",
            "wall_s": round(wall, 1),
            "n_parameters": _count_parameters(cell.dir),
        },
    )
    return "ran"


def _cell_key(ctx: _Context, cell: _Cell) -> str:

    payload: dict[str, Any] = {
        "model": cell.model,
        "cls": _cls_config(ctx, DUIN_MODELS.get(cell.model, "scratch")),
        "upstream": ctx.upstream(cell.model),
    }
    if cell.model in BASELINES:
        settings = ctx.entry.settings
        mae = ctx.entry.stages["mae"]
        payload["baseline"] = {
            "size": settings.baseline_size,
            "settings": settings.baselines.get(cell.model, BaselineSettings()),
            # baselines pretrain with the mae optimiser/trainer/data, not the MAE model
            "pretraining": {"optim": mae.optim, "trainer": mae.trainer, "data": mae.data},
        }
    return content_key(payload)


def _check_coordinates(prepared: Any, subjects: Sequence[str]) -> None:
    """Fail before any work when a subject has no electrode coordinates (``labram_popt``)."""
    without = [s for s in subjects if not prepared.channel_info(s)[1]]
    if without:
        raise ValueError(
            f"labram_popt needs electrode coordinates, but subject(s) {without} of "
            f"{prepared.loaded.source or 'the data'} have none (BIDS electrodes.tsv, or the "
            "simulator, provide them); drop labram_popt from bench.models"
        )


def run_bench(
    config: str | Path = "bench",
    out: str | Path = "duin-bench",
    *,
    quick: bool = False,
    overrides: Sequence[str] = (),
    quiet: bool = False,
    plan: BenchPlan | None = None,
) -> dict[str, Any]:
    """Run (or resume) a benchmark and write ``bench.json``, ``bench.md`` and ``bench.png``.

    Parameters
    ----------
    config : str or pathlib.Path
        Bench file or packaged name (``bench``, ``ablations/mask_ratio``, ...).
    out : str or pathlib.Path
        Output directory (reused: finished cells are skipped, half-done ones resume).
    quick : bool
        Apply the file's ``quick`` section (CPU-sized).
    overrides : sequence of str
        ``--set KEY=VALUE`` values.
    quiet : bool
        Hide progress bars.
    plan : BenchPlan, optional
        An already loaded plan (then ``config``/``quick``/``overrides`` are ignored).

    Returns
    -------
    dict
        The top-level ``bench.json`` (one benchmark, or the grid comparison), plus
        ``"cells"``: ``{"ran": n, "done": n}``.
    """
    plan = plan or load_bench(config, overrides, quick=quick)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # The document as given plus every entry fully resolved (the recipe file may change later).
    resolved = {
        (entry.name or "bench"): {"bench": entry.settings, **entry.stages} for entry in plan.entries
    }
    atomic_write_text(
        out / "bench_config.yaml",
        config_to_yaml({"source": plan.source, "quick": plan.quick, "document": plan.document})
        + config_to_yaml({"resolved": resolved}),
    )
    prepared_by_key: dict[str, Any] = {}
    counts = {"ran": 0, "done": 0}
    results: dict[str, dict[str, Any]] = {}
    t_start = time.perf_counter()
    for entry in plan.entries:
        root = out / entry.name if entry.name else out
        data = entry.stages["cls"].data
        data_key = content_key(
            {k: getattr(data, k) for k in ("source", "subjects", "preprocess")}
            | {"simulation": data.simulation}
        )
        if data_key not in prepared_by_key:
            prepared_by_key[data_key] = prepare_data(data, out / "cache", quiet=quiet)
        prepared = prepared_by_key[data_key]
        subjects = entry.settings.subjects or prepared.subjects
        missing = sorted(set(subjects) - set(prepared.subjects))
        if missing:
            raise ValueError(
                f"bench.subjects: {missing} not in the data; available: {prepared.subjects}"
            )
        if "labram_popt" in entry.settings.models:
            _check_coordinates(prepared, subjects)
        n_cells = len(subjects) * len(entry.settings.seeds) * len(entry.settings.models)
        i = 0
        contexts = {
            (subject, seed): _Context(entry, prepared, subject, seed, out / "shared", quiet)
            for subject in subjects
            for seed in entry.settings.seeds
        }
        pooled = _Pooled(entry, prepared, contexts)
        for subject in subjects:
            for seed in entry.settings.seeds:
                ctx = contexts[(subject, seed)]
                ctx.pooled = pooled
                for model in entry.settings.models:
                    i += 1
                    cell = _Cell(
                        model, subject, seed, root / "cells" / model / f"sub-{subject}_seed-{seed}"
                    )
                    t0 = time.perf_counter()
                    status = _run_cell(ctx, cell, _cell_key(ctx, cell))
                    counts[status] += 1
                    logger.info(
                        "bench%s: cell %d/%d %s: %s (%.0f s)",
                        f" [{entry.name}]" if entry.name else "",
                        i,
                        n_cells,
                        cell.label,
                        "skipped (finished)" if status == "done" else "finished",
                        time.perf_counter() - t0,
                    )
        bench = collect_entry(entry, root, list(subjects), prepared.oracle())
        bench["quick"] = plan.quick
        bench["source"] = plan.source
        write_entry_outputs(bench, root)
        results[entry.name] = bench
    top = write_grid(plan, results, out) if plan.is_grid else results[""]
    top = dict(top)
    top["cells"] = counts
    top["wall_s"] = round(time.perf_counter() - t_start, 1)
    return top
