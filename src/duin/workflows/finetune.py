"""Stage 3: fine-tune and test a word classifier per subject and seed; the one fine-tuning path.

Du-IN variants (``scratch``, ``vqvae``, ``vqvae+vq``, ``mae``, ``poms``) and the benchmark's
baselines all go through :func:`finetune`; they differ only in the ``build_model`` hook that
makes the classifier of one subject (:func:`duin_classifier` by default). ``poms`` starts every subject
from a multi-subject MAE run (``RUN/pooled/checkpoints/last``, :mod:`duin.workflows.pooled`):
the subject's own subject-layer row, the shared tokenizer and encoder.

Reads the data (:mod:`duin.workflows.prepare`) and, to initialise from pretraining, a
pretraining run's ``channels.json`` and ``sub-XX/checkpoints/last``. Writes a run directory:
``config.yaml``, ``channels.json``, ``data.json``, one trainer run per subject and seed in
``sub-XX/seed-N/`` with ``result.json`` (test metrics at the selected epoch),
``trial_data.json`` (what ``duin predict`` needs) and ``confusion.png``, and the report
(``report.json``/``report.md``, :func:`duin.workflows.evaluate.evaluate`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from duin.training.distributed import barrier, is_main
from duin.training.stages import (
    ClsRunConfig,
    build_classifier,
    evaluate_classifier,
    load_weights,
    select_epoch,
    train_classifier,
    write_json,
)
from duin.workflows.evaluate import evaluate
from duin.workflows.pooled import subject_models
from duin.workflows.prepare import (
    PreparedData,
    SubjectTrials,
    check_pretraining_split,
    prepare_data,
    resolve_channels,
    subject_trials,
)
from duin.workflows.rundir import (
    CHANNELS_FILE,
    RESULT_FILE,
    TRIAL_DATA_FILE,
    cache_dir,
    check_kind,
    checkpoint_dir,
    is_pooled_run,
    pooled_checkpoint_dir,
    read_channels,
    start_run,
    write_channels,
    write_data_info,
)

__all__ = [
    "BuildClassifier",
    "BuiltClassifier",
    "display_label",
    "duin_classifier",
    "finetune",
    "finetune_subject",
]

logger = logging.getLogger(__name__)


@dataclass
class BuiltClassifier:
    """What a ``build_model`` hook returns for one subject and seed.

    Parameters
    ----------
    model : nn.Module
        The classifier to fine-tune (``model(x, subject, labels=...)`` -> ``logits``, ``loss``).
    config : ClsRunConfig
        The run configuration the trainer uses and records (its ``optim``/``trainer``
        sections drive the run; ``model`` describes the classifier).
    result : dict
        Extra fields for ``result.json`` (e.g. whether a baseline was pretrained).
    """

    model: nn.Module
    config: ClsRunConfig
    result: dict[str, Any] = field(default_factory=dict)


#: ``build_model(trials, seed)``: the classifier of one subject and seed. It runs right after
#: ``torch.manual_seed(seed)``; a hook that draws random numbers first (e.g. pretraining a
#: backbone) re-seeds before creating the classifier.
BuildClassifier = Callable[[SubjectTrials, int], BuiltClassifier]


def duin_classifier(cfg: ClsRunConfig, variant: str, init_model: Any = None) -> BuildClassifier:
    """The ``build_model`` hook of the Du-IN classifier (one of the ``cls`` variants).

    Parameters
    ----------
    cfg : ClsRunConfig
        Stage configuration (its ``model`` section; ``n_classes`` follows the trials).
    variant : str
        ``scratch``, ``vqvae``, ``vqvae+vq``, ``mae`` or ``poms``.
    init_model : nn.Module, optional
        The pretrained model the variant initialises from.

    Returns
    -------
    BuildClassifier
        The hook.
    """

    def build(trials: SubjectTrials, seed: int) -> BuiltClassifier:
        model_cfg = dataclasses.replace(cfg.model, n_classes=len(trials.labels))
        run_cfg = dataclasses.replace(cfg, seed=seed, seeds=None, variant=variant)
        run_cfg = dataclasses.replace(run_cfg, model=model_cfg)
        model = build_classifier(
            model_cfg, n_channels=len(trials.channels), variant=variant, init=init_model
        )
        return BuiltClassifier(model, run_cfg)

    return build


#: Checkpoint kinds each pretrained variant initialises from.
_VARIANT_KINDS: dict[str, tuple[str, ...]] = {
    "mae": ("duin_mae",),
    "vqvae": ("duin_vqvae",),
    "vqvae+vq": ("duin_vqvae",),
    "poms": ("duin_mae",),
}


def _init_run_dir(init_run: Path) -> Path:
    """The run directory that holds an init checkpoint's metadata (split, channels).

    A single checkpoint directory (``RUN/sub-XX/checkpoints/last``) belongs to ``RUN``; a run
    directory is its own.
    """
    if (init_run / "model.safetensors").is_file():
        return init_run.parent.parent.parent
    return init_run


def finetune(
    cfg: ClsRunConfig,
    out: str | Path,
    init_ckpt: str | Path | None = None,
    variant: str | None = None,
    *,
    build_model: BuildClassifier | None = None,
    prepared: PreparedData | None = None,
    cache: str | Path | None = None,
    resume: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """Stage 3: fine-tune and test a classifier per subject and seed, then write the report.

    Parameters
    ----------
    cfg : ClsRunConfig
        Stage configuration (``seeds`` lists the seeds; ``variant`` the initialisation).
    out : str or pathlib.Path
        Run directory.
    init_ckpt : str or pathlib.Path, optional
        A pretraining run directory (``sub-XX/checkpoints/last`` per subject, channels from its
        ``channels.json``), a multi-subject MAE run (``pooled/checkpoints/last``; variant
        ``poms``) or one checkpoint directory (single subject).
    variant : str, optional
        Overrides ``cfg.variant``; with ``init_ckpt`` and variant ``scratch`` in the config,
        the variant follows the checkpoint (``mae`` or ``vqvae``). With ``build_model``, the
        name recorded for the model (e.g. a baseline's).
    build_model : BuildClassifier, optional
        Makes each subject's classifier (default: :func:`duin_classifier` of ``cfg``, the
        variant and, with ``init_ckpt``, the subject's pretrained model). Not combined with
        ``init_ckpt``.
    prepared, cache, resume, quiet
        See :func:`duin.workflows.pretrain.pretrain_vqvae`.

    Returns
    -------
    dict
        The report (also written as ``report.json``/``report.md``).
    """
    from duin.models.registry import load_model

    out = Path(out)
    init_run = Path(init_ckpt) if init_ckpt is not None else None
    if build_model is not None and init_run is not None:
        raise ValueError("finetune: give build_model or init_ckpt, not both")
    if init_run is None:
        variant = variant or cfg.variant
        if variant != "scratch" and build_model is None:
            raise ValueError(f"variant {variant!r} needs an init checkpoint (--init RUN_DIR)")
    else:  # check the hand-off before any data work
        if not init_run.exists():
            raise FileNotFoundError(f"init checkpoint not found: {init_run}")
        pooled = is_pooled_run(init_run)
        if (init_run / "model.safetensors").is_file():
            ckpts = [init_run]
        elif pooled:
            ckpts = [pooled_checkpoint_dir(init_run)]
            variant = variant or "poms"
        else:
            wanted = cfg.data.subjects or sorted(read_channels(init_run))
            ckpts = [checkpoint_dir(init_run, str(s)) for s in wanted]
        kinds = {json.loads((c / "config.json").read_text()).get("name") for c in ckpts}
        if variant is None:
            # the configured variant when it fits the checkpoint, else the checkpoint's kind
            fits = {k: _VARIANT_KINDS.get(cfg.variant, ()) for k in kinds}
            if all(k in v for k, v in fits.items()):
                variant = cfg.variant
            elif len(kinds) == 1 and kinds <= {"duin_mae", "duin_vqvae"}:
                variant = "mae" if kinds == {"duin_mae"} else "vqvae"
        if variant is None or variant not in _VARIANT_KINDS:
            raise ValueError(
                f"cannot initialise a classifier from {init_run} (checkpoints {sorted(map(str, kinds))}); "
                f"variant must be one of {', '.join(_VARIANT_KINDS)}"
            )
        if pooled != (variant == "poms"):
            raise ValueError(
                f"variant {variant!r} cannot start from {init_run}: variant poms needs a "
                "multi-subject MAE run ('duin pretrain-mae --subjects ...') and other variants "
                "a per-subject run"
            )
        for c in ckpts:
            check_kind(c, _VARIANT_KINDS[variant], f"variant {variant}")
        check_pretraining_split(_init_run_dir(init_run), cfg.data, cfg.run_seeds, cfg.protocol)
    start_run(out, cfg, resume)
    prepared = prepared or prepare_data(cfg.data, cache_dir(out, cache), quiet=quiet)
    if init_run is not None and (init_run / "model.safetensors").is_file():
        if len(prepared.subjects) != 1:
            raise ValueError("a single checkpoint directory can only initialise one subject")
        meta_dir = _init_run_dir(init_run)
        channels = read_channels(meta_dir) if (meta_dir / CHANNELS_FILE).is_file() else None
        if channels is None:
            raise FileNotFoundError(f"no {CHANNELS_FILE} above {init_run}")
    elif init_run is not None:
        channels = read_channels(init_run)
    else:
        channels = resolve_channels(
            prepared, cfg.data, cfg, out, seed=cfg.run_seeds[0], quiet=quiet
        )
    if init_run is not None:
        write_channels(
            out, {s: channels[s] for s in prepared.subjects}, method=f"from {init_run}", seed=None
        )
    # poms: every subject's cut of the one pooled MAE (loaded once)
    poms_inits = subject_models(init_run, prepared.subjects) if variant == "poms" else {}
    results = []
    for subject in prepared.subjects:
        if subject not in channels:
            raise ValueError(f"no channel selection for subject {subject!r} (from {init_run})")
        init_model = None
        if subject in poms_inits:
            init_model = poms_inits[subject]
        elif init_run is not None:
            init_model = load_model(checkpoint_dir(init_run, subject))
        build = build_model or duin_classifier(cfg, variant, init_model)
        for seed in cfg.run_seeds:
            results.append(
                finetune_subject(
                    cfg,
                    prepared,
                    subject,
                    seed,
                    channels[subject],
                    out,
                    build_model=build,
                    variant=variant,
                    resume=resume,
                    quiet=quiet,
                )
            )
    write_data_info(
        out,
        prepared,
        {
            "stage": "cls",
            "init": None if init_run is None else str(init_run),
            "variant": variant,
            "seeds": cfg.run_seeds,
        },
    )
    report = evaluate(out) if is_main() else None
    barrier()
    return report if report is not None else json.loads((out / "report.json").read_text())


def finetune_subject(
    cfg: ClsRunConfig,
    prepared: PreparedData,
    subject: str,
    seed: int,
    channels: list[str],
    out: Path,
    *,
    build_model: BuildClassifier,
    variant: str,
    resume: bool,
    quiet: bool,
) -> dict[str, Any]:
    """Fine-tune one subject's classifier with one seed, test it once, write its result.

    Parameters
    ----------
    cfg : ClsRunConfig
        Stage configuration (data, protocol, epoch selection rule).
    prepared : PreparedData
        The data.
    subject : str
        Subject id.
    seed : int
        Seed of the split, initialisation, data order and augmentation.
    channels : list of str
        Input channels, in order.
    out : pathlib.Path
        Run directory (this run goes to ``out/sub-XX/seed-N``).
    build_model : BuildClassifier
        Makes the classifier and its run configuration.
    variant : str
        Name recorded in ``result.json`` (a Du-IN variant or a baseline).
    resume, quiet : bool
        Continue an interrupted run (a finished one is read back); hide progress bars.

    Returns
    -------
    dict
        The contents of ``result.json``.
    """
    run_dir = out / f"sub-{subject}" / f"seed-{seed}"
    result_path = run_dir / RESULT_FILE
    if resume and result_path.is_file():
        return json.loads(result_path.read_text())
    st = subject_trials(
        prepared,
        subject,
        cfg.data,
        n_times=cfg.model.n_times,
        seed=seed,
        protocol=cfg.protocol,
        channels=channels,
    )
    torch.manual_seed(seed)
    built = build_model(st, seed)
    model, run_cfg = built.model, built.config
    max_shift = int(round(cfg.data.shift * st.sfreq))
    train = st.dataset(prepared.index, "train", max_shift=max_shift, seed=seed)
    val = st.dataset(prepared.index, "val")
    test = st.dataset(prepared.index, "test")
    fit = train_classifier(
        run_cfg,
        model,
        train,
        val,
        run_dir,
        test_data=test if cfg.protocol == "reference" else None,
        resume=resume,
        quiet=quiet,
    )
    if not is_main():
        # Under torchrun rank 0 tests the trained model and writes the result; the other ranks
        # (same weights) wait for it and return what it wrote.
        barrier()
        return json.loads(result_path.read_text())
    choice = select_epoch(
        fit.history,
        cfg.protocol,
        metric=cfg.trainer.selection_metric,
        mode=cfg.trainer.selection_mode,
    )
    if cfg.protocol == "reference":
        ckpt = run_dir / "checkpoints" / f"epoch-{choice['epoch']:04d}"
    else:
        ckpt = fit.best_dir
        best = json.loads((ckpt / "best.json").read_text())
        choice["epoch"] = int(best["epoch"])
    load_weights(model, ckpt)
    x_test, y_test = st.arrays(prepared.index, "test")
    metrics = evaluate_classifier(model, x_test, y_test)
    confusion = metrics.pop("confusion")
    from duin.evaluation.plots import plot_confusion_matrix  # matplotlib: imported when used

    plot_confusion_matrix(
        confusion,
        run_dir / "confusion.png",
        class_names=[display_label(w) for w in st.labels],
        title=f"sub-{subject} seed {seed} ({variant}): test top-1 {100 * metrics['top1']:.1f} %",
    )
    oracle = prepared.oracle()
    result = {
        "subject": subject,
        "seed": seed,
        "variant": variant,
        "protocol": cfg.protocol,
        "metrics": {
            k: metrics[k]
            for k in ("top1", "top5", "balanced_accuracy", "cross_entropy")
            if k in metrics
        },
        "n_test_trials": metrics["n_trials"],
        "n_classes": metrics["n_classes"],
        "chance": metrics["chance"],
        "oracle_accuracy": None if oracle is None else oracle.get(subject),
        "selected_epoch": choice["epoch"],
        "selection_rule": choice["rule"],
        "checkpoint": str(ckpt.relative_to(out)),
        "split": st.split.summary(),
        "confusion": confusion,
        "labels": st.labels,
        **built.result,
    }
    if cfg.protocol == "reference":
        # keep only the selected epoch's snapshot (the others were needed for the rule)
        for snap in (run_dir / "checkpoints").glob("epoch-*"):
            if snap != ckpt:
                shutil.rmtree(snap, ignore_errors=True)
    write_json(
        run_dir / TRIAL_DATA_FILE,
        {
            "subject": subject,
            "channels": channels,
            "labels": st.labels,
            "tmin": st.tmin,
            "tmax": st.tmax,
            "sfreq": st.sfreq,
            "n_times": st.n_times,
            "preprocess": None if prepared.preprocess is None else prepared.preprocess.to_dict(),
            "source_kind": prepared.loaded.kind,
            "normalization": {
                "source": st.stats.source,
                "mean": st.stats.mean[subject][st.rows].tolist(),
                "std": st.stats.std[subject][st.rows].tolist(),
            },
        },
    )
    write_json(result_path, result)
    logger.info(
        "sub-%s seed %d (%s): test top-1 %.1f %% (chance %.1f %%) at epoch %d",
        subject,
        seed,
        variant,
        100 * result["metrics"]["top1"],
        100 * result["chance"],
        choice["epoch"],
    )
    barrier()  # the other ranks wait in the branch above
    return result


def display_label(word: str) -> str:
    """English gloss of one of the paper's words (plot fonts often lack CJK glyphs).

    Parameters
    ----------
    word : str
        A class label.

    Returns
    -------
    str
        Its gloss, or the word itself when it is not one of the paper's.
    """
    from duin.data.words import GLOSSES

    return GLOSSES.get(word, word)
