"""Tests of the reference-checkpoint converter (shapes other than the paper's, bad files, CLI)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from duin.models.convert import convert_reference, main, to_reference_state_dict
from duin.models.registry import create_model, load_model

# A configuration unlike the paper's: 7 channels, 3 subjects, 20 tokens, 2 blocks, 5 classes.
OTHER = {"n_channels": 7, "n_subjects": 3, "n_times": 2000, "n_blocks": 2}


def _perturb(model: torch.nn.Module) -> None:
    """Random values everywhere (so that no tensor is trivially zero or one)."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point() and "codebook" not in name:
                tensor.add_(0.05 * torch.randn(tensor.shape, generator=gen))
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_var.uniform_(0.5, 2.0)


def _reference_files(model: torch.nn.Module, tmp_path: Path, fmt: str) -> Path:
    state = to_reference_state_dict(model)
    if fmt == "pth":
        path = tmp_path / "ref.pth"
        torch.save(state, path)
    else:
        path = tmp_path / "ref.npz"
        np.savez(path, **{k: v.numpy() for k, v in state.items()})
    return path


@pytest.mark.parametrize(
    ("kind", "name", "extra"),
    [
        ("vqvae", "duin_vqvae", {"n_decoder_blocks": 1, "quantizer": {"n_codes": 64}}),
        ("mae", "duin_mae", {"n_codes": 64}),
        ("cls", "duin_cls", {"n_classes": 5, "head_hidden": [32]}),
    ],
)
@pytest.mark.parametrize("fmt", ["pth", "npz"])
def test_round_trip_other_shapes(
    tmp_path: Path, kind: str, name: str, extra: dict, fmt: str
) -> None:
    torch.manual_seed(0)
    model = create_model(name, **OTHER, **extra)
    _perturb(model)
    model.eval()
    weights = _reference_files(model, tmp_path, fmt)
    converted = load_model(convert_reference(kind, weights, tmp_path / "out"))
    for key in ("n_channels", "n_subjects", "n_times", "n_blocks"):
        assert getattr(converted.config, key) == OTHER[key], key
    x = torch.randn(3, 7, 2000)
    subject = torch.tensor([0, 2, 1])
    kwargs = {"mask": torch.rand(3, 20) < 0.5, "targets": torch.zeros(3, 20, dtype=torch.int64)}
    kwargs = kwargs if kind == "mae" else {}
    with torch.no_grad():
        expected, got = model(x, subject, **kwargs), converted(x, subject, **kwargs)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, msg=key)
    for key, value in model.state_dict().items():
        assert torch.equal(converted.state_dict()[key], value), key


def test_merge_in_order_and_overrides(tmp_path: Path) -> None:
    torch.manual_seed(0)
    vqvae = create_model("vqvae", **OTHER, n_decoder_blocks=1)
    cls = create_model("cls", **OTHER, n_classes=4)
    base = tmp_path / "base.pth"
    torch.save(to_reference_state_dict(vqvae), base)
    head_only = {k: v for k, v in to_reference_state_dict(cls).items() if k.startswith("cls_block")}
    head_only["emb_time.time_encodings"] = to_reference_state_dict(cls)["emb_time.time_encodings"]
    head = tmp_path / "head.pth"
    torch.save(head_only, head)
    path = convert_reference(
        "cls", [base, head], tmp_path / "cls", subject_channels=[7, 5, 3], loss="reference"
    )
    model = load_model(path)
    assert model.config.subject_channels == [7, 5, 3] and model.config.loss == "reference"
    assert torch.equal(model.subject_layer.weight, vqvae.subject_layer.weight)
    assert torch.equal(model.head[-1].weight, cls.head[-1].weight)
    assert model.quantizer is None  # the reference classifier's vq_block is dead code


def test_not_a_plain_state_dict_raises(tmp_path: Path) -> None:
    model = create_model("cls", **OTHER)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"model": to_reference_state_dict(model), "epoch": 3}, wrapped)
    with pytest.raises(ValueError, match="plain state dict"):
        convert_reference("cls", wrapped, tmp_path / "out")
    pickled = tmp_path / "module.pth"
    torch.save(torch.nn.Linear(2, 2), pickled)  # a full pickle: refused by weights_only
    with pytest.raises(ValueError, match="plain state dict"):
        convert_reference("cls", pickled, tmp_path / "out")
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(ValueError, match="plain state dict"):
        convert_reference("cls", listed, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(FileNotFoundError):
        convert_reference("cls", tmp_path / "absent.pth", tmp_path / "out")
    with pytest.raises(ValueError, match="unknown reference model"):
        convert_reference("bert", wrapped, tmp_path / "out")


def test_missing_tensor_is_named(tmp_path: Path) -> None:
    state = to_reference_state_dict(create_model("cls", **OTHER))
    del state["encoder.1.xfmr_blocks.1.ffn.fc2.0.bias"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"ffn\.fc2\.0\.bias"):
        convert_reference("cls", path, tmp_path / "out")


def test_cli_main(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = tmp_path / "ref.pth"
    torch.save(to_reference_state_dict(create_model("mae", **OTHER, n_codes=32)), weights)
    code = main(["--model", "mae", "--weights", str(weights), "--out", str(tmp_path / "m")])
    assert code == 0 and (tmp_path / "m" / "model.safetensors").is_file()
    assert load_model(tmp_path / "m").config.n_codes == 32
    code = main(["--model", "mae", "--weights", str(tmp_path / "nope.pth"), "--out", "x"])
    assert code == 2 and "not found" in capsys.readouterr().err


def test_cli_on_parity_fixtures(parity_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cls"
    args = ["--model", "cls", "--weights", str(parity_dir / "vqvae_state.npz")]
    args += [str(parity_dir / "cls_state.npz"), "--out", str(out)]
    assert main(args) == 0
    model = load_model(out)
    assert model.config.n_tokens == 30 and model.config.n_classes == 61
