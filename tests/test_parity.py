"""Parity with the paper's code: every array of ``../shared/parity/*_io.npz``.

The fixture weights are converted with :func:`duin.models.convert.convert_reference` and loaded
with :func:`duin.load_model`; inputs are transposed from the reference's time-major ``(B, T, C)``
to duin's ``(B, C, T)``. Rule: float arrays ``max|ours - ref| <= 1e-5 * max|ref|``; integer and
bool arrays exactly equal. Every array in each file is accounted for (coverage is asserted) as
one of:

- a model array: computed by the duin model from the inputs; these alone are counted and reported
  (worst error per model, in the terminal summary and in results/parity.json);
- a derived array: checked, but computed by a helper below from model outputs or stored weights,
  or a one-hot/duplicate of a model array, so not counted;
- an input: fed to the model (signals, subject indices, channel and MAE masks, labels); comparing
  it with itself would prove nothing, so it is only declared.

Not computed by duin models, and therefore reproduced by small helpers here:

- ``contra_matrix`` / ``loss_contra``: the classifier's contrastive block is dead code in the
  reference (weight 0, output unused); duin omits it. The helper applies the stored
  ``contra_block`` weights to duin's encoder output.
- ``loss_cls_logged``: what the reference training script logs (renormalised sigmoid outputs);
  computed from duin's ``probs``.
- ``vq_dist_min`` / ``vq_dist_margin``: written by the fixture script, from duin's distances.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from duin.models.convert import convert_reference
from duin.models.registry import load_model

REL_TOL = 1e-5


class Checker:
    """Compares arrays with a fixture file and accounts for every array in it."""

    def __init__(self, io: np.lib.npyio.NpzFile) -> None:
        self.io = io
        self.inputs: set[str] = set()
        self.derived: set[str] = set()
        self.failures: list[str] = []
        self.errors: dict[str, float] = {}  # model arrays: relative error, or entries differing

    def input(self, *keys: str) -> None:
        """Declare fixture arrays that are inputs to the model (not compared)."""
        for key in keys:
            assert key in self.io, f"{key}: not in the fixture file"
            self.inputs.add(key)

    def check(self, key: str, ours: torch.Tensor | np.ndarray, derived: bool = False) -> None:
        """Compare ``ours`` with the fixture array ``key`` (``derived``: do not count it)."""
        ref = self.io[key]
        value = ours.detach().cpu().numpy() if isinstance(ours, torch.Tensor) else ours
        if derived:
            self.derived.add(key)
        if value.shape != ref.shape:
            self.failures.append(f"{key}: shape {value.shape} != {ref.shape}")
            error = math.inf
        elif ref.dtype.kind in "biu":
            error = int((value != ref).sum())
            if error:
                self.failures.append(f"{key}: {error} entries differ")
        else:
            scale = float(np.abs(ref).max())
            err = float(np.abs(value.astype(np.float64) - ref.astype(np.float64)).max())
            error = err / scale if scale else err
            if err > REL_TOL * scale:
                self.failures.append(f"{key}: max err {err:.3g} > {REL_TOL} * {scale:.3g}")
        if not derived:
            self.errors[key] = error

    def summary(self) -> dict:
        """Counts and worst errors of the model arrays."""
        floats = {k: e for k, e in self.errors.items() if self.io[k].dtype.kind not in "biu"}
        worst = max(floats, key=floats.__getitem__)
        return {
            "n_model_arrays": len(self.errors),
            "n_float_arrays": len(floats),
            "n_exact_arrays": len(self.errors) - len(floats),
            "worst_float": {"array": worst, "error": floats[worst]},
            "errors": dict(sorted(self.errors.items())),
            "derived_arrays_checked_not_counted": sorted(self.derived),
            "input_arrays_not_compared": sorted(self.inputs),
            "tolerance": REL_TOL,
            "passed": not self.failures,
        }

    def finish(self, report: dict, name: str) -> None:
        """Record the summary under ``name`` in the session report, then assert."""
        report[name] = self.summary()
        accounted = set(self.errors) | self.derived | self.inputs
        missing = sorted(set(self.io.files) - accounted)
        assert not missing, f"fixture arrays not accounted for: {missing}"
        assert not set(self.errors) & self.inputs, "an input was also counted as computed"
        assert not self.failures, "\n".join(self.failures)


def _bct(array: np.ndarray) -> torch.Tensor:
    """Reference (B, T, C) -> duin (B, C, T)."""
    return torch.from_numpy(array).transpose(1, 2).contiguous()


def _btc(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.transpose(1, 2)


@pytest.fixture(scope="module")
def checkpoints(parity_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("parity_ckpt")
    vqvae_state = parity_dir / "vqvae_state.npz"
    return {
        "vqvae": convert_reference("vqvae", vqvae_state, out / "vqvae"),
        "vqvae_counts": convert_reference(
            "vqvae",
            vqvae_state,
            out / "vqvae_counts",
            quantizer={"track_counts_in_eval": True},
        ),
        "mae": convert_reference("mae", [vqvae_state, parity_dir / "mae_state.npz"], out / "mae"),
        "cls": convert_reference(
            "cls", [vqvae_state, parity_dir / "cls_state.npz"], out / "cls", loss="reference"
        ),
    }


def _inputs(checker: Checker, prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    io = checker.io
    checker.input(prefix + "X", prefix + "subj_idx", prefix + "subj_id")
    # The one-hot subject is the index's one-hot: duin takes the index.
    assert np.array_equal(io[prefix + "subj_id"].argmax(1), io[prefix + "subj_idx"])
    return _bct(io[prefix + "X"]), torch.from_numpy(io[prefix + "subj_idx"])


def _distance_stats(model, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = z.reshape(-1, z.shape[-1])
    book = model.quantizer.codebook
    dist = flat.pow(2).sum(1, keepdim=True) + book.pow(2).sum(1)[None] - 2 * flat @ book.t()
    two = dist.topk(2, dim=1, largest=False).values
    return two[:, 0].view(z.shape[:-1]), (two[:, 1] - two[:, 0]).view(z.shape[:-1])


@torch.no_grad()
def test_vqvae_parity(parity_dir: Path, checkpoints: dict[str, Path], parity_report: dict) -> None:
    model = load_model(checkpoints["vqvae"])
    checker = Checker(np.load(parity_dir / "vqvae_io.npz"))
    io = checker.io
    for p in ("", "hi_"):
        x, subject = _inputs(checker, p)
        checker.input(p + "channel_mask")
        mask = torch.from_numpy(io[p + "channel_mask"])
        out = model(x, subject, channel_mask=mask, return_intermediates=True)
        dist_min, margin = _distance_stats(model, out["vq_z"])
        ours = {
            "X_h": _btc(out["x_h"]),
            "tokens": out["tokens"],
            "enc_in": out["enc_in"],
            "enc_blocks": out["enc_blocks"],
            "enc_out": out["enc_out"],
            "vq_pre": out["vq_pre"],
            "vq_ze": out["vq_z"],
            "vq_idx": out["codes"],
            "vq_codes": out["vq_codes"],
            "vq_zq_st": out["vq_st"],
            "vq_ln": out["vq_ln"],
            "vq_out": out["vq_out"],
            "dec_in": out["dec_in"],
            "dec_out": out["dec_out"],
            "rgs_out": _btc(out["head_out"]),
            "X_reconstr": _btc(out["reconstruction"]),
            "loss_rgs": out["loss_recon"],
            "loss_vq": out["loss_vq"],
            "loss_total": out["loss"],
        }
        for key, value in ours.items():
            if p + key in io:  # enc_blocks and rgs_out exist for the base set only
                checker.check(p + key, value)
        # Written by the fixture script from the distances; computed here from duin's.
        checker.check(p + "vq_dist_min", dist_min, derived=True)
        checker.check(p + "vq_dist_margin", margin, derived=True)
        # duin's quantize() path gives the same embeddings as the forward.
        torch.testing.assert_close(model.quantize(x, subject)["embeddings"], out["vq_out"])
    # counts: duin leaves them alone in eval unless asked to track them like the reference.
    assert torch.count_nonzero(model.quantizer.counts) == 0
    tracked = load_model(checkpoints["vqvae_counts"])
    checker.check("counts_before", tracked.quantizer.counts, derived=True)  # converted weights
    x, subject = _bct(io["X"]), torch.from_numpy(io["subj_idx"])
    tracked(x, subject, channel_mask=torch.from_numpy(io["channel_mask"]))
    checker.check("counts_after", tracked.quantizer.counts)
    checker.finish(parity_report, "vqvae")


@torch.no_grad()
def test_mae_parity(parity_dir: Path, checkpoints: dict[str, Path], parity_report: dict) -> None:
    model = load_model(checkpoints["mae"])
    model.set_target_tokenizer(load_model(checkpoints["vqvae"]))
    checker = Checker(np.load(parity_dir / "mae_io.npz"))
    io = checker.io
    for p in ("", "hi_"):
        x, subject = _inputs(checker, p)
        checker.input(p + "channel_mask", p + "mask")
        mask = torch.from_numpy(io[p + "mask"])
        # Targets from the attached frozen VQ-VAE ...
        out = model(x, subject, mask=mask, return_intermediates=True)
        checker.check(p + "c_true_idx", out["targets"])
        onehot = F.one_hot(out["targets"], model.config.n_codes).float()
        checker.check(p + "c_true", onehot, derived=True)
        assert torch.equal(out["mask"], mask)  # the model echoes the mask it was given
        # ... and given explicitly (the reference's c_true) give the same result.
        given = model(x, subject, mask=mask, targets=torch.from_numpy(io[p + "c_true_idx"]))
        torch.testing.assert_close(given["logits"], out["logits"])
        checker.check(p + "tokens", out["tokens"])
        checker.check(p + "views", out["views"])
        checker.check(p + "enc_views", out["enc_views"])
        checker.check(p + "logits", out["logits"])
        checker.check(p + "loss_cls", out["loss"])
        checker.check(p + "loss_total", out["loss"], derived=True)  # == loss_cls in the paper
    checker.finish(parity_report, "mae")


def _contrastive(state: np.lib.npyio.NpzFile, enc_out: torch.Tensor, labels: torch.Tensor):
    """The reference's dead UniCL block (weight 0), applied to duin's encoder output."""
    weight = torch.from_numpy(state["contra_block.proj_z.0.weight"])
    bias = torch.from_numpy(state["contra_block.proj_z.0.bias"])
    t = torch.from_numpy(state["contra_block.t"])
    z = F.normalize(F.linear(enc_out, weight, bias).flatten(1), dim=-1)
    matrix = z @ z.t() * t.exp()
    target = (labels[:, None] == labels[None, :]).float()

    def ce(logits: torch.Tensor) -> torch.Tensor:
        return -(target * torch.log(torch.softmax(logits, dim=-1) + 1e-12)).sum(-1).mean()

    return matrix, (ce(matrix) + ce(matrix.t())) / 2


def _logged_cross_entropy(probs: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """What the reference CLS script logs: renormalised probabilities and targets."""
    p = probs / probs.sum(-1, keepdim=True)
    t = onehot / onehot.sum(-1, keepdim=True)
    return -(t * torch.log(p + 1e-12)).sum(-1).mean()


@torch.no_grad()
def test_classifier_parity(
    parity_dir: Path, checkpoints: dict[str, Path], parity_report: dict
) -> None:
    model = load_model(checkpoints["cls"])
    assert model.config.loss == "reference"
    state = np.load(parity_dir / "cls_state.npz")
    checker = Checker(np.load(parity_dir / "cls_io.npz"))
    io = checker.io
    for p in ("", "hi_"):
        x, subject = _inputs(checker, p)
        checker.input(p + "channel_mask", p + "y_idx", p + "y_true")
        labels = torch.from_numpy(io[p + "y_idx"])
        onehot = F.one_hot(labels, model.config.n_classes).float()
        assert torch.equal(onehot, torch.from_numpy(io[p + "y_true"]).float())
        out = model(x, subject, labels=labels, return_intermediates=True)
        checker.check(p + "X_h", _btc(out["x_h"]))
        checker.check(p + "tokens", out["tokens"])
        checker.check(p + "enc_in", out["enc_in"])
        checker.check(p + "enc_out", out["enc_out"])
        checker.check(p + "hidden", out["hidden"])
        checker.check(p + "logits", out["logits"])
        checker.check(p + "probs", out["probs"])
        checker.check(p + "loss_cls", out["loss"])
        checker.check(p + "loss_total", out["loss"], derived=True)  # 1 * cls + 0 * contrastive
        logged = _logged_cross_entropy(out["probs"], onehot)
        checker.check(p + "loss_cls_logged", logged, derived=True)
        matrix, loss_contra = _contrastive(state, out["enc_out"], labels)
        checker.check(p + "contra_matrix", matrix, derived=True)
        checker.check(p + "loss_contra", loss_contra, derived=True)
    checker.finish(parity_report, "cls")


@torch.no_grad()
def test_exported_state_dict_matches_reference_keys(
    parity_dir: Path, checkpoints: dict[str, Path]
) -> None:
    from duin.models.convert import to_reference_state_dict

    ref = np.load(parity_dir / "vqvae_state.npz")
    exported = to_reference_state_dict(load_model(checkpoints["vqvae"]))
    assert set(exported) == set(ref.files)
    for key in ref.files:
        np.testing.assert_array_equal(exported[key].numpy(), ref[key], err_msg=key)
