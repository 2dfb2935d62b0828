"""The VQ-VAE's optional band-power target (``power_loss_weight``; not in the paper)."""

from __future__ import annotations

import math

import pytest
import torch

from duin.models.config import VQVAEConfig
from duin.models.duin import DuINVQVAE, band_log_power

TINY = dict(
    n_blocks=1,
    n_decoder_blocks=1,
    n_heads=2,
    d_head=8,
    d_ff=16,
    tokenizer_filters=[8, 8, 16],
    decoder_filters=[8, 8, 8, 8, 16],
    quantizer=dict(n_codes=16, d_code=8),
)


def test_band_log_power_finds_the_band_of_a_sinusoid():
    t = torch.arange(4000) / 1000.0
    x = torch.stack([torch.sin(2 * math.pi * 20 * t), torch.sin(2 * math.pi * 120 * t)])[None]
    power = band_log_power(x, 100, [[1, 3], [3, 7], [7, 17]])  # 10-30, 30-70, 70-170 Hz
    assert power.shape == (1, 2, 40, 3)
    assert (power[0, 0].argmax(-1) == 0).all()  # 20 Hz
    assert (power[0, 1].argmax(-1) == 2).all()  # 120 Hz
    # the band holding the sinusoid carries (nearly) all of its power: >= 1e6 above the rest
    assert (power[0, 1, :, 2] - power[0, 1, :, :2].max(-1).values > math.log(1e6)).all()


def test_paper_vqvae_has_no_power_head_and_its_loss_is_unchanged():
    model = DuINVQVAE(VQVAEConfig.from_dict(TINY))
    assert model.power_head is None
    assert not any(k.startswith("power_head") for k in model.state_dict())
    out = model(torch.randn(2, 10, 4000), torch.zeros(2, dtype=torch.long))
    assert "loss_power" not in out
    torch.testing.assert_close(out["loss"], out["loss_recon"] + out["loss_vq"])


def test_power_target_adds_a_weighted_loss_that_trains_the_encoder():
    torch.manual_seed(0)
    model = DuINVQVAE(VQVAEConfig.from_dict({**TINY, "power_loss_weight": 0.5}))
    out = model(torch.randn(3, 10, 4000), torch.zeros(3, dtype=torch.long))
    torch.testing.assert_close(
        out["loss"], out["loss_recon"] + out["loss_vq"] + 0.5 * out["loss_power"]
    )
    # an untrained head predicts ~0 for standardised targets: the loss starts near 1
    assert 0.5 < float(out["loss_power"]) < 2.0
    model.zero_grad()
    out["loss_power"].backward()
    assert model.power_head.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())


def test_power_target_ignores_padded_channels():
    torch.manual_seed(0)
    model = DuINVQVAE(VQVAEConfig.from_dict({**TINY, "power_loss_weight": 1.0}))
    dec_out = torch.randn(2, 40, model.config.d_model)
    weight = torch.ones(2, 10)
    weight[1, 6:] = 0  # the second sample's subject has 6 real channels
    x = torch.randn(2, 10, 4000)
    y = x.clone()
    y[1, 6:] = 100 * torch.randn(4, 4000)  # only its padding changes
    with torch.no_grad():
        a = model._power_loss(dec_out, x, weight)
        b = model._power_loss(dec_out, y, weight)
        c = model._power_loss(dec_out, y, torch.ones(2, 10))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(b, c)


@pytest.mark.parametrize("bands", [[[0, 60]], [[5, 5]], [[3]], [[1.5, 3]]])
def test_bad_power_bands_are_refused(bands):
    with pytest.raises(ValueError, match="power_bands"):
        VQVAEConfig.from_dict({**TINY, "power_bands": bands})
