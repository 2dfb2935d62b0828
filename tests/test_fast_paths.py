"""Inference fast paths compute the same function: the folded front end (eval mode)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from duin.models.config import ClassifierConfig, VQVAEConfig
from duin.models.convert import convert_reference
from duin.models.duin import DuINClassifier, DuINModel, DuINVQVAE
from duin.models.registry import load_model


def _with_statistics(model: DuINModel) -> DuINModel:
    for norm in model.tokenizer.norms:
        norm.running_mean.normal_(0.0, 0.3)
        norm.running_var.uniform_(0.5, 2.0)
        norm.weight.data.normal_(1.0, 0.1)
        norm.bias.data.normal_(0.0, 0.1)
    with torch.no_grad():
        model.subject_layer.bias.normal_(0.0, 0.05)
    return model.eval()


def _layer_by_layer(model: DuINModel, x: torch.Tensor, subject: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.encoder_input(x, subject, fold=None)


@pytest.mark.parametrize(
    ("n_channels", "subjects", "composed"),
    [(6, [0, 2, 1, 1, 0], False), (6, [0] * 5, True), (20, [0] * 5, False)],
)
def test_folded_front_end_equals_layers(n_channels, subjects, composed):
    torch.manual_seed(0)
    n_subjects = max(subjects) + 1
    config = ClassifierConfig(
        n_channels=n_channels,
        n_subjects=n_subjects,
        subject_channels=None if n_subjects == 1 else [n_channels, 4, 5],
        n_times=1000,
        n_blocks=1,
    )
    model = _with_statistics(DuINClassifier(config))
    assert model.fold_includes_subject_layer == composed
    x = torch.randn(5, n_channels, 1000)
    subject = torch.tensor(subjects)
    ref = _layer_by_layer(model, x, subject)
    fast = model.embed_folded(x, subject, model.front_end_fold())
    assert torch.allclose(fast, ref, rtol=0, atol=1e-5 * ref.abs().max().item())
    with torch.no_grad():
        logits = model(x, subject)["logits"]  # eval: folded
        slow = model(x, subject, return_intermediates=True)["logits"]  # layer by layer
    assert torch.allclose(logits, slow, rtol=0, atol=1e-5 * slow.abs().max().item())


def test_fold_cache_follows_weight_changes_and_training_mode():
    torch.manual_seed(0)
    model = _with_statistics(DuINClassifier(ClassifierConfig(n_times=1000, n_blocks=1)))
    x, subject = torch.randn(2, 10, 1000), torch.zeros(2, dtype=torch.int64)
    first = model.front_end_fold()
    assert model.front_end_fold() is first  # cached
    with torch.no_grad():
        model.tokenizer.convs[1].weight.mul_(1.5)  # e.g. an optimizer step
    assert model.front_end_fold() is not first
    ref = _layer_by_layer(model, x, subject)
    fast = model.embed_folded(x, subject, model.front_end_fold())
    assert torch.allclose(fast, ref, rtol=0, atol=1e-5 * ref.abs().max().item())
    model.train()  # training uses batch statistics: no fold
    assert model._inference_fold() is None


def test_eval_mode_training_step_reaches_the_front_end():
    """With gradients on (an eval-mode step, dropouts off) the front end is not folded."""
    torch.manual_seed(0)
    model = _with_statistics(DuINClassifier(ClassifierConfig(n_times=1000, n_blocks=1)))
    x, subject = torch.randn(2, 10, 1000), torch.zeros(2, dtype=torch.int64)
    assert model._inference_fold() is None
    model(x, subject, labels=torch.tensor([0, 1]))["loss"].backward()
    for module in (model.subject_layer, model.tokenizer):
        for name, param in module.named_parameters():
            assert param.grad is not None and bool(param.grad.abs().sum() > 0), name
    with torch.no_grad():
        assert model._inference_fold() is not None
    model.requires_grad_(False)  # a frozen front end folds with gradients on too
    assert model._inference_fold() is not None


def test_target_tokenizer_codes_equal_layer_by_layer():
    torch.manual_seed(0)
    vqvae = _with_statistics(DuINVQVAE(VQVAEConfig(n_times=1000, n_blocks=1, n_decoder_blocks=1)))
    vqvae.quantizer.initted.fill_(True)
    x, subject = torch.randn(4, 10, 1000), torch.zeros(4, dtype=torch.int64)
    codes = vqvae.tokenize(x, subject)
    DuINModel.use_folded_front_end = False
    try:
        slow = vqvae.tokenize(x, subject)
    finally:
        DuINModel.use_folded_front_end = True
    assert torch.equal(codes, slow)


def test_fast_path_logits_match_the_paper_code(parity_dir: Path, tmp_path: Path):
    """The eval fast path (folded front end) reproduces the paper's logits at 1e-5."""
    ckpt = convert_reference(
        "cls",
        [parity_dir / "vqvae_state.npz", parity_dir / "cls_state.npz"],
        tmp_path / "cls",
        loss="reference",
    )
    model = load_model(ckpt).eval()
    io = np.load(parity_dir / "cls_io.npz")
    for prefix in ("", "hi_"):
        x = torch.from_numpy(io[prefix + "X"]).transpose(1, 2).contiguous()
        subject = torch.from_numpy(io[prefix + "subj_idx"])
        with torch.inference_mode():
            logits = model(x, subject)["logits"].numpy()
        ref = io[prefix + "logits"]
        err = np.abs(logits.astype(np.float64) - ref).max()
        assert err <= 1e-5 * np.abs(ref).max(), f"{prefix}logits: {err}"
