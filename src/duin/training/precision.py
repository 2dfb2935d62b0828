"""Numeric precision of training: ``fp32`` (default), ``bf16`` autocast, ``fp16`` autocast + scaler.

- ``fp32``: no autocast (bit-level parity with the paper's code).
- ``bf16``: :func:`torch.autocast` to bfloat16 on CPU (fast on CPUs with AVX512-BF16/AMX) and
  on CUDA; weights, optimizer state and the loss stay float32, no gradient scaling needed.
- ``fp16``: autocast to float16 with a :class:`torch.amp.GradScaler`, CUDA only.

The trainer asks this module for its autocast context and gradient scaler, so the policy lives
in one place.
"""

from __future__ import annotations

import contextlib
from typing import Literal

import torch

__all__ = ["PRECISIONS", "Precision", "autocast", "autocast_dtype", "grad_scaler"]

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")


def autocast_dtype(precision: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device`` (None for fp32).

    Parameters
    ----------
    precision : {"fp32", "bf16", "fp16"}
        Requested precision.
    device : torch.device or str
        Where training runs.

    Returns
    -------
    torch.dtype or None
        ``torch.bfloat16``, ``torch.float16`` or None (no autocast).

    Raises
    ------
    ValueError
        For an unknown precision, for fp16 off CUDA, or for bf16 on a CUDA device without bf16.
    """
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise ValueError(
            f"trainer.precision must be one of {', '.join(PRECISIONS)}, got {precision!r}"
        )
    if precision == "fp32":
        return None
    if precision == "fp16":
        if device.type != "cuda":
            raise ValueError(
                f"trainer.precision=fp16 needs a CUDA device (training runs on {device.type}); "
                "use bf16 on CPU"
            )
        return torch.float16
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("trainer.precision=bf16: this CUDA device does not support bfloat16")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"trainer.precision=bf16 is supported on cpu and cuda, not {device.type}")
    return torch.bfloat16


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """Context manager running the forward pass (and loss) in ``precision``.

    Parameters
    ----------
    precision : {"fp32", "bf16", "fp16"}
        Requested precision.
    device : torch.device or str
        Where the forward runs.

    Returns
    -------
    contextlib.AbstractContextManager
        :func:`torch.autocast` or a null context for fp32.
    """
    dtype = autocast_dtype(precision, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def grad_scaler(precision: str, device: torch.device | str) -> torch.amp.GradScaler:
    """Gradient scaler: active for fp16 only (a pass-through otherwise).

    Parameters
    ----------
    precision : {"fp32", "bf16", "fp16"}
        Requested precision.
    device : torch.device or str
        Where training runs.

    Returns
    -------
    torch.amp.GradScaler
        Enabled only when ``autocast_dtype`` is float16.
    """
    dtype = autocast_dtype(precision, device)
    return torch.amp.GradScaler("cuda", enabled=dtype is torch.float16)
