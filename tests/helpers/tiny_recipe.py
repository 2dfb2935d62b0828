"""The tiny recipe of the CLI, pipeline and bench tests: a 1-block Du-IN, a small simulated corpus.

Every such test trains the same small model (1 block, 2 heads of 16, a 16-16-8 tokenizer, a
16-code VQ-VAE codex, a 16-unit classifier head) with batches of 8 on the CPU; a test module
states only what its runs need differently: the simulated corpus, the epochs per stage and any
other key (``protocol``, ``data.n_channels``, ``cls.variant``, a ``bench`` section, ...).
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

#: An override value that removes the key from the recipe (so the config's default applies).
DROP = object()

_SIMULATION = {"trials_per_word": 10, "blocks_per_run": 1, "n_shafts": 2, "compute_baseline": False}

_MODEL = {"n_blocks": 1, "n_heads": 2, "d_head": 16, "d_ff": 32, "tokenizer_filters": [16, 16, 8]}

_STAGES: dict[str, dict[str, Any]] = {
    "vqvae": {
        "model": {
            "n_times": 2000,
            "n_decoder_blocks": 1,
            "decoder_filters": [16, 16, 16, 16, 8],
            "quantizer": {"n_codes": 16, "d_code": 8},
        }
    },
    "mae": {},
    "cls": {
        "trainer": {"selection_metric": "val/top1", "selection_mode": "max"},
        "model": {"n_times": 1000, "head_hidden": [16]},
    },
}


def tiny_simulation(**settings: Any) -> dict[str, Any]:
    """Simulator settings of a tiny corpus: 2 shafts, 10 trials per word in 1 block per run.

    Parameters
    ----------
    **settings
        The corpus's own :class:`duin.data.simulate.SimulationConfig` fields (``seed``,
        ``n_words``, ``contacts_per_shaft``, ``pretrain_hours``, ...); they win over the above.

    Returns
    -------
    dict
        The ``data.simulation`` section; ``SimulationConfig(**it)`` simulates the same corpus.
    """
    return {**_SIMULATION, **settings}


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` merged in: nested dicts key by key, other values replace."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if value is DROP:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def tiny_recipe(simulation: dict[str, Any], epochs: dict[str, int], **overrides: Any) -> str:
    """The tiny recipe as the text of a ``--config`` YAML file.

    Parameters
    ----------
    simulation : dict
        The ``data.simulation`` section (see :func:`tiny_simulation`); its ``seed`` is also the
        recipe's ``seed``.
    epochs : dict of str to int
        Training epochs of each stage section to write (``vqvae``, ``mae``, ``cls``); a stage
        not named has no section. A stage trains with one warm-up epoch, none when it trains one
        epoch, from lr 1e-3 down to 1e-4.
    **overrides
        Top-level sections merged into the recipe: nested dicts key by key, other values
        replace, and :data:`DROP` removes a key.

    Returns
    -------
    str
        The YAML text (block style, so more top-level sections can be appended to it).
    """
    recipe: dict[str, Any] = {
        "seed": simulation["seed"],
        "optim": {"batch_size": 8},
        "trainer": {"device": "cpu", "log_every": 0, "progress": False, "tensorboard": False},
        "model": _MODEL,
        "data": {"n_channels": None, "simulation": simulation},
    }
    for stage, n_epochs in epochs.items():
        optim = {"epochs": n_epochs, "warmup_epochs": int(n_epochs > 1), "lr": 1e-3, "lr_min": 1e-4}
        recipe[stage] = {"optim": optim, **_STAGES[stage]}
    return yaml.safe_dump(_merge(recipe, overrides), sort_keys=False)
