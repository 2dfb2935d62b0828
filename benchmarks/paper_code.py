"""The paper's models (``../shared/reference/du-in-code``) holding duin's weights, for timing.

The paper's code is imported from outside the project, never copied: ``DUIN_REFERENCE_CODE``
or ``<repo>/../shared/reference/du-in-code``. Its models are built from its own parameter
classes with the fields its training scripts set (10 channels, 1 subject, paper defaults) and
loaded with duin's weights through :func:`duin.models.convert.to_reference_state_dict`, so both
sides compute the same function of the same weights.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from duin.models.convert import to_reference_state_dict
from duin.models.duin import DuINModel

REPO_ROOT = Path(__file__).resolve().parents[1]


def find_reference_code() -> Path | None:
    """Folder of the paper's code, or None when it is not on this machine.

    Returns
    -------
    Path or None
        ``$DUIN_REFERENCE_CODE`` if set, else ``<repo>/../shared/reference/du-in-code``.
    """
    env = os.environ.get("DUIN_REFERENCE_CODE")
    path = Path(env) if env else REPO_ROOT.parent / "shared" / "reference" / "du-in-code"
    return path if (path / "models" / "duin").is_dir() and (path / "params").is_dir() else None


class PaperCode:
    """The paper's model and parameter classes, imported from ``path``.

    Parameters
    ----------
    path : Path
        The paper's code (read only: no ``__pycache__`` is written there).

    Raises
    ------
    ImportError
        If its modules cannot be imported (e.g. ``einops`` missing).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        sys.dont_write_bytecode = True
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
        # The paper's top-level package is called ``models``, like this benchmark script when it
        # is imported as a module: set such a clash aside while importing, then restore it.
        clash = sys.modules.get("models")
        if clash is not None and not hasattr(clash, "__path__"):
            del sys.modules["models"]
        try:
            self.models: ModuleType = importlib.import_module("models.duin")
        finally:
            if clash is not None and not hasattr(clash, "__path__"):
                sys.modules["models"] = clash
        self.params: ModuleType = importlib.import_module("params.duin_params")
        self.torch_utils: ModuleType = importlib.import_module("utils.model.torch")

    def optimizer(self, model: nn.Module, lr: float = 1e-4) -> torch.optim.Optimizer:
        """The AdamW the paper's run_{vqvae,mae,cls}.py create (its decay/no-decay groups)."""
        cfg = {"name": "adamw", "lr": lr, "weight_decay": 0.05}
        with contextlib.redirect_stdout(io.StringIO()):  # it prints every parameter group
            return self.torch_utils.create_optimizer(cfg=cfg, model=model)

    def _params(self, kind: str, n_channels: int, n_times: int) -> Any:
        cls = {"vqvae": "duin_vqvae_params", "mae": "duin_mae_params", "cls": "duin_cls_params"}
        params = getattr(self.params, cls[kind])(dataset="seeg_he2023xuanwu")
        # The fields the paper's run_{vqvae,mae,cls}.py set from the data.
        m = params.model
        m.n_subjects = m.subj.n_subjects = 1
        m.n_channels = m.subj.d_input = n_channels
        m.seq_len = n_times
        n_tokens = n_times // m.tokenizer.seg_len
        m.tokenizer.token_len = m.encoder.emb_len = n_tokens
        if kind == "vqvae":
            m.desubj.n_subjects = 1
            m.desubj.d_output = n_channels
            m.decoder.emb_len = n_tokens
        if kind == "mae":
            m.vq.init_kmeans = False
        if kind == "cls":
            m.cls.d_feature = m.encoder.d_model * n_tokens
            m.cls.n_labels = 61
        return m

    def build(self, kind: str, ours: DuINModel) -> nn.Module:
        """The paper's ``duin_{kind}`` with the weights of ``ours``.

        Parameters
        ----------
        kind : {"vqvae", "mae", "cls"}
            Which model.
        ours : DuINModel
            duin model of the same kind (single subject) whose weights are copied.

        Returns
        -------
        nn.Module
            The paper's model. Its codex is marked initialised (no k-means on the first call, as
            in a trained checkpoint); the classifier's dead contrastive/VQ blocks keep their own
            random weights, as in the paper's pipeline.
        """
        cfg = ours.config
        params = self._params(kind, cfg.n_channels, cfg.n_times)
        model = getattr(self.models, f"duin_{kind}")(params)
        state = to_reference_state_dict(ours)
        missing, unexpected = model.load_state_dict(state, strict=False)
        dead = ("contra_block.", "vq_block.")
        bad = [k for k in missing if not (kind == "cls" and k.startswith(dead))]
        if bad or unexpected:
            raise RuntimeError(f"paper {kind}: missing {bad[:5]}, unexpected {unexpected[:5]}")
        if hasattr(model, "vq_block"):
            model.vq_block.codex.initted.fill_(1.0)
        return model
