"""Deployment export of a trained Du-IN classifier: ONNX (onnxruntime) and TorchScript.

The exported graph computes the classifier's ``logits`` for inputs ``x`` float32
``(batch, n_channels, n_times)`` and ``subject`` int64 ``(batch,)`` with a dynamic batch axis.
It is the inference path of :class:`~duin.models.duin.DuINClassifier` in eval mode, with the
subject layer and tokenizer folded into one affine map (same function, fewer operations).
Input checks (shapes, NaN/Inf, subject range) are not part of the graph: the caller's runtime
must pass valid inputs.

Example::

    duin export RUN/sub-01/seed-0 --format onnx --out cls.onnx
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from duin.models.duin import DuINClassifier
from duin.utils.io import atomic_write_bytes
from duin.workflows.rundir import RESULT_FILE

__all__ = ["FORMATS", "ClassifierGraph", "export_model", "export_onnx", "export_torchscript"]

FORMATS = ("onnx", "torchscript")


class ClassifierGraph(nn.Module):
    """``(x, subject) -> logits`` of an eval-mode classifier, front end folded, no input checks.

    Parameters
    ----------
    model : DuINClassifier
        The classifier (not modified; the folded front end is computed once here).
    """

    def __init__(self, model: DuINClassifier) -> None:
        super().__init__()
        if not isinstance(model, DuINClassifier):
            raise ValueError(
                f"only Du-IN classifiers (duin_cls) can be exported, got {type(model).__name__}"
            )
        self.model = model.eval()
        weight, bias = model.front_end_fold()
        self.register_buffer("fold_weight", weight.detach().clone())
        self.register_buffer("fold_bias", bias.detach().clone())

    def forward(self, x: torch.Tensor, subject: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, n_classes)`` of ``x (batch, n_channels, n_times)``, ``subject (batch,)``."""
        fold = (self.fold_weight, self.fold_bias)
        return self.model._compute(x, subject, None, False, fold)["logits"]


def _example(model: DuINClassifier, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    cfg = model.config
    device = model.time_table.device
    x = torch.randn(batch, cfg.n_channels, cfg.n_times, device=device)
    return x, torch.zeros(batch, dtype=torch.int64, device=device)


def export_onnx(model: DuINClassifier, out: str | Path, opset: int = 17) -> Path:
    """Write ``model`` as an ONNX graph (inputs ``x``, ``subject``; output ``logits``).

    Parameters
    ----------
    model : DuINClassifier
        Trained classifier.
    out : str or Path
        Output ``.onnx`` file (written atomically).
    opset : int
        ONNX opset version.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    ValueError
        If ``model`` is not a classifier.
    ImportError
        If the ``onnx`` package is missing (``pip install 'duin[export]'``).
    """
    try:
        import onnx  # noqa: F401  (the exporter needs it)
    except ImportError as err:
        raise ImportError("ONNX export needs the onnx package: pip install 'duin[export]'") from err
    graph = ClassifierGraph(model).cpu().float().eval()
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notice
        torch.onnx.export(
            graph,
            _example(graph.model),
            str(tmp),
            input_names=["x", "subject"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "batch"}, "subject": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    tmp.replace(out)
    return out


def export_torchscript(model: DuINClassifier, out: str | Path) -> Path:
    """Write ``model`` as a traced TorchScript module (``torch.jit.load`` runs it without duin).

    Parameters
    ----------
    model : DuINClassifier
        Trained classifier.
    out : str or Path
        Output ``.pt`` file (written atomically).

    Returns
    -------
    Path
        ``out``.
    """
    graph = ClassifierGraph(model).cpu().float().eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(graph, _example(graph.model), check_trace=False)
        # Trace at two batch sizes: a batch-size constant baked into the graph would fail here.
        for batch in (1, 3):
            traced(*_example(graph.model, batch))
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)  # deprecated in favour of torch.export, still supported
    out = Path(out)
    atomic_write_bytes(out, buffer.getvalue())
    return out


def export_model(checkpoint: str | Path, fmt: str, out: str | Path) -> Path:
    """Load a classifier checkpoint and export it.

    Parameters
    ----------
    checkpoint : str or Path
        A duin checkpoint directory (``model.safetensors`` + ``config.json``), a fine-tuning
        run's ``sub-XX/seed-N`` directory (its selected checkpoint), or a directory with
        ``checkpoints/best`` or ``checkpoints/last``.
    fmt : {"onnx", "torchscript"}
        Output format.
    out : str or Path
        Output file.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    ValueError
        Unknown format, or the checkpoint is not a classifier.
    FileNotFoundError
        No checkpoint at ``checkpoint``.
    """
    from duin.models.registry import load_model

    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    path = _find_checkpoint(Path(checkpoint))
    model = load_model(path)
    if not isinstance(model, DuINClassifier):
        raise ValueError(
            f"{path}: holds a {type(model).__name__}; only Du-IN classifiers (duin_cls) can be "
            "exported"
        )
    if fmt == "onnx":
        return export_onnx(model, out)
    return export_torchscript(model, out)


def _find_checkpoint(path: Path) -> Path:
    if (path / "config.json").is_file():
        return path
    result = path / RESULT_FILE  # a finetune run's sub-XX/seed-N directory
    if result.is_file():
        selected = json.loads(result.read_text()).get("checkpoint")
        if selected and (path.parent.parent / selected / "config.json").is_file():
            return path.parent.parent / selected
    for sub in ("checkpoints/best", "checkpoints/last", "best", "last"):
        if (path / sub / "config.json").is_file():
            return path / sub
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    raise FileNotFoundError(
        f"{path}: not a duin checkpoint (no config.json here or in checkpoints/best|last)"
    )
