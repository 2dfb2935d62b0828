"""Deployment export: ONNX (checked with onnxruntime) and TorchScript give duin's logits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from duin.cli import app
from duin.models.config import ClassifierConfig, VQVAEConfig
from duin.models.duin import DuINClassifier, DuINVQVAE
from duin.models.registry import save_model
from duin.workflows.export import export_model, export_onnx, export_torchscript

runner = CliRunner()


def _classifier(n_subjects: int = 1) -> DuINClassifier:
    torch.manual_seed(0)
    config = ClassifierConfig(
        n_channels=6,
        n_subjects=n_subjects,
        subject_channels=None if n_subjects == 1 else [6, 4],
        n_times=1000,
        n_blocks=2,
        head_hidden=[32],
        n_classes=7,
    )
    model = DuINClassifier(config)
    # Non-trivial BatchNorm statistics, so that the folded front end is really exercised.
    for norm in model.tokenizer.norms:
        norm.running_mean.normal_(0.0, 0.3)
        norm.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _inputs(model: DuINClassifier, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, model.config.n_channels, model.config.n_times, generator=gen)
    subject = torch.randint(0, model.config.n_subjects, (batch,), generator=gen)
    return x, subject


def _duin_logits(model: DuINClassifier, x: torch.Tensor, subject: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(x, subject, return_intermediates=True)["logits"].numpy()  # layer by layer


@pytest.mark.parametrize("n_subjects", [1, 2])
def test_onnx_logits_match_duin(tmp_path, n_subjects):
    ort = pytest.importorskip("onnxruntime")
    model = _classifier(n_subjects)
    path = export_onnx(model, tmp_path / "cls.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x", "subject"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    for batch in (1, 4):  # one graph, dynamic batch axis
        x, subject = _inputs(model, batch)
        ours = _duin_logits(model, x, subject)
        (theirs,) = session.run(["logits"], {"x": x.numpy(), "subject": subject.numpy()})
        assert theirs.shape == (batch, 7)
        assert np.abs(theirs - ours).max() <= 1e-4 * np.abs(ours).max()


def test_torchscript_logits_match_duin(tmp_path):
    model = _classifier(2)
    path = export_torchscript(model, tmp_path / "cls.pt")
    loaded = torch.jit.load(str(path))
    for batch in (1, 4):
        x, subject = _inputs(model, batch)
        ours = _duin_logits(model, x, subject)
        theirs = loaded(x, subject).detach().numpy()
        assert np.abs(theirs - ours).max() <= 1e-4 * np.abs(ours).max()


def test_export_cli_from_checkpoint(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = _classifier()
    ckpt = save_model(model, tmp_path / "ckpt")
    out = tmp_path / "cls.onnx"
    result = runner.invoke(app, ["export", str(ckpt), "--format", "onnx", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output
    x, subject = _inputs(model, 2)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (theirs,) = session.run(["logits"], {"x": x.numpy(), "subject": subject.numpy()})
    ours = _duin_logits(model, x, subject)
    assert np.abs(theirs - ours).max() <= 1e-4 * np.abs(ours).max()


def test_export_finds_the_selected_checkpoint_of_a_finetune_run(tmp_path):
    model = _classifier()
    save_model(model, tmp_path / "run" / "sub-01" / "seed-0" / "checkpoints" / "best")
    seed_dir = tmp_path / "run" / "sub-01" / "seed-0"
    (seed_dir / "result.json").write_text(
        json.dumps({"checkpoint": "sub-01/seed-0/checkpoints/best"})
    )
    out = export_model(seed_dir, "torchscript", tmp_path / "cls.pt")
    assert out.is_file()


def test_export_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        export_model(tmp_path / "missing", "onnx", tmp_path / "a.onnx")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a duin checkpoint"):
        export_model(tmp_path / "empty", "onnx", tmp_path / "a.onnx")
    vqvae = DuINVQVAE(VQVAEConfig(n_channels=4, n_times=1000, n_blocks=1, n_decoder_blocks=1))
    ckpt = save_model(vqvae, tmp_path / "vqvae")
    with pytest.raises(ValueError, match="only Du-IN classifiers"):
        export_model(ckpt, "onnx", tmp_path / "a.onnx")
    with pytest.raises(ValueError, match="unknown export format"):
        export_model(ckpt, "tflite", tmp_path / "a.tflite")
    result = runner.invoke(app, ["export", str(ckpt), "--out", str(tmp_path / "b.onnx")])
    assert result.exit_code != 0
    assert "only Du-IN classifiers" in result.output
    assert not (tmp_path / "a.onnx").exists() and not (tmp_path / "b.onnx").exists()
