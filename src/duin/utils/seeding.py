"""Seeds and random-number-generator state (python, numpy, torch, CUDA).

One run ``seed`` drives everything; per-purpose streams (e.g. the data order of epoch 7) are
derived from it with :func:`derive_seed`, so they never depend on how much randomness other
parts of the program consumed. RNG states serialise to JSON-safe dicts for checkpoints.
"""

from __future__ import annotations

import base64
import random
from typing import Any

import numpy as np
import torch

__all__ = ["derive_seed", "get_rng_state", "seed_everything", "set_rng_state"]


def derive_seed(seed: int, *keys: int | str) -> int:
    """Derive an independent 63-bit seed from a base seed and a path of keys.

    Parameters
    ----------
    seed : int
        Base seed of the run.
    *keys : int or str
        Purpose and indices, e.g. ``("train-order", epoch)``.

    Returns
    -------
    int
        A non-negative seed, a pure function of ``(seed, *keys)``.
    """
    entropy = [int(seed) & 0xFFFFFFFFFFFFFFFF]
    for key in keys:
        if isinstance(key, str):
            entropy.extend(key.encode("utf-8"))
        else:
            entropy.append(int(key) & 0xFFFFFFFFFFFFFFFF)
    state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's legacy global RNG and torch (CPU and all CUDA devices).

    Parameters
    ----------
    seed : int
        The seed.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - the global state is what we seed
    torch.manual_seed(seed)


def _bytes_tensor_to_str(state: torch.Tensor) -> str:
    return base64.b64encode(state.cpu().numpy().tobytes()).decode("ascii")


def _str_to_bytes_tensor(text: str) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(base64.b64decode(text), dtype=np.uint8).copy())


def get_rng_state() -> dict[str, Any]:
    """Capture the global RNG states as a JSON-serialisable dict.

    Returns
    -------
    dict
        Keys ``python``, ``numpy``, ``torch`` and ``cuda`` (a list, one per visible device).
    """
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)  # noqa: NPY002
    cuda: list[str] = []
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = [_bytes_tensor_to_str(s) for s in torch.cuda.get_rng_state_all()]
    return {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [
            np_name,
            np.asarray(np_keys).tolist(),
            int(np_pos),
            int(np_has_gauss),
            float(np_gauss),
        ],
        "torch": _bytes_tensor_to_str(torch.get_rng_state()),
        "cuda": cuda,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore global RNG states captured by :func:`get_rng_state`.

    Parameters
    ----------
    state : dict
        Output of :func:`get_rng_state` (possibly after a JSON round trip).
    """
    py_version, py_state, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (np_name, np.asarray(np_keys, dtype=np.uint32), np_pos, np_has_gauss, np_gauss)
    )
    torch.set_rng_state(_str_to_bytes_tensor(state["torch"]))
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available():
        n = min(len(cuda), torch.cuda.device_count())
        torch.cuda.set_rng_state_all([_str_to_bytes_tensor(s) for s in cuda[:n]])
