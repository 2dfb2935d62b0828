"""LaBraM-PopT: channels identified by electrode position, and the errors without coordinates."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from duin.models.baselines import LaBraMPopTConfig, MissingCoordinatesError
from duin.models.registry import create_model, load_model, save_model
from duin.workflows.bench.cells import _check_coordinates

TINY = {"n_blocks": 1, "n_heads": 2, "d_head": 16, "d_ff": 32, "conv_filters": [4, 4, 4]}
TINY |= {"norm_groups": 2, "n_channels": 4, "n_classes": 5, "head_hidden": [8]}
POSITIONS = [[0.01, 0.0, 0.0], [0.0, 0.02, 0.0], [0.0, 0.0, 0.03], [-0.02, 0.01, 0.005]]


def _model(positions=POSITIONS, seed: int = 0):
    torch.manual_seed(seed)
    return create_model("labram_popt", LaBraMPopTConfig.quick(**TINY, channel_positions=positions))


def test_forward_backward_reaches_the_position_encoding():
    model = _model()
    x = torch.randn(3, 4, 3000)
    out = model(x, labels=torch.tensor([0, 1, 4]))
    assert out["logits"].shape == (3, 5)
    out["loss"].backward()
    grad = model.backbone.position_encoding.proj.weight.grad
    assert grad is not None and bool(grad.abs().sum() > 0)
    assert not hasattr(model.backbone, "channel_embedding")  # the per-slot table is gone


def test_channels_are_identified_by_position_not_slot():
    """Reordering the inputs together with their positions reorders the backbone's tokens."""
    model = _model().eval()
    perm = [2, 0, 3, 1]
    moved = _model([POSITIONS[i] for i in perm]).eval()
    moved.load_state_dict(model.state_dict())
    x = torch.randn(2, 4, 3000)
    with torch.no_grad():
        features = model.backbone(model.prepare(x, None))  # (B, C, N, D)
        features_moved = moved.backbone(moved.prepare(x[:, perm], None))
    torch.testing.assert_close(features_moved, features[:, perm], rtol=1e-4, atol=1e-5)
    # ... while other positions for the same inputs give other tokens
    other = _model([[p[0] + 0.01, p[1], p[2]] for p in POSITIONS]).eval()
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert not torch.allclose(other.backbone(other.prepare(x, None)), features, atol=1e-4)


def test_positions_travel_with_the_checkpoint(tmp_path):
    model = _model().eval()
    save_model(model, tmp_path / "ckpt")
    loaded = load_model(tmp_path / "ckpt").eval()
    assert loaded.config.channel_positions == POSITIONS
    x = torch.randn(2, 4, 3000)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)["logits"], model(x)["logits"])


def test_no_coordinates_is_one_clear_error():
    with pytest.raises(MissingCoordinatesError, match="needs electrode coordinates"):
        create_model("labram_popt", LaBraMPopTConfig.quick(**TINY))
    with pytest.raises(ValueError, match=r"one \[x, y, z\] per channel \(4\)"):
        LaBraMPopTConfig.quick(**TINY, channel_positions=POSITIONS[:3])
    data = SimpleNamespace(
        channel_info=lambda s: ({}, {"A1": [0.0, 0.0, 0.0]} if s == "01" else {}),
        loaded=SimpleNamespace(source="/data/released"),
    )
    _check_coordinates(data, ["01"])
    with pytest.raises(ValueError, match=r"subject\(s\) \['02'\] of /data/released have none"):
        _check_coordinates(data, ["01", "02"])
