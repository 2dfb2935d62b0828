"""Tests of the normalised EMA vector quantizer (the codex)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from duin.models.config import QuantizerConfig
from duin.models.quantizer import NormEMAVectorQuantizer, spherical_kmeans


def _vq(**kwargs) -> NormEMAVectorQuantizer:
    cfg = QuantizerConfig(**{"n_codes": 16, "d_code": 4, **kwargs})
    return NormEMAVectorQuantizer(8, cfg)


def test_outputs_and_nearest_code() -> None:
    torch.manual_seed(0)
    vq = _vq(kmeans_init=False).eval()
    tokens = torch.randn(3, 5, 8)
    out = vq(tokens)
    assert out["codes"].shape == (3, 5) and out["codes"].dtype == torch.int64
    assert out["out"].shape == (3, 5, 8)
    z = F.normalize(vq.pre_proj(tokens), dim=-1)
    torch.testing.assert_close(out["z"], z)
    brute = torch.cdist(z.reshape(-1, 4), vq.codebook).argmin(1).view(3, 5)
    assert torch.equal(out["codes"], brute)
    torch.testing.assert_close(out["z_q"], vq.codebook[brute])
    torch.testing.assert_close(out["loss"], F.mse_loss(z, vq.codebook[brute]))
    torch.testing.assert_close(out["out"], vq.post_proj(vq.norm(out["z_st"])))


def test_straight_through_gradient_and_commitment_only() -> None:
    torch.manual_seed(0)
    vq = _vq(kmeans_init=False).train()
    tokens = torch.randn(2, 4, 8, requires_grad=True)
    out = vq(tokens)
    out["out"].sum().backward()
    assert tokens.grad is not None and tokens.grad.abs().sum() > 0
    assert not vq.codebook.requires_grad  # a buffer: learned by EMA only


def test_ties_go_to_lowest_index() -> None:
    vq = _vq(kmeans_init=False).eval()
    with torch.no_grad():
        vq.codebook[3] = vq.codebook[1]
    z = vq.codebook[1:2]
    assert vq.nearest(z).item() == 1


def test_ema_update_formula_and_unused_codes_fixed() -> None:
    torch.manual_seed(0)
    vq = _vq(kmeans_init=False, decay=0.9).train()
    before = vq.codebook.clone()
    tokens = torch.randn(2, 6, 8)
    out = vq(tokens)
    codes, z = out["codes"].reshape(-1), out["z"].detach().reshape(-1, 4)
    expected = before.clone()
    for k in range(16):
        sel = codes == k
        if sel.any():
            mean = F.normalize(z[sel].mean(0), dim=0)
            expected[k] = F.normalize(0.9 * before[k] + 0.1 * mean, dim=0)
    torch.testing.assert_close(vq.codebook, expected, rtol=1e-5, atol=1e-6)
    unused = torch.ones(16, dtype=torch.bool)
    unused[codes] = False
    torch.testing.assert_close(vq.codebook[unused], before[unused], rtol=1e-5, atol=1e-6)
    hist = torch.bincount(codes, minlength=16).float()
    torch.testing.assert_close(vq.counts, 0.1 * hist)


def test_eval_does_not_mutate_by_default_but_can_track_counts() -> None:
    torch.manual_seed(0)
    vq = _vq(kmeans_init=False).eval()
    state = {k: v.clone() for k, v in vq.state_dict().items()}
    vq(torch.randn(2, 3, 8))
    for key, value in vq.state_dict().items():
        assert torch.equal(value, state[key]), key
    vq_ref = _vq(kmeans_init=False, track_counts_in_eval=True).eval()
    out = vq_ref(torch.randn(2, 3, 8))
    hist = torch.bincount(out["codes"].reshape(-1), minlength=16).float()
    torch.testing.assert_close(vq_ref.counts, 0.01 * hist)


def test_first_batch_kmeans_init_with_replacement() -> None:
    torch.manual_seed(0)
    vq = _vq(init_mode="first_batch").eval()
    assert not bool(vq.initted)
    tokens = torch.randn(1, 6, 8)  # 6 vectors < 16 codes -> duplicated centres
    vq(tokens)  # the reference initialises on the very first forward, in any mode
    assert bool(vq.initted)
    assert torch.unique(vq.codebook, dim=0).shape[0] < 16  # duplicated (dead) codes
    torch.testing.assert_close(vq.codebook.norm(dim=1), torch.ones(16))


def test_accumulate_init_waits_for_enough_vectors() -> None:
    torch.manual_seed(0)
    vq = _vq().train()  # accumulate mode, 16 codes
    vq(torch.randn(1, 10, 8))
    assert not bool(vq.initted)
    vq.eval()(torch.randn(1, 10, 8))  # eval batches are not pooled
    assert not bool(vq.initted)
    vq.train()(torch.randn(1, 10, 8))  # 20 >= 16 pooled vectors
    assert bool(vq.initted)
    assert torch.unique(vq.codebook, dim=0).shape[0] == 16  # distinct initial centres


def test_kmeans_pool_is_saved_and_restored_mid_init(tmp_path) -> None:
    torch.manual_seed(0)
    batches = [torch.randn(2, 3, 8) for _ in range(3)]  # 6 vectors each, 16 codes: 3 batches
    vq = _vq().train()
    vq(batches[0])
    state = vq.state_dict()
    assert state["kmeans_pool"].shape == (6, 4) and not bool(state["initted"])
    from safetensors.torch import load_file, save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "q.safetensors"))
    restored = _vq().train()
    restored.load_state_dict(load_file(str(tmp_path / "q.safetensors")))
    for q in (vq, restored):
        torch.manual_seed(1)  # k-means draws its initial centres from the global RNG
        for batch in batches[1:]:
            q(batch)
    assert bool(restored.initted)
    assert torch.equal(restored.codebook, vq.codebook)
    assert "kmeans_pool" not in vq.state_dict()  # emptied once k-means ran


def test_state_without_a_pool_loads_as_an_empty_pool() -> None:
    torch.manual_seed(0)
    vq = _vq().train()
    vq(torch.randn(2, 3, 8))
    old = {k: v for k, v in vq.state_dict().items() if k != "kmeans_pool"}  # older checkpoint
    fresh = _vq().train()
    fresh(torch.randn(2, 3, 8))  # a pool of its own, replaced by the loaded (empty) one
    fresh.load_state_dict(old, strict=True)
    assert "kmeans_pool" not in fresh.state_dict()
    with pytest.raises(RuntimeError, match="kmeans_pool"):
        fresh.load_state_dict({**old, "kmeans_pool": torch.zeros(3, 5)})


def test_frozen_quantizer_never_changes() -> None:
    torch.manual_seed(0)
    vq = _vq(init_mode="first_batch").freeze().train()
    state = {k: v.clone() for k, v in vq.state_dict().items()}
    vq(torch.randn(2, 10, 8), update=False)
    for key, value in vq.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert all(not p.requires_grad for p in vq.parameters())


def test_dead_code_restart() -> None:
    torch.manual_seed(0)
    vq = _vq(kmeans_init=False, dead_code_restart=True, dead_code_threshold=0.5).train()
    before = vq.codebook.clone()
    out = vq(torch.randn(2, 10, 8))
    # Every code is below the threshold after one step (counts <= 0.01 * 20), so all restart to
    # batch vectors.
    changed = (vq.codebook - before).abs().sum(1) > 0
    assert changed.all()
    batch = out["z"].detach().reshape(-1, 4)
    dist = torch.cdist(vq.codebook, batch).min(dim=1).values
    assert dist.max() < 1e-5


def test_spherical_kmeans_recovers_clusters() -> None:
    torch.manual_seed(0)
    centres = F.normalize(torch.eye(4), dim=1)
    points = F.normalize(centres.repeat(50, 1) + 0.05 * torch.randn(200, 4), dim=1)
    found = spherical_kmeans(points, 4, 10, with_replacement=False)
    similarity = (found @ centres.t()).amax(dim=0)
    assert similarity.min() > 0.95


@pytest.mark.parametrize("field", ["n_codes", "d_code", "kmeans_iters"])
def test_config_validation_names_field(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        QuantizerConfig(**{field: 0}).validate()
    with pytest.raises(ValueError, match="decay"):
        QuantizerConfig(decay=1.0).validate()
    with pytest.raises(ValueError, match="init_mode"):
        QuantizerConfig(init_mode="sometimes").validate()


def test_autoencoder_warmup_bypasses_then_initialises_from_trained_tokens() -> None:
    torch.manual_seed(0)
    vq = _vq(warmup_steps=3).train()
    assert "warmup_done" in vq.state_dict()
    assert "warmup_done" not in _vq().state_dict()  # reference key layout without a warm-up
    codebook = vq.codebook.clone()
    for step in range(3):
        tokens = torch.randn(2, 10, 8, requires_grad=True)
        out = vq(tokens)
        # The decoder sees the projected vectors themselves; no commitment, no codex change.
        torch.testing.assert_close(out["z_st"], out["z"])
        assert float(out["loss"]) == 0.0 and not bool(vq.initted)
        assert torch.equal(vq.codebook, codebook) and int(vq.warmup_done) == step + 1
        out["out"].sum().backward()
        assert tokens.grad is not None and tokens.grad.abs().sum() > 0
    vq.eval()
    assert vq(torch.randn(2, 10, 8))["z_st"].shape == (2, 10, 4) and not bool(vq.initted)
    vq.train()
    out = vq(torch.randn(2, 10, 8))  # 20 >= 16 vectors: k-means runs on this batch
    assert bool(vq.initted) and not torch.equal(vq.codebook, codebook)
    assert float(out["loss"].detach()) > 0
    torch.testing.assert_close(out["z_st"], out["z_q"])


def test_warmup_needs_kmeans_init() -> None:
    with pytest.raises(ValueError, match="warmup_steps"):
        QuantizerConfig(warmup_steps=5, kmeans_init=False).validate()
    with pytest.raises(ValueError, match="warmup_steps"):
        QuantizerConfig(warmup_steps=-1).validate()
