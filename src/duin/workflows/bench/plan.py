"""Benchmark plans (``duin bench``): the bench file format, its settings and validation.

Reads a bench file (path or packaged name under ``duin/configs``), its ``extends`` chain, the
packaged Du-IN recipe it names and ``--set`` overrides, and returns a :class:`BenchPlan` with
fully validated stage configurations (it writes nothing).

The benchmark runs the baselines (:data:`duin.models.baselines.BASELINES`; the self-supervised
ones are pretrained with their ``<name>_pretrain`` models and moved into the classifier with
:func:`~duin.models.baselines.transfer_backbone`) and the Du-IN variants ``duin_scratch``,
``duin_vqvae``, ``duin_vqvae+vq``, ``duin_mae`` and ``duin_poms`` over subjects and seeds, and
reports
mean ± SE across subjects (the paper's SE: population SD of the subject means / sqrt(n)) next
to chance and, on simulated data, the simulator's oracle ceiling.

Protocol (the same for every model):

- one leak-free split per (subject, seed) (:func:`duin.data.splits.split_trials`), shared by all
  models; normalisation statistics come from its training trials;
- channels: the top-``data.n_channels`` channels by contribution score, ranked once per
  (subject, seed) on that split's training trials, used by every model (paper §4.3, "selected
  according to the train set", used for all models);
- pretraining (Du-IN's VQ-VAE and MAE, the baselines' objectives) on the pretraining crops of
  :func:`duin.workflows.prepare.prepare_data` (non-task recordings by default), once per
  (subject, seed) and configuration, cached content-keyed under ``OUT/shared`` so that grid
  entries that do not change it (e.g. the MAE mask ratio) reuse the same VQ-VAE;
- ``duin_poms``: one VQ-VAE and one MAE per seed pretrained over all the benchmark's subjects at
  once (:mod:`duin.workflows.pooled`; each subject with its own channels and its own leak-free
  windows), cached under ``OUT/shared/pooled/seed-N``; each subject's classifier starts from
  its cut of that MAE;
- ``labram_popt`` needs electrode coordinates (BIDS ``electrodes.tsv``, the simulator): data
  without them fail with one line naming the subject;
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
      shared/pooled/seed-N/               the multi-subject VQ-VAE and MAE of duin_poms
      [<entry>/]cells/<model>/sub-XX_seed-N/   one fine-tuning run per cell: cell.json,
                                          sub-XX/seed-N/result.json, report.json/.md
      [<entry>/]bench.json, bench.md, bench.png   per grid entry

A finished cell (``report.json`` present) is skipped on a rerun; a half-done one resumes through
the trainer. A finished cell whose configuration changed is an error, never silently reused.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from duin.config import (
    STAGES,
    ConfigError,
    apply_overrides,
    builtin_config_path,
    from_dict,
    load_yaml,
    to_dict,
)

__all__ = [
    "DUIN_MODELS",
    "PAPER_TABLE2",
    "BaselineSettings",
    "BenchEntry",
    "BenchPlan",
    "BenchSettings",
    "content_key",
    "deep_merge",
    "load_bench",
    "model_names",
    "resolve_bench_path",
]

#: Du-IN variants of Table 2: bench model name -> ``cls.variant``.
DUIN_MODELS: dict[str, str] = {
    "duin_scratch": "scratch",
    "duin_vqvae": "vqvae",
    "duin_vqvae+vq": "vqvae+vq",
    "duin_mae": "mae",
    "duin_poms": "poms",
}

#: Table 2 of the paper (top-1 %, mean ± SE over 12 subjects; single-subject pretraining except
#: ``duin_poms`` and ``labram_popt``, pretrained on all 12 subjects).
PAPER_TABLE2: dict[str, tuple[float, float]] = {
    "tstcc": (24.85, 4.42),
    "cnn_bigru": (32.04, 5.45),
    "eeg_conformer": (45.82, 4.66),
    "neurobert": (49.51, 4.43),
    "dewave": (32.43, 4.48),
    "brainbert": (6.72, 1.59),
    "brant": (11.16, 3.56),
    "labram": (11.53, 2.63),
    "labram_popt": (11.78, 2.70),
    "duin_scratch": (56.29, 5.20),
    "duin_vqvae+vq": (44.17, 4.04),
    "duin_vqvae": (58.24, 4.83),
    "duin_mae": (62.70, 4.69),
    "duin_poms": (59.18, 4.63),
}

_RESERVED = ("bench", "quick", "grid", "extends")
_PACKAGED = Path(__file__).resolve().parents[2] / "configs"  # duin/configs
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


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge: mappings merge recursively, everything else (lists too) replaces."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
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
        raw = deep_merge(raw, section)
        raw["_has_quick"] = True
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: 'extends' must be a file or packaged name, got {parent!r}")
    return deep_merge(_read_document(parent, quick, (*chain, key)), raw)


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
    merged = deep_merge(
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
            out[stage] = from_dict(STAGE_CONFIGS[stage], deep_merge(shared, section))
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


def content_key(payload: Any) -> str:
    """Short content key (10 hex digits) of JSON-able data, e.g. a configuration."""
    text = json.dumps(to_dict(payload), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]
