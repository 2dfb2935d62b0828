"""Training-step parity with the paper's code: K optimiser steps of ours vs the reference's.

Both sides start from the parity fixture weights (``../shared/parity``), see the same batches
(and, for the MAE, the same masks and targets) and follow the paper code's recipe:

- AdamW, betas (0.9, 0.999), eps 1e-8 (``utils/model/torch/optim_factory.py``), weight decay
  0.01 (VQ-VAE) / 0.05 (MAE, classifier) on every trainable tensor with ``ndim >= 2`` not named
  ``*.bias``. Ours: :func:`duin.models.duin.optimizer_param_groups` with ``reference=True`` (the
  subject layers' shift matrices are 2-D ``Linear.weight`` tensors there, so they are decayed).
- LR set once per epoch by warm-up + half-cosine (``params.iteration``); ours
  :func:`duin.training.schedule.lr_at_epoch` with the LR values of ``configs/paper.yaml``. One
  optimiser step per epoch here, over warm-up and cosine epochs.
- k-means init of the codex on the first training batch (``init_mode="first_batch"``; both
  draw their initial centres with the same ``torch.randint`` call, so seeding torch identically
  right before the first forward gives the same draw), then EMA codex updates.
- No gradient clipping, fp32, ``zero_grad -> backward -> step`` (``run_*.py::_train``).

Dropout: the models run in ``train()`` mode (BatchNorm on batch statistics, the VQ EMA on) with
every dropout probability set to 0 on both sides; the classifier is also stepped in ``eval()``
mode with the paper's dropouts (off in eval).

Precision: both sides run in float64. In float32 they agree except along directions whose true
gradient is zero (conv biases before training-mode BatchNorm, the key LayerNorm biases under the
softmax): there each code's rounding noise (~1e-10) becomes an Adam update of up to ~1 % of the
LR, differently in each, and the BatchNorm running means follow (measured: conv-bias
differences up to 5e-4 after 4 steps); float64 removes that noise, not any difference in the
recipe.

Rule: every float tensor ``max|ours - ref| <= 1e-5 * max|ref|`` (losses each step; parameters,
codebook and BatchNorm statistics after the last step). The paper code is imported from
``$DUIN_REFERENCE_CODE`` or ``../shared/reference/du-in-code``; the tests skip when it or the
fixtures are absent.

Known recipe differences (ours by default, the paper's code's available and used here):
betas (0.9, 0.99) in ``configs/paper.yaml`` (the paper's tables) vs (0.9, 0.999) in the code;
subject-layer shifts not decayed unless ``protocol: reference``; the codex k-means pools
batches until it has ``n_codes`` vectors unless ``init_mode: first_batch``.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from duin.models.convert import convert_reference, from_reference_state_dict
from duin.models.duin import optimizer_param_groups
from duin.models.registry import load_model
from duin.training.schedule import lr_at_epoch
from duin.training.stages import load_stage_config

REL_TOL = 1e-5
ABS_FLOOR = 1e-12  # scale floor: loss_vq is ~1e-17 right after a k-means on the batch itself
REPO_ROOT = Path(__file__).resolve().parents[1]
K_EPOCHS, K_WARMUP = 4, 2  # one optimiser step per epoch: 2 warm-up + 2 cosine epochs
PAPER_BETAS = (0.9, 0.999)  # utils/model/torch/optim_factory.py of the paper's code


def _reference_dir() -> Path | None:
    env = os.environ.get("DUIN_REFERENCE_CODE")
    path = Path(env) if env else REPO_ROOT.parent / "shared" / "reference" / "du-in-code"
    return path if (path / "models" / "duin" / "duin.py").is_file() else None


@pytest.fixture(scope="module")
def ref() -> SimpleNamespace:
    """The paper's model and params classes (imported from its own code)."""
    path = _reference_dir()
    if path is None:
        pytest.skip(
            "the paper's code is not available: set DUIN_REFERENCE_CODE or place it in "
            "../shared/reference/du-in-code"
        )
    pytest.importorskip("einops", reason="the paper's code needs einops (pip install einops)")
    old_path, old_bytecode = list(sys.path), sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # never write __pycache__ into the reference tree
    sys.path.insert(0, str(path))
    try:
        with warnings.catch_warnings():
            # Its regex strings have invalid escapes, warned about when it is compiled.
            warnings.filterwarnings("ignore", "invalid escape sequence", DeprecationWarning)
            duin_ref = importlib.import_module("models.duin.duin")
            params = importlib.import_module("params.duin_params")
            optim = importlib.import_module("utils.model.torch")
    finally:
        sys.path[:] = old_path
        sys.dont_write_bytecode = old_bytecode
    return SimpleNamespace(models=duin_ref, params=params, optim=optim)


def _overlay(dst: Any, src: dict[str, Any]) -> None:
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _overlay(dst[key], value)
        else:
            dst[key] = value


def _ref_params(ref: SimpleNamespace, parity_dir: Path, kind: str, dropout: bool) -> Any:
    """The paper's params object for ``kind``, model fields as the fixtures were made."""
    cls = {"vqvae": "duin_vqvae_params", "mae": "duin_mae_params", "cls": "duin_cls_params"}[kind]
    params = getattr(ref.params, cls)("seeg_he2023xuanwu")
    manifest = json.loads((parity_dir / "manifest.json").read_text())
    _overlay(params.model, manifest["hyperparameters"][kind])
    if not dropout:
        for stack in ("encoder", "decoder"):
            if stack in params.model:
                params.model[stack]["attn_dropout"] = 0.0
                params.model[stack]["proj_dropout"] = 0.0
                params.model[stack]["ff_dropout"] = [0.0, 0.0]
    params.train.n_epochs, params.train.warmup_epochs = K_EPOCHS, K_WARMUP
    return params


def _state(parity_dir: Path, kind: str) -> dict[str, torch.Tensor]:
    """Full reference state dict of ``kind`` assembled as the parity README says."""
    vq = np.load(parity_dir / "vqvae_state.npz")
    if kind == "vqvae":
        return {k: torch.from_numpy(vq[k]) for k in vq.files}
    shared = ("subj_block.", "tokenizer.", "encoder.")
    state = {k: torch.from_numpy(vq[k]) for k in vq.files if k.startswith(shared)}
    extra = np.load(parity_dir / f"{kind}_state.npz")
    state.update({k: torch.from_numpy(extra[k]) for k in extra.files})
    return state


def _weights(parity_dir: Path, kind: str) -> list[Path]:
    files = [parity_dir / "vqvae_state.npz"]
    return files if kind == "vqvae" else [*files, parity_dir / f"{kind}_state.npz"]


def _ours(parity_dir: Path, kind: str, out: Path, dropout: bool, **overrides: Any) -> Any:
    if not dropout:
        overrides.update(attn_dropout=0.0, ff_dropout=0.0)
    return load_model(convert_reference(kind, _weights(parity_dir, kind), out, **overrides))


def _recipe(stage: str, ref_params: Any) -> Any:
    """Our optimiser recipe: configs/paper.yaml with the paper code's betas, K epochs."""
    cfg = load_stage_config(
        stage,
        "paper",
        [
            f"optim.betas=[{PAPER_BETAS[0]}, {PAPER_BETAS[1]}]",
            f"optim.epochs={K_EPOCHS}",
            f"optim.warmup_epochs={K_WARMUP}",
        ],
    ).optim
    lr_min, lr_max = ref_params.train.lr_factors
    assert (cfg.lr, cfg.lr_min) == pytest.approx((lr_max, lr_min), rel=1e-12), (
        f"paper.yaml {stage} LR ({cfg.lr}, {cfg.lr_min}) != the code's ({lr_max}, {lr_min})"
    )
    return cfg


def _check_decay_groups(ours: Any, theirs: Any, groups: list[dict], factory: Any) -> None:
    """Our decayed tensors are exactly those the paper's optimiser factory decays."""
    theirs_groups = factory.get_param_groups(theirs, weight_decay=1.0)
    decayed = {id(p) for g in theirs_groups if g["weight_decay"] > 0 for p in g["params"]}
    marks = dict(theirs.state_dict())
    for name, param in theirs.named_parameters():
        if param.requires_grad:
            marks[name] = torch.full_like(param, float(id(param) in decayed))
    mapped = from_reference_state_dict(ours, marks)
    ours_decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    wrong = [
        name
        for name, param in ours.named_parameters()
        if param.requires_grad and bool(mapped[name].bool().all()) != (id(param) in ours_decayed)
    ]
    assert not wrong, f"decay groups differ from the paper's for {wrong}"


class Pair:
    """Our model and the reference model, each with its own AdamW, stepped in lock-step."""

    def __init__(
        self, ref: SimpleNamespace, ours: Any, theirs: Any, stage: str, ref_params: Any, wd: float
    ) -> None:
        self.ours, self.theirs, self.ref_params = ours.to(DTYPE), theirs.to(DTYPE), ref_params
        self.optim = _recipe(stage, ref_params)
        assert self.optim.weight_decay == wd, f"paper.yaml {stage} weight decay"
        assert self.optim.grad_clip is None  # the paper's code never clips
        groups = [g for g in optimizer_param_groups(ours, wd, reference=True) if g["params"]]
        _check_decay_groups(ours, theirs, groups, ref.optim)
        self.opt_ours = torch.optim.AdamW(
            groups, lr=self.optim.lr, betas=tuple(self.optim.betas), eps=self.optim.eps
        )
        # The paper's own optimiser factory (run_*.py: create_optimizer(cfg, model)).
        self.opt_theirs = ref.optim.create_optimizer(
            cfg={"name": "adamw", "lr": ref_params.train.lr_i, "weight_decay": wd}, model=theirs
        )

    def set_epoch(self, epoch: int) -> None:
        o = self.optim
        lr = lr_at_epoch(
            epoch, lr_max=o.lr, lr_min=o.lr_min, warmup=o.warmup_epochs, epochs=o.epochs
        )
        for group in self.opt_ours.param_groups:
            group["lr"] = lr
        self.ref_params.iteration(iteration=epoch)
        for group in self.opt_theirs.param_groups:
            group["lr"] = self.ref_params.train.lr_i
        assert lr == pytest.approx(self.ref_params.train.lr_i, rel=1e-12), f"LR, epoch {epoch}"

    def step(self, loss_ours: torch.Tensor, loss_theirs: torch.Tensor) -> None:
        for opt, loss in ((self.opt_ours, loss_ours), (self.opt_theirs, loss_theirs)):
            opt.zero_grad()
            loss.backward()
            opt.step()


def _close(name: str, ours: torch.Tensor, theirs: torch.Tensor, failures: list[str]) -> None:
    a, b = ours.detach().double(), theirs.detach().double()
    if a.shape != b.shape:
        failures.append(f"{name}: shape {tuple(a.shape)} != {tuple(b.shape)}")
        return
    if not a.is_floating_point():
        if not torch.equal(a, b):
            failures.append(f"{name}: {int((a != b).sum())} entries differ")
        return
    scale = float(b.abs().max()) if b.numel() else 0.0
    err = float((a - b).abs().max()) if b.numel() else 0.0
    if err > REL_TOL * max(scale, ABS_FLOOR):
        failures.append(f"{name}: max err {err:.3g} > {REL_TOL} * {scale:.3g}")


def _compare_states(ours: Any, theirs: Any, skip: tuple[str, ...] = ()) -> list[str]:
    """Every tensor of ours against the reference's, mapped to our names and layouts."""
    mapped = from_reference_state_dict(ours, theirs.state_dict())
    own = ours.state_dict()
    failures: list[str] = []
    for key, value in mapped.items():
        if key.endswith(skip):
            continue
        _close(key, own[key], value, failures)
    return failures


def _batches(parity_dir: Path, kind: str, n: int) -> list[dict[str, torch.Tensor]]:
    """The fixture batch, then ``n - 1`` fresh z-scored batches of the same shape."""
    io = np.load(parity_dir / f"{kind}_io.npz")
    x0 = io["X"]
    rng = np.random.default_rng(2024)
    out = []
    for i in range(n):
        x = x0 if i == 0 else rng.standard_normal(x0.shape).cumsum(axis=1)
        x = (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True)
        batch = {
            "X": torch.from_numpy(x.astype(np.float32)).to(
                DTYPE
            ),  # (B, T, C), the reference's layout
            "subj_idx": torch.from_numpy(io["subj_idx"]),
            "subj_id": torch.from_numpy(io["subj_id"]).to(DTYPE),
        }
        if kind == "cls":
            batch["labels"] = torch.from_numpy((io["y_idx"] + 7 * i) % 61)
        out.append(batch)
    return out


def _bct(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(1, 2).contiguous()


DTYPE = torch.float64


@pytest.mark.parametrize("n_codes", [128, 2048])
def test_vqvae_training_steps(
    ref: SimpleNamespace, parity_dir: Path, tmp_path: Path, n_codes: int
) -> None:
    """VQ-VAE: k-means init on the first batch, EMA codex, AdamW steps (train mode).

    With 2048 codes and 160 tokens per batch the k-means draws its centres with replacement
    (as in the paper's own runs: 32 x 40 = 1280 tokens < 2048 codes), so the codex holds exact
    duplicate codes; which duplicate a token picks is then decided by float rounding of the
    distance matmul, in the paper's code as in ours, and the two codexes part after the first
    EMA update. That case is checked for the k-means init and the first step; the 128-code
    codex (the first 128 rows of the fixture codex; centres drawn without replacement, no
    duplicates) is checked over all K steps.
    """
    params = _ref_params(ref, parity_dir, "vqvae", dropout=False)
    params.model.vq.codex_size = n_codes
    theirs = ref.models.duin_vqvae(params.model)
    state = _state(parity_dir, "vqvae")
    state["vq_block.codex.embeddings"] = state["vq_block.codex.embeddings"][:n_codes]
    state["vq_block.counts"] = state["vq_block.counts"][:n_codes]
    state["vq_block.codex.initted"] = torch.zeros(1)  # k-means on the first training batch
    theirs.load_state_dict(state, strict=True)
    weights = tmp_path / "vqvae_state.npz"
    np.savez(weights, **{k: v.numpy() for k, v in state.items()})
    overrides = {"attn_dropout": 0.0, "ff_dropout": 0.0, "quantizer": {"init_mode": "first_batch"}}
    ours = load_model(convert_reference("vqvae", weights, tmp_path / "vqvae", **overrides))
    assert not bool(ours.quantizer.initted) and float(theirs.vq_block.codex.initted) == 0
    pair = Pair(ref, ours, theirs, "vqvae", params, wd=0.01)
    ours.train()
    theirs.train()
    failures: list[str] = []
    codebook0 = ours.quantizer.codebook.clone()
    n_steps = K_EPOCHS if n_codes == 128 else 1
    for epoch, batch in enumerate(_batches(parity_dir, "vqvae", n_steps)):
        pair.set_epoch(epoch)
        mask = torch.ones(batch["X"].shape[0], batch["X"].shape[2], dtype=torch.bool)
        torch.manual_seed(1000 + epoch)  # the k-means draw (first batch) on both sides
        _, loss_ref = theirs((batch["X"], batch["subj_id"], mask))
        torch.manual_seed(1000 + epoch)
        out = ours(_bct(batch["X"]), batch["subj_idx"], channel_mask=mask)
        for our_key, ref_key in (("loss", "total"), ("loss_recon", "rgs"), ("loss_vq", "vq")):
            _close(f"step {epoch} {our_key}", out[our_key], loss_ref[ref_key], failures)
        if epoch == 0:
            assert bool(ours.quantizer.initted) and float(theirs.vq_block.codex.initted) == 1
            assert not torch.equal(ours.quantizer.codebook, codebook0), "k-means did not run"
            _close(
                "k-means + first EMA codebook",
                ours.quantizer.codebook,
                theirs.vq_block.codex.embeddings,
                failures,
            )
        pair.step(out["loss"], loss_ref["total"])
    # ``counts`` is a logging statistic the reference zeroes every epoch (init_counts).
    failures += _compare_states(ours, theirs, skip=("quantizer.counts",))
    assert not failures, "\n".join(failures)


def test_mae_training_steps(ref: SimpleNamespace, parity_dir: Path, tmp_path: Path) -> None:
    """MAE: same masks (the paper's draw) and targets (frozen VQ-VAE), AdamW steps."""
    vq_params = _ref_params(ref, parity_dir, "vqvae", dropout=False)
    vqkd = ref.models.duin_vqvae(vq_params.model)
    vqkd.load_state_dict(_state(parity_dir, "vqvae"), strict=True)
    vqkd.to(DTYPE).eval()  # run_mae.py: "We should set vqkd-model into evaluation mode!!!"
    params = _ref_params(ref, parity_dir, "mae", dropout=False)
    theirs = ref.models.duin_mae(params.model)
    theirs.load_state_dict(_state(parity_dir, "mae"), strict=True)
    masks: list[torch.Tensor] = []
    draw = theirs.gen_mask

    def recording_gen_mask(*args: Any, **kwargs: Any) -> torch.Tensor:
        masks.append(draw(*args, **kwargs))
        return masks[-1]

    theirs.gen_mask = recording_gen_mask
    ours = _ours(parity_dir, "mae", tmp_path / "mae", dropout=False)
    ours.set_target_tokenizer(_ours(parity_dir, "vqvae", tmp_path / "vq", dropout=False))
    pair = Pair(ref, ours, theirs, "mae", params, wd=0.05)
    ours.train()
    theirs.train()
    failures: list[str] = []
    for epoch, batch in enumerate(_batches(parity_dir, "mae", K_EPOCHS)):
        pair.set_epoch(epoch)
        with torch.no_grad():
            c_true = vqkd.quantize((batch["X"], batch["subj_id"]))[-1]
        torch.manual_seed(2000 + epoch)
        c_pred, loss_ref = theirs((batch["X"], c_true, batch["subj_id"]))
        # The step uses the paper's mask tensor itself; our default draw gives the same mask
        # from the same RNG state (for float32 tokens: the paper draws noise in their dtype).
        with torch.random.fork_rng():
            torch.manual_seed(2000 + epoch)
            ours_mask = ours.random_mask(batch["X"].shape[0])
            torch.manual_seed(2000 + epoch)
            paper_mask = draw(torch.zeros(*ours_mask.shape, 1), mask_ratio=params.model.mask_ratio)
        assert torch.equal(ours_mask, paper_mask), f"step {epoch}: mask draws differ"
        out = ours(_bct(batch["X"]), batch["subj_idx"], mask=masks[-1])
        assert torch.equal(out["targets"], c_true.argmax(-1)), f"step {epoch}: targets differ"
        _close(f"step {epoch} loss", out["loss"], loss_ref["total"], failures)
        _close(f"step {epoch} logits", out["logits"], c_pred, failures)
        pair.step(out["loss"], loss_ref["total"])
    failures += _compare_states(ours, theirs)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_classifier_training_steps(
    ref: SimpleNamespace, parity_dir: Path, tmp_path: Path, mode: str
) -> None:
    """Classifier (the paper's sigmoid + cross-entropy loss): AdamW steps in train/eval mode."""
    dropout = mode == "eval"  # eval: the paper's dropouts, switched off by eval()
    params = _ref_params(ref, parity_dir, "cls", dropout=dropout)
    theirs = ref.models.duin_cls(params.model)
    theirs.load_state_dict(_state(parity_dir, "cls"), strict=True)
    ours = _ours(parity_dir, "cls", tmp_path / "cls", dropout=dropout, loss="reference")
    pair = Pair(ref, ours, theirs, "cls", params, wd=0.05)
    ours.train(mode == "train")
    theirs.train(mode == "train")
    failures: list[str] = []
    for epoch, batch in enumerate(_batches(parity_dir, "cls", K_EPOCHS)):
        pair.set_epoch(epoch)
        y_true = F.one_hot(batch["labels"], 61).to(DTYPE)
        y_pred, loss_ref = theirs((batch["X"], y_true, batch["subj_id"]))
        out = ours(_bct(batch["X"]), batch["subj_idx"], labels=batch["labels"])
        _close(f"step {epoch} loss", out["loss"], loss_ref["total"], failures)
        _close(f"step {epoch} probs", torch.sigmoid(out["logits"]), y_pred, failures)
        pair.step(out["loss"], loss_ref["total"])
    failures += _compare_states(ours, theirs)
    assert not failures, "\n".join(failures)
