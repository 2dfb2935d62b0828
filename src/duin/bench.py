"""``duin bench``: every model of the paper's Table 2 on one corpus, with one protocol.

The benchmark runs the baselines (:data:`duin.models.baselines.BASELINES`; the self-supervised
ones are pretrained with their ``<name>_pretrain`` models and moved into the classifier with
:func:`~duin.models.baselines.transfer_backbone`) and the Du-IN variants ``duin_scratch``,
``duin_vqvae``, ``duin_vqvae+vq`` and ``duin_mae`` over subjects and seeds, and reports
mean ± SE across subjects (the paper's SE: population SD of the subject means / sqrt(n)) next
to chance and, on simulated data, the simulator's oracle ceiling.

Protocol (the same for every model):

- one leak-free split per (subject, seed) (:func:`duin.data.splits.split_trials`), shared by all
  models; normalisation statistics come from its training trials;
- channels: the top-``data.n_channels`` channels by contribution score, ranked once per
  (subject, seed) on that split's training trials, used by every model (paper §4.3, "selected
  according to the train set", used for all models);
- pretraining (Du-IN's VQ-VAE and MAE, the baselines' objectives) on the pretraining crops of
  :func:`duin.pipeline.prepare_data` (non-task recordings by default), once per
  (subject, seed) and configuration, cached content-keyed under ``OUT/shared`` so that grid
  entries that do not change it (e.g. the MAE mask ratio) reuse the same VQ-VAE;
- fine-tuning with the ``cls`` recipe and the one trainer, best validation epoch, test evaluated
  once.

Configuration files hold the Du-IN stage recipe (the keys of ``configs/quick.yaml``, merged over
the packaged recipe named by ``bench.recipe``) plus these top-level sections:

``bench``
    :class:`BenchSettings`: models, subjects, seeds, baseline sizes and per-baseline overrides.
``quick``
    A partial document deep-merged over the whole file by ``--quick``.
``grid``
    Optional list of named override sets (``{name: ..., set: {dotted.key: value}}``); each
    entry is a separate benchmark in ``OUT/<name>/`` and the top-level report compares them.
``extends``
    Another bench file (path or packaged name, e.g. ``bench``) this file is merged over.

Run directory::

    OUT/
      bench.json, bench.md, bench.png     results (for a grid: the comparison of the entries)
      bench_config.yaml                   the resolved document
      cache/                              preprocessed recordings (content-keyed)
      shared/sub-XX/seed-N/               channel ranking, VQ-VAE, MAE, baseline pretraining
                                          (one directory per content key)
      [<entry>/]cells/<model>/sub-XX_seed-N/   one fine-tuning run per cell: cell.json,
                                          sub-XX/seed-N/result.json, report.json/.md
      [<entry>/]bench.json, bench.md, bench.png   per grid entry

A finished cell (``report.json`` present) is skipped on a rerun; a half-done one resumes through
the trainer. A finished cell whose configuration changed is an error, never silently reused.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import math
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from duin.config import (
    STAGES,
    ConfigError,
    apply_overrides,
    builtin_config_path,
    config_to_yaml,
    from_dict,
    load_yaml,
    to_dict,
)
from duin.utils.io import atomic_write_json, atomic_write_text

__all__ = [
    "DUIN_MODELS",
    "PAPER_TABLE2",
    "BaselineSettings",
    "BenchEntry",
    "BenchPlan",
    "BenchSettings",
    "bench_cmd",
    "load_bench",
    "model_names",
    "register_bench",
    "resolve_bench_path",
    "run_bench",
]

logger = logging.getLogger(__name__)

#: Du-IN variants of Table 2: bench model name -> ``cls.variant``.
DUIN_MODELS: dict[str, str] = {
    "duin_scratch": "scratch",
    "duin_vqvae": "vqvae",
    "duin_vqvae+vq": "vqvae+vq",
    "duin_mae": "mae",
}

#: Table 2 of the paper (top-1 %, mean ± SE over 12 subjects, single-subject pretraining).
PAPER_TABLE2: dict[str, tuple[float, float]] = {
    "tstcc": (24.85, 4.42),
    "cnn_bigru": (32.04, 5.45),
    "eeg_conformer": (45.82, 4.66),
    "neurobert": (49.51, 4.43),
    "dewave": (32.43, 4.48),
    "brainbert": (6.72, 1.59),
    "brant": (11.16, 3.56),
    "labram": (11.53, 2.63),
    "duin_scratch": (56.29, 5.20),
    "duin_vqvae+vq": (44.17, 4.04),
    "duin_vqvae": (58.24, 4.83),
    "duin_mae": (62.70, 4.69),
}

_RESERVED = ("bench", "quick", "grid", "extends")
_PACKAGED = Path(__file__).resolve().parent / "configs"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=-]*$")


def model_names() -> list[str]:
    """Every model the benchmark can run: the baselines, then the Du-IN variants.

    Returns
    -------
    list of str
        Valid entries of ``bench.models``.
    """
    from duin.models.baselines import BASELINES

    return [*BASELINES, *DUIN_MODELS]


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------


@dataclass
class BaselineSettings:
    """Per-baseline overrides (``bench.baselines.<name>``).

    Parameters
    ----------
    model : dict
        Classifier config fields (over the full or ``quick()`` config of the baseline).
        ``n_channels``, ``n_times``, ``sfreq``, ``n_classes`` come from the data.
    pretrain : dict
        Pretraining stage name (e.g. ``labram_tokenizer``) -> config fields.
    optim : dict
        Fields of the ``cls`` optimiser for this baseline's fine-tuning.
    pretrain_optim : dict
        Fields of the ``mae`` optimiser for this baseline's pretraining.
    pretrained : bool or None
        ``None``: pretrain when the paper does; ``False``: train from scratch.
    """

    model: dict[str, Any] = field(default_factory=dict)
    pretrain: dict[str, dict[str, Any]] = field(default_factory=dict)
    optim: dict[str, Any] = field(default_factory=dict)
    pretrain_optim: dict[str, Any] = field(default_factory=dict)
    pretrained: bool | None = None


@dataclass
class BenchSettings:
    """The ``bench`` section of a benchmark file.

    Parameters
    ----------
    name : str
        Title of the report.
    recipe : str
        Du-IN stage recipe underneath the file (packaged ``quick``/``paper`` or a YAML path).
    models : list of str
        Models to run, in report order (see :func:`model_names`).
    subjects : list of str or None
        Subjects (default: every subject of the data).
    seeds : list of int
        Seeds per subject (each: split, channel ranking, pretraining, init, order).
    baseline_size : {"full", "quick"}
        Baseline configs: the paper's sizes or their ``quick()`` CPU variants.
    baselines : dict
        Per-baseline :class:`BaselineSettings`.
    """

    name: str = "duin bench"
    recipe: str = "quick"
    models: list[str] = field(default_factory=lambda: model_names())
    subjects: list[str] | None = None
    seeds: list[int] = field(default_factory=lambda: [42])
    baseline_size: Literal["full", "quick"] = "full"
    baselines: dict[str, BaselineSettings] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise ValueError naming the first invalid value (with the valid choices)."""
        valid = model_names()
        if not self.models:
            raise ValueError(f"models must not be empty; valid models: {', '.join(valid)}")
        bad = [m for m in self.models if m not in valid]
        if bad:
            raise ValueError(f"unknown model(s) {bad} in models; valid models: {', '.join(valid)}")
        if len(set(self.models)) != len(self.models):
            raise ValueError(f"models lists a model twice: {self.models}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be a non-empty list of distinct ints, got {self.seeds}")
        if any(s < 0 for s in self.seeds):
            raise ValueError(f"seeds must be >= 0, got {self.seeds}")
        from duin.models.baselines import BASELINES

        bad = [b for b in self.baselines if b not in BASELINES]
        if bad:
            raise ValueError(
                f"unknown baseline(s) {bad} under baselines; valid: {', '.join(BASELINES)}"
            )
        for name, extra in self.baselines.items():
            allowed = BASELINES[name].pretrain
            wrong = [s for s in extra.pretrain if s not in allowed]
            if wrong:
                raise ValueError(
                    f"baselines.{name}.pretrain: unknown stage(s) {wrong}; "
                    f"valid: {', '.join(allowed) or 'none (not pretrained)'}"
                )


@dataclass
class BenchEntry:
    """One benchmark of a plan (the whole file, or one grid entry).

    Parameters
    ----------
    name : str
        Grid entry name (``""`` without a grid).
    settings : BenchSettings
        The ``bench`` section.
    stages : dict
        ``vqvae``/``mae``/``cls`` run configurations.
    overrides : dict
        The grid entry's overrides (dotted key -> value).
    """

    name: str
    settings: BenchSettings
    stages: dict[str, Any]
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class BenchPlan:
    """A validated benchmark: its entries and the resolved document.

    Parameters
    ----------
    entries : list of BenchEntry
        One per grid entry (one without a grid).
    document : dict
        The resolved file (after ``extends``, ``--quick`` and ``--set``).
    source : str
        The file it came from.
    quick : bool
        Whether ``--quick`` was applied.
    """

    entries: list[BenchEntry]
    document: dict[str, Any]
    source: str
    quick: bool

    @property
    def is_grid(self) -> bool:
        """Whether the plan has grid entries."""
        return bool(self.entries and self.entries[0].name)


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def resolve_bench_path(name: str | Path) -> Path:
    """Find a benchmark (or recipe) file: a path, or a packaged config name.

    Parameters
    ----------
    name : str or pathlib.Path
        An existing file, or a name under the packaged ``configs/`` directory with or without
        ``configs/`` and ``.yaml``: ``bench``, ``configs/bench.yaml``, ``ablations/mask_ratio``.

    Returns
    -------
    pathlib.Path
        The file.
    """
    path = Path(name)
    if path.is_file():
        return path
    rel = path.as_posix()
    rel = rel[len("configs/") :] if rel.startswith("configs/") else rel
    rel = rel if rel.endswith(".yaml") else rel + ".yaml"
    packaged = _PACKAGED / rel
    if packaged.is_file():
        return packaged
    try:
        return builtin_config_path(name)
    except FileNotFoundError:
        pass
    known = sorted(p.relative_to(_PACKAGED).as_posix() for p in _PACKAGED.rglob("*.yaml"))
    raise FileNotFoundError(f"config file not found: {name} (packaged configs: {', '.join(known)})")


def _merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge: mappings merge recursively, everything else (lists too) replaces."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_document(
    name: str | Path, quick: bool = False, chain: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A bench file with its ``extends`` chain resolved (parents first).

    With ``quick``, each file's ``quick`` section is merged over that file before the file is
    merged over its parent, so a child's own keys win over its parent's ``quick`` section.
    """
    path = resolve_bench_path(name)
    key = str(path.resolve())
    if key in chain:
        raise ConfigError(f"{path}: 'extends' loops back to itself ({' -> '.join(chain)})")
    raw = load_yaml(path)
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    raw = dict(raw)
    parent = raw.pop("extends", None)
    section = raw.pop("quick", None)
    if section is not None and not isinstance(section, Mapping):
        raise ConfigError(f"{path}: 'quick' must be a mapping (a partial document)")
    if section and "extends" in section:
        raise ConfigError(f"{path}: 'extends' cannot be set inside 'quick'")
    if quick and section:
        raw = _merge(raw, section)
        raw["_has_quick"] = True
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: 'extends' must be a file or packaged name, got {parent!r}")
    return _merge(_read_document(parent, quick, (*chain, key)), raw)


def _set_dotted(doc: dict[str, Any], key: str, value: Any, where: str) -> None:
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(f"{where}: invalid key {key!r}")
    node = doc
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"{where}: '{'.'.join(parts[: i + 1])}' is not a section")
        node = child
    node[parts[-1]] = copy.deepcopy(value)


def _grid_entries(grid: Any, source: str) -> list[tuple[str, dict[str, Any]]]:
    """Validate the ``grid`` section: ``[(name, {dotted key: value})]``."""
    if grid is None:
        return [("", {})]
    if not isinstance(grid, list) or not grid:
        raise ConfigError(f"{source}: 'grid' must be a non-empty list of {{name, set}} entries")
    out: list[tuple[str, dict[str, Any]]] = []
    for i, entry in enumerate(grid):
        where = f"{source}: grid[{i}]"
        if not isinstance(entry, Mapping) or set(entry) - {"name", "set"} or "name" not in entry:
            raise ConfigError(
                f"{where}: expected {{name: ..., set: {{key: value}}}}, got {entry!r}"
            )
        name = str(entry["name"])
        if not _NAME_RE.match(name) or name in ("cells", "shared", "cache"):
            raise ConfigError(f"{where}: name {name!r} is not a valid directory name")
        sets = entry.get("set") or {}
        if isinstance(sets, list):  # ["a.b=1", ...] like --set
            pairs: dict[str, Any] = {}
            for text in sets:
                k, sep, v = str(text).partition("=")
                if not sep:
                    raise ConfigError(f"{where}: invalid override {text!r}: expected KEY=VALUE")
                from duin.config import parse_scalar

                pairs[k.strip()] = parse_scalar(v)
            sets = pairs
        if not isinstance(sets, Mapping):
            raise ConfigError(f"{where}: 'set' must map dotted keys to values")
        out.append((name, {str(k): v for k, v in sets.items()}))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: grid entry names must be unique, got {names}")
    return out


def _stage_configs(doc: Mapping[str, Any], recipe: str, where: str) -> dict[str, Any]:
    """The three stage configs: the recipe file, then the document's recipe keys, validated."""
    from duin.training.stages import STAGE_CONFIGS

    base = load_yaml(resolve_bench_path(recipe))
    if not isinstance(base, Mapping):
        raise ConfigError(f"bench.recipe {recipe!r}: expected a mapping at the top level")
    merged = _merge(
        {k: v for k, v in base.items() if k not in _RESERVED},
        {k: v for k, v in doc.items() if k not in _RESERVED},
    )
    shared = {k: v for k, v in merged.items() if k not in STAGES}
    out = {}
    for stage in STAGES:
        section = merged.get(stage) or {}
        if not isinstance(section, Mapping):
            raise ConfigError(f"{where}: section '{stage}' must be a mapping")
        try:
            out[stage] = from_dict(STAGE_CONFIGS[stage], _merge(shared, section))
        except ConfigError as exc:
            raise ConfigError(f"{where} (section '{stage}'): {exc}") from None
    data = [out[s].data for s in STAGES]
    for name in ("source", "simulation", "preprocess", "subjects", "split", "trial_offset"):
        values = {json.dumps(to_dict(getattr(d, name)), sort_keys=True) for d in data}
        if len(values) != 1:
            raise ConfigError(
                f"{where}: data.{name} differs between the vqvae/mae/cls sections; the benchmark "
                "needs one corpus and one split (set it in the shared data section)"
            )
    return out


def load_bench(
    config: str | Path = "bench", overrides: Sequence[str] = (), *, quick: bool = False
) -> BenchPlan:
    """Load, expand and validate a benchmark file before any work.

    Parameters
    ----------
    config : str or pathlib.Path
        A bench file or packaged name (``bench``, ``ablations/mask_ratio``, ...).
    overrides : sequence of str
        ``--set KEY=VALUE`` applied after ``--quick`` (e.g. ``bench.seeds=[0]``,
        ``cls.optim.epochs=5``); grid entries are applied after them.
    quick : bool
        Merge the file's ``quick`` section over it.

    Returns
    -------
    BenchPlan
        Every entry validated (models, stage configs, baseline overrides).

    Raises
    ------
    ConfigError
        Unknown model (with the valid names), unknown key or impossible value.
    """
    source = str(resolve_bench_path(config))
    doc = _read_document(config, quick)
    if quick and not doc.pop("_has_quick", False):
        raise ConfigError(
            f"{source}: --quick given but neither it nor what it extends has a 'quick' section"
        )
    doc = apply_overrides(doc, list(overrides))
    grid = _grid_entries(doc.pop("grid", None), source)
    entries = []
    for name, sets in grid:
        entry_doc = copy.deepcopy(doc)
        where = f"{source}" + (f" grid entry {name!r}" if name else "")
        for key, value in sets.items():
            _set_dotted(entry_doc, key, value, where)
        section = entry_doc.get("bench") or {}
        try:
            settings = from_dict(BenchSettings, section, path="bench")
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        stages = _stage_configs(entry_doc, settings.recipe, where)
        entries.append(BenchEntry(name, settings, stages, sets))
    return BenchPlan(entries=entries, document=doc, source=source, quick=quick)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _key(payload: Any) -> str:
    """Short content key of JSON-able data."""
    text = json.dumps(to_dict(payload), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _subject_view(prepared: Any, subject: str) -> Any:
    """The prepared data restricted to one subject (same cache and index)."""
    loaded = dataclasses.replace(
        prepared.loaded, recordings={subject: prepared.loaded.recordings[subject]}
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
    ) -> None:
        self.entry = entry
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
        from duin.pipeline import select_channels

        cls = self.entry.stages["cls"]
        data = cls.data
        all_channels = self.view.ch_names(self.subject)
        if data.channels is not None:
            if self.subject not in data.channels:
                raise ValueError(f"data.channels has no list for subject {self.subject!r}")
            chosen = list(data.channels[self.subject])
            self._channels = (chosen, _key({"given": chosen}))
            return self._channels
        k = data.n_channels
        if k is None or len(all_channels) <= k:
            self._channels = (list(all_channels), _key({"all": all_channels}))
            return self._channels
        selection = dataclasses.replace(cls, seed=self.seed, seeds=None, variant="scratch")
        key = _key({"selection": selection, "subject": self.subject, "k": k})
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
            from duin.pipeline import pretrain_vqvae

            cfg = self._vq_cfg()
            out = self.shared / f"vqvae-{_key(cfg)}"
            if not _done(out / "data.json"):
                logger.info("bench: VQ-VAE sub-%s seed %d -> %s", self.subject, self.seed, out)
                pretrain_vqvae(cfg, out, prepared=self.view, resume=True, quiet=self.quiet)
            self._vqvae = out
        return self._vqvae

    def mae(self) -> Path:
        """The shared MAE run (on the shared VQ-VAE) of this subject and seed."""
        if self._mae is None:
            from duin.pipeline import pretrain_mae

            vq = self.vqvae()
            chans, _ = self.channels()
            cfg = _with_subject(self.entry.stages["mae"], self.seed, self.subject, chans)
            out = self.shared / f"mae-{_key({'mae': cfg, 'vqvae': vq.name})}"
            if not _done(out / "data.json"):
                logger.info("bench: MAE sub-%s seed %d -> %s", self.subject, self.seed, out)
                pretrain_mae(cfg, out, vq, prepared=self.view, resume=True, quiet=self.quiet)
            self._mae = out
        return self._mae

    def upstream(self, model: str) -> dict[str, Any]:
        """What a cell's result depends on besides its own recipe (for the cell key)."""
        chans, key = self.channels()
        deps: dict[str, Any] = {"channels": key}
        variant = DUIN_MODELS.get(model)
        if variant in ("vqvae", "vqvae+vq"):
            deps["vqvae"] = _key(self._vq_cfg())
        elif variant == "mae":
            cfg = _with_subject(self.entry.stages["mae"], self.seed, self.subject, chans)
            deps["vqvae"] = _key(self._vq_cfg())
            deps["mae"] = _key(cfg)
        return deps


# ---------------------------------------------------------------------------------------------
# Cells
# ---------------------------------------------------------------------------------------------


def _cls_config(ctx: _Context, variant: str) -> Any:
    chans, _ = ctx.channels()
    return _with_subject(
        ctx.entry.stages["cls"], ctx.seed, ctx.subject, chans, seeds=[ctx.seed], variant=variant
    )


def _run_duin_cell(ctx: _Context, cell: _Cell) -> None:
    from duin.pipeline import finetune

    variant = DUIN_MODELS[cell.model]
    init = None
    if variant in ("vqvae", "vqvae+vq"):
        init = ctx.vqvae()
    elif variant == "mae":
        init = ctx.mae()
    cfg = _cls_config(ctx, variant)
    finetune(cfg, cell.dir, init, variant, prepared=ctx.view, resume=True, quiet=ctx.quiet)  # type: ignore[arg-type]


def _baseline_config(cfg_class: type, size: str, fixed: Mapping[str, Any], extra: Mapping) -> Any:
    base = cfg_class.quick() if size == "quick" else cfg_class()
    data = _merge(dataclasses.asdict(base), dict(extra))
    data.update(fixed)
    try:
        return cfg_class.from_dict(data)
    except ValueError as exc:
        raise ConfigError(f"{cfg_class.__name__}: {exc}") from None


def _optim(base: Any, extra: Mapping[str, Any], where: str) -> Any:
    from duin.config import OptimConfig

    if not extra:
        return base
    return from_dict(OptimConfig, _merge(to_dict(base), extra), path=where)


def _baseline_plan(ctx: _Context, name: str, sfreq: float, n_classes: int) -> dict[str, Any]:
    """Configs of a baseline cell: classifier, pretraining stages, optimisers."""
    from duin.models.baselines import BASELINES
    from duin.models.registry import get_model_class

    info = BASELINES[name]
    settings = ctx.entry.settings
    extra = settings.baselines.get(name, BaselineSettings())
    chans, _ = ctx.channels()
    cls = ctx.entry.stages["cls"]
    fixed = {"n_channels": len(chans), "n_subjects": 1, "sfreq": float(sfreq)}
    model_cfg = _baseline_config(
        info.config_class,
        settings.baseline_size,
        {**fixed, "n_times": cls.model.n_times, "n_classes": n_classes},
        extra.model,
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
            overrides = _merge(shared, extra.pretrain.get(stage, {}))
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
    from duin.models.registry import create_model, load_model, save_model
    from duin.pipeline import _pretrain_sets
    from duin.training.stages import load_weights
    from duin.training.trainer import Trainer

    mae = ctx.entry.stages["mae"]
    chans, chan_key = ctx.channels()
    key = _key(
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
    import torch

    for stage, cfg in plan["pretrain"]:
        run_dir = root / stage
        last = run_dir / "checkpoints" / "last"
        if not _done(run_dir / "done.json"):
            train, val, info = _pretrain_sets(
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
    """Fine-tune one baseline on the shared split and channels; same result files as Du-IN."""
    import torch

    from duin.evaluation.plots import plot_confusion_matrix
    from duin.models.baselines import transfer_backbone
    from duin.models.registry import create_model
    from duin.pipeline import _display_label, _subject_trials, evaluate
    from duin.training.stages import (
        evaluate_classifier,
        load_weights,
        select_epoch,
        train_classifier,
        write_json,
    )

    cls = _cls_config(ctx, "scratch")
    chans, _ = ctx.channels()
    st = _subject_trials(
        ctx.view,
        ctx.subject,
        cls.data,
        n_times=cls.model.n_times,
        seed=ctx.seed,
        protocol=cls.protocol,
        channels=chans,
    )
    plan = _baseline_plan(ctx, cell.model, st.sfreq, len(st.labels))
    pretrained = _pretrain_baseline(ctx, cell.model, plan, st.split) if plan["pretrain"] else None
    run_dir = cell.dir / f"sub-{ctx.subject}" / f"seed-{ctx.seed}"
    run_cfg = dataclasses.replace(cls, model=plan["model"], optim=plan["optim"])
    torch.manual_seed(ctx.seed)
    model = create_model(cell.model, plan["model"])
    if pretrained is not None:
        transfer_backbone(pretrained, model)
    max_shift = int(round(cls.data.shift * st.sfreq))
    train = st.dataset(ctx.view.index, "train", max_shift=max_shift, seed=ctx.seed)
    val = st.dataset(ctx.view.index, "val")
    test = st.dataset(ctx.view.index, "test") if cls.protocol == "reference" else None
    fit = train_classifier(
        run_cfg, model, train, val, run_dir, test_data=test, resume=True, quiet=ctx.quiet
    )
    choice = select_epoch(
        fit.history,
        cls.protocol,
        metric=cls.trainer.selection_metric,
        mode=cls.trainer.selection_mode,
    )
    if cls.protocol == "reference":
        ckpt = run_dir / "checkpoints" / f"epoch-{choice['epoch']:04d}"
    else:
        ckpt = fit.best_dir
        choice["epoch"] = int(json.loads((ckpt / "best.json").read_text())["epoch"])
    load_weights(model, ckpt)
    x_test, y_test = st.arrays(ctx.view.index, "test")
    metrics = evaluate_classifier(model, x_test, y_test)
    confusion = metrics.pop("confusion")
    plot_confusion_matrix(
        confusion,
        run_dir / "confusion.png",
        class_names=[_display_label(w) for w in st.labels],
        title=f"{cell.model} sub-{ctx.subject} seed {ctx.seed}: top-1 {100 * metrics['top1']:.1f} %",
    )
    oracle = ctx.view.oracle()
    result = {
        "subject": ctx.subject,
        "seed": ctx.seed,
        "variant": cell.model,
        "protocol": cls.protocol,
        "metrics": {
            k: metrics[k]
            for k in ("top1", "top5", "balanced_accuracy", "cross_entropy")
            if k in metrics
        },
        "n_test_trials": metrics["n_trials"],
        "n_classes": metrics["n_classes"],
        "chance": metrics["chance"],
        "oracle_accuracy": None if oracle is None else oracle.get(ctx.subject),
        "selected_epoch": choice["epoch"],
        "selection_rule": choice["rule"],
        "checkpoint": str(ckpt.relative_to(cell.dir)),
        "split": st.split.summary(),
        "confusion": confusion,
        "labels": st.labels,
        "pretrained": pretrained is not None,
    }
    write_json(
        cell.dir / "data.json",
        {**ctx.view.describe(), "stage": "cls", "model": cell.model, "channels": chans},
    )
    write_json(run_dir / "result.json", result)
    evaluate(cell.dir)


def _count_parameters(cell_dir: Path) -> int | None:
    from duin.models.registry import load_model

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
    from duin.models.baselines import BASELINES

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
    return _key(payload)


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


def _model_info(name: str) -> dict[str, Any]:
    from duin.models.baselines import BASELINES

    if name in BASELINES:
        info = BASELINES[name]
        return {
            "family": "baseline",
            "token_level": info.token_level,
            "pretrained": info.pretrained,
            "reference": info.reference,
            "paper_parameters": info.paper_params,
        }
    return {
        "family": "duin",
        "token_level": "region",
        "pretrained": DUIN_MODELS[name] != "scratch",
        "reference": "Zheng et al., NeurIPS 2024",
        "paper_parameters": "4.38M",
    }


def _collect(entry: BenchEntry, root: Path, subjects: list[str], oracle: Any) -> dict[str, Any]:
    """Aggregate the cells of one entry into the ``bench.json`` dictionary."""
    from duin.evaluation.report import build_report
    from duin.models.baselines import BASELINES

    settings = entry.settings
    models: dict[str, Any] = {}
    protocol, n_classes = None, None
    for name in settings.models:
        runs, walls, params = [], [], None
        pretrained = _model_info(name)["pretrained"]
        for subject in subjects:
            for seed in settings.seeds:
                cell = root / "cells" / name / f"sub-{subject}_seed-{seed}"
                result = cell / f"sub-{subject}" / f"seed-{seed}" / "result.json"
                if not result.is_file():
                    continue
                r = json.loads(result.read_text())
                protocol, n_classes = r["protocol"], r["n_classes"]
                runs.append(
                    {
                        "subject": r["subject"],
                        "seed": r["seed"],
                        "metrics": r["metrics"],
                        "run_dir": str(cell.relative_to(root)),
                    }
                )
                if "pretrained" in r:  # baselines record whether they were pretrained
                    pretrained = bool(r["pretrained"])
                meta = json.loads((cell / "cell.json").read_text())
                walls.append(float(meta.get("wall_s") or 0.0))
                params = params or meta.get("n_parameters")
        if not runs:
            continue
        report = build_report(runs, protocol=protocol, n_classes=n_classes, title=name)
        paper = PAPER_TABLE2.get(name)
        if (
            name in BASELINES
            and settings.baselines.get(name, BaselineSettings()).pretrained is False
        ):
            paper = None  # not the paper's setting
        models[name] = {
            **_model_info(name),
            "pretrained": pretrained,
            "n_parameters": params,
            "paper_top1": None if paper is None else {"mean": paper[0], "se": paper[1]},
            "summary": report["summary"],
            "subjects": report["subjects"],
            "runs": report["runs"],
            "wall_s": round(sum(walls), 1),
        }
    if not models:
        raise ValueError(f"{root}: no finished cells to report")
    oracle = {s: oracle[s] for s in subjects if oracle and s in oracle} or None
    return {
        "title": settings.name + (f" [{entry.name}]" if entry.name else ""),
        "entry": entry.name or None,
        "overrides": entry.overrides,
        "protocol": protocol,
        "n_classes": n_classes,
        "chance": 1.0 / n_classes,
        "oracle_accuracy": oracle,
        "oracle_mean": None if not oracle else sum(oracle.values()) / len(oracle),
        "aggregation": (
            "per subject: mean and population SD over seeds; overall: mean of subject means ± "
            "SE = population SD of subject means / sqrt(n_subjects) (the paper's Table 2)"
        ),
        "subjects": subjects,
        "seeds": list(settings.seeds),
        "models": models,
        "channels_per_subject": entry.stages["cls"].data.n_channels,
        "recipe": settings.recipe,
        "baseline_size": settings.baseline_size,
    }


def _pct(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def _params(n: int | None) -> str:
    return "" if not n else f"{n / 1e6:.2f}M"


def render_bench_markdown(bench: Mapping[str, Any]) -> str:
    """Markdown of one benchmark: summary table, per-subject table, chance and ceiling.

    Parameters
    ----------
    bench : Mapping
        A ``bench.json`` dictionary.

    Returns
    -------
    str
        Markdown text.
    """
    models = bench["models"]
    oracle = bench.get("oracle_accuracy") or {}
    lines = [
        f"# {bench['title']}",
        "",
        f"- Protocol: `{bench['protocol']}`; {bench['n_classes']} words, chance "
        f"{100 * bench['chance']:.2f} %",
    ]
    if bench.get("oracle_mean") is not None:
        shown = ", ".join(f"sub-{k}: {100 * v:.2f} %" for k, v in sorted(oracle.items()))
        lines.append(
            f"- Simulator oracle ceiling: {100 * bench['oracle_mean']:.2f} % (mean; {shown})"
        )
    lines += [
        f"- Subjects {', '.join(bench['subjects'])}; seeds {bench['seeds']}; "
        f"channels per subject: {bench.get('channels_per_subject') or 'all'}",
        f"- Aggregation: {bench['aggregation']}",
        "",
        "| Model | Tokens | Pretrained | Params | Top-1 % (mean ± SE) | Top-5 % | Bal. acc. % "
        "| CE | Paper Table 2 % | Wall s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in models.items():
        s = m["summary"]
        paper = m.get("paper_top1")
        paper_text = "" if paper is None else f"{paper['mean']:.2f} ± {paper['se']:.2f}"
        ce = s.get("cross_entropy", {}).get("mean")
        lines.append(
            f"| {name} | {m['token_level']} | {'yes' if m['pretrained'] else 'no'} "
            f"| {_params(m.get('n_parameters'))} "
            f"| **{_pct(s['top1']['mean'])} ± {_pct(s['top1']['se'])}** "
            f"| {_pct(s.get('top5', {}).get('mean'))} "
            f"| {_pct(s.get('balanced_accuracy', {}).get('mean'))} "
            f"| {'n/a' if ce is None else f'{ce:.3f}'} | {paper_text} | {m['wall_s']:.0f} |"
        )
    chance_row = f"| chance | | | | {100 * bench['chance']:.2f} | | | | 1.64 | |"
    lines.append(chance_row)
    if bench.get("oracle_mean") is not None:
        lines.append(f"| simulator oracle | | | | {100 * bench['oracle_mean']:.2f} | | | | | |")
    if len(bench["subjects"]) == 1:
        lines += [
            "",
            "One subject: the SE across subjects is 0 by definition; the per-subject table below "
            "gives the SD over seeds.",
        ]
    region = [(n, m) for n, m in models.items() if m["token_level"] == "region"]
    channel = [(n, m) for n, m in models.items() if m["token_level"] == "channel"]
    if region and channel:
        best_r = max(region, key=lambda nm: nm[1]["summary"]["top1"]["mean"])
        best_c = max(channel, key=lambda nm: nm[1]["summary"]["top1"]["mean"])
        lines += [
            "",
            f"Region-level vs channel-level tokens: best region-level {best_r[0]} "
            f"{_pct(best_r[1]['summary']['top1']['mean'])} % vs best channel-level {best_c[0]} "
            f"{_pct(best_c[1]['summary']['top1']['mean'])} % (paper: 62.70 vs 12.42).",
        ]
    subjects = bench["subjects"]
    lines += [
        "",
        "Per subject: top-1 % (mean ± SD over seeds)",
        "",
        "| Model | " + " | ".join(f"sub-{s}" for s in subjects) + " |",
        "|---|" + "---:|" * len(subjects),
    ]
    for name, m in models.items():
        by = {e["subject"]: e["metrics"]["top1"] for e in m["subjects"]}
        cells = [
            f"{_pct(by[s]['mean'])} ± {_pct(by[s]['sd'])}" if s in by else "" for s in subjects
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if oracle:
        lines.append(
            "| oracle | "
            + " | ".join(_pct(oracle.get(s)) if s in oracle else "" for s in subjects)
            + " |"
        )
    lines.append("")
    return "\n".join(lines)


def _write_outputs(bench: Mapping[str, Any], root: Path) -> None:
    from duin.evaluation.plots import plot_bars

    atomic_write_json(root / "bench.json", json.loads(json.dumps(bench, default=str)))
    atomic_write_text(root / "bench.md", render_bench_markdown(bench))
    models = bench["models"]
    plot_bars(
        {n: 100 * m["summary"]["top1"]["mean"] for n, m in models.items()},
        root / "bench.png",
        errors={n: 100 * m["summary"]["top1"]["se"] for n, m in models.items()},
        ylabel="top-1 accuracy (%)",
        chance=100 * bench["chance"],
        ceiling=None if bench.get("oracle_mean") is None else 100 * bench["oracle_mean"],
        title=bench["title"],
    )


def render_grid_markdown(grid: Mapping[str, Any]) -> str:
    """Markdown comparing the entries of a grid (rows) for every model (columns).

    Parameters
    ----------
    grid : Mapping
        The top-level ``bench.json`` of a grid.

    Returns
    -------
    str
        Markdown text.
    """
    models = grid["models"]
    lines = [
        f"# {grid['title']}",
        "",
        f"Top-1 % (mean ± SE over subjects). Chance {100 * grid['chance']:.2f} %"
        + (
            f"; simulator oracle {100 * grid['oracle_mean']:.2f} %"
            if grid.get("oracle_mean") is not None
            else ""
        )
        + ".",
        "",
        "| Entry | Overrides | " + " | ".join(models) + " |",
        "|---|---|" + "---:|" * len(models),
    ]
    for name, e in grid["entries"].items():
        sets = ", ".join(f"`{k}={json.dumps(v)}`" for k, v in e["overrides"].items())
        cells = []
        for model in models:
            m = e["models"].get(model)
            if m is None:
                cells.append("")
            elif m.get("seeds_sd") is not None and m["n_seeds"] > 1:
                cells.append(
                    f"{_pct(m['top1']['mean'])} (SD {_pct(m['seeds_sd'])} over "
                    f"{m['n_seeds']} seeds)"
                )
            else:
                cells.append(f"{_pct(m['top1']['mean'])} ± {_pct(m['top1']['se'])}")
        lines.append(f"| {name} | {sets} | " + " | ".join(cells) + " |")
    lines += ["", "Per-entry details: `<entry>/bench.md`.", ""]
    return "\n".join(lines)


def _write_grid(plan: BenchPlan, results: Mapping[str, Mapping[str, Any]], out: Path) -> dict:
    from duin.evaluation.plots import plot_bars

    models: list[str] = []
    for bench in results.values():
        models += [m for m in bench["models"] if m not in models]
    first = next(iter(results.values()))
    grid = {
        "title": plan.entries[0].settings.name,
        "source": plan.source,
        "quick": plan.quick,
        "chance": first["chance"],
        "oracle_mean": first.get("oracle_mean"),
        "models": models,
        "entries": {
            name: {
                "overrides": bench["overrides"],
                "models": {
                    m: {
                        "top1": v["summary"]["top1"],
                        # one subject: the SE across subjects is 0; keep the spread over seeds
                        "seeds_sd": v["subjects"][0]["metrics"]["top1"]["sd"]
                        if len(v["subjects"]) == 1
                        else None,
                        "n_seeds": max(e["metrics"]["top1"]["n_seeds"] for e in v["subjects"]),
                    }
                    for m, v in bench["models"].items()
                },
                "bench": f"{name}/bench.json",
            }
            for name, bench in results.items()
        },
    }
    atomic_write_json(out / "bench.json", grid)
    atomic_write_text(out / "bench.md", render_grid_markdown(grid))
    values, errors = {}, {}
    for name, bench in results.items():
        for m, v in bench["models"].items():
            label = name if len(models) == 1 else f"{name}:{m}"
            values[label] = 100 * v["summary"]["top1"]["mean"]
            errors[label] = 100 * v["summary"]["top1"]["se"]
    plot_bars(
        values,
        out / "bench.png",
        errors=errors,
        ylabel="top-1 accuracy (%)",
        chance=100 * grid["chance"],
        ceiling=None if grid["oracle_mean"] is None else 100 * grid["oracle_mean"],
        title=grid["title"],
    )
    return grid


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------


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
    from duin.pipeline import prepare_data

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
        data_key = _key(
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
        n_cells = len(subjects) * len(entry.settings.seeds) * len(entry.settings.models)
        i = 0
        for subject in subjects:
            for seed in entry.settings.seeds:
                ctx = _Context(entry, prepared, subject, seed, out / "shared", quiet)
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
        bench = _collect(entry, root, list(subjects), prepared.oracle())
        bench["quick"] = plan.quick
        bench["source"] = plan.source
        _write_outputs(bench, root)
        results[entry.name] = bench
    top = _write_grid(plan, results, out) if plan.is_grid else results[""]
    top = dict(top)
    top["cells"] = counts
    top["wall_s"] = round(time.perf_counter() - t_start, 1)
    return top


# ---------------------------------------------------------------------------------------------
# Command
# ---------------------------------------------------------------------------------------------


def bench_cmd(
    config: Annotated[
        str,
        typer.Option(
            "--config",
            "-c",
            metavar="FILE|NAME",
            help="Bench file, or a packaged one: 'bench', 'ablations/mask_ratio', "
            "'ablations/codex_size', 'ablations/channels', 'ablations/token_level'.",
        ),
    ] = "bench",
    quick: Annotated[
        bool,
        typer.Option("--quick", help="CPU-sized: the file's 'quick' section (minutes, not days)."),
    ] = False,
    out: Annotated[
        Path, typer.Option("--out", "-o", metavar="DIR", help="Benchmark directory (resumable).")
    ] = Path("duin-bench"),
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            "-s",
            metavar="KEY=VALUE",
            help="Override a value, e.g. --set bench.seeds=[0,1] --set cls.optim.epochs=5.",
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Accepted for symmetry with the stage commands: a bench always resumes.",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate and print the plan; run nothing.")
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bars; warnings and errors only.")
    ] = False,
) -> None:
    """Benchmark every model (baselines and Du-IN variants) over subjects and seeds.

    One leak-free split per (subject, seed) shared by all models; a rerun skips finished cells
    and resumes half-done ones. Writes bench.json, bench.md and bench.png into --out.
    """
    del resume  # finished cells are always skipped and half-done ones resumed
    plan = load_bench(config, set_ or (), quick=quick)  # validates everything before any work
    if dry_run:
        for entry in plan.entries:
            s = entry.settings
            head = f"[{entry.name}] " if entry.name else ""
            typer.echo(
                f"{head}models: {', '.join(s.models)}; subjects: {s.subjects or 'all'}; "
                f"seeds: {s.seeds}; recipe: {s.recipe}; baselines: {s.baseline_size}"
            )
        return
    if quiet:
        from duin.utils.logs import setup_logging

        setup_logging(quiet=True)
    result = run_bench(out=out, plan=plan, quiet=quiet)
    typer.echo((out / "bench.md").read_text(encoding="utf-8"))
    typer.echo(
        f"cells: {result['cells']['ran']} run, {result['cells']['done']} already finished; "
        f"wall time {result['wall_s']:.0f} s; results: {out / 'bench.md'}"
    )


def register_bench(app: typer.Typer) -> None:
    """Add ``duin bench`` to a typer app (with the CLI's one-line error handling).

    Parameters
    ----------
    app : typer.Typer
        The ``duin`` app (or a test app).
    """
    from duin.cli import cli_errors

    if "bench" not in {c.name for c in app.registered_commands}:
        app.command("bench")(cli_errors(bench_cmd))
