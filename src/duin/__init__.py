"""duin: Du-IN speech decoding from intracranial (sEEG/ECoG) recordings.

Du-IN (Zheng et al., NeurIPS 2024) learns region-level tokens from 0.1 s patches of a few
sEEG channels, pretrains them with a VQ-VAE codex and a masked-code model, and fine-tunes a
word classifier. This package is a re-implementation that reproduces the paper's models
exactly (see ``tests/test_parity.py``) inside leak-free, resumable tooling.

The public API is imported lazily so that ``import duin`` stays cheap:

- models: :func:`create_model`, :func:`list_models`, :func:`load_model`
- data: :func:`simulate`, :func:`read_bids`, :func:`read_mne`, :func:`read_arrays`,
  :func:`read_released`, :class:`Recording`
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from duin._version import __version__

# public name -> module that defines it
_LAZY: dict[str, str] = {
    "create_model": "duin.models.registry",
    "list_models": "duin.models.registry",
    "load_model": "duin.models.registry",
    "save_model": "duin.models.registry",
    "Recording": "duin.data.recording",
    "simulate": "duin.data.simulate",
    "read_bids": "duin.data.readers.bids",
    "read_mne": "duin.data.readers.mne",
    "read_arrays": "duin.data.readers.arrays",
    "read_released": "duin.data.readers.released",
    "write_bids": "duin.data.writers",
    "write_released": "duin.data.writers",
    "preprocess": "duin.data.preprocess",
    "PreprocessConfig": "duin.data.preprocess",
}

__all__ = [
    "PreprocessConfig",
    "Recording",
    "__version__",
    "create_model",
    "list_models",
    "load_model",
    "preprocess",
    "read_arrays",
    "read_bids",
    "read_mne",
    "read_released",
    "save_model",
    "simulate",
    "write_bids",
    "write_released",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from duin.data.preprocess import PreprocessConfig, preprocess
    from duin.data.readers.arrays import read_arrays
    from duin.data.readers.bids import read_bids
    from duin.data.readers.mne import read_mne
    from duin.data.readers.released import read_released
    from duin.data.recording import Recording
    from duin.data.simulate import simulate
    from duin.data.writers import write_bids, write_released
    from duin.models.registry import create_model, list_models, load_model, save_model


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'duin' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
