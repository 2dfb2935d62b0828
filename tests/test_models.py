"""Tests of DuINVQVAE, DuINMAE, DuINClassifier, the registry and checkpoints."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import duin
from duin.models.config import ClassifierConfig, MAEConfig, VQVAEConfig
from duin.models.duin import (
    DuINClassifier,
    DuINMAE,
    DuINVQVAE,
    optimizer_param_groups,
    transfer_encoder,
)
from duin.models.registry import create_model, list_models, load_model, save_model
from duin.utils.integrity import write_manifest

SMALL = {"n_blocks": 2, "n_times": 500}  # 5 tokens, 2 blocks: fast


def _trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _small_vqvae(**kw) -> DuINVQVAE:
    return DuINVQVAE(VQVAEConfig(**{**SMALL, "n_decoder_blocks": 1, **kw}))


# ---------------------------------------------------------------------------- sizes
def test_parameter_counts_equal_paper_code() -> None:
    vqvae, mae, cls = DuINVQVAE(), DuINMAE(), DuINClassifier()
    assert _trainable(vqvae) == 5_801_386
    assert _trainable(mae) == 3_890_304
    assert _trainable(cls) == 4_182_813
    assert _trainable(cls.encoder) == 3_465_216
    assert _trainable(vqvae.quantizer) == 46_592
    assert _trainable(vqvae.decoder) == 1_732_608
    assert _trainable(vqvae.recon_head) == 461_600
    assert _trainable(cls.head) == 622_397


def test_output_shapes_and_dtypes() -> None:
    torch.manual_seed(0)
    x, s = torch.randn(2, 10, 500), torch.zeros(2, dtype=torch.int64)
    out = _small_vqvae()(x, s)
    assert out["reconstruction"].shape == (2, 10, 500)
    assert out["codes"].shape == (2, 5) and out["codes"].dtype == torch.int64
    assert out["features"].shape == (2, 5, 160)
    for key in ("loss", "loss_recon", "loss_vq"):
        assert out[key].ndim == 0
    cls = DuINClassifier(ClassifierConfig(**SMALL, n_classes=7))
    out = cls(x, s, labels=torch.tensor([1, 6]))
    assert out["logits"].shape == (2, 7) and out["features"].shape == (2, 5, 160)
    torch.testing.assert_close(out["loss"], F.cross_entropy(out["logits"], torch.tensor([1, 6])))


def test_classifier_reference_loss_applies_sigmoid_first() -> None:
    torch.manual_seed(0)
    cls = DuINClassifier(ClassifierConfig(**SMALL, n_classes=7, loss="reference")).eval()
    x, y = torch.randn(3, 10, 500), torch.tensor([0, 3, 6])
    out = cls(x, 0, labels=y)
    torch.testing.assert_close(out["loss"], F.cross_entropy(torch.sigmoid(out["logits"]), y))


def test_vqvae_loss_and_channel_mask() -> None:
    torch.manual_seed(0)
    model = _small_vqvae().eval()
    x, s = torch.randn(2, 10, 500), torch.zeros(2, dtype=torch.int64)
    out = model(x, s)
    torch.testing.assert_close(out["loss_recon"], F.mse_loss(out["reconstruction"], x))
    torch.testing.assert_close(out["loss"], out["loss_recon"] + out["loss_vq"])
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[:, :3] = True
    masked = model(x, s, channel_mask=mask)
    expected = F.mse_loss(masked["reconstruction"][:, :3], x[:, :3])
    torch.testing.assert_close(masked["loss_recon"], expected)


def test_tokenize_matches_forward_codes_and_never_mutates() -> None:
    torch.manual_seed(0)
    model = _small_vqvae(quantizer={"n_codes": 32, "kmeans_init": False}).eval()
    x = torch.randn(3, 10, 500)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    codes = model.tokenize(x, torch.zeros(3, dtype=torch.int64))
    assert torch.equal(codes, model(x)["codes"])
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), f"{key} changed"


def test_vqvae_training_step_updates_codex_and_learns() -> None:
    torch.manual_seed(0)
    model = _small_vqvae(quantizer={"n_codes": 8, "init_mode": "first_batch"}).train()
    quantizer = model.quantizer
    x = torch.randn(4, 10, 500)  # 4 x 5 = 20 tokens per batch
    opt = torch.optim.AdamW(model.param_groups(0.01), lr=1e-3)
    random_book = quantizer.codebook.clone()
    losses, books, counts = [], [], []
    for _ in range(5):
        opt.zero_grad()
        loss = model(x)["loss"]
        loss.backward()
        opt.step()
        losses.append(loss.item())
        books.append(quantizer.codebook.clone())
        counts.append(quantizer.counts.clone())
    assert bool(quantizer.initted)
    assert not torch.equal(books[0], random_book)  # k-means init on the first batch
    for before, after in itertools.pairwise(books):
        assert (after - before).abs().max() > 0  # the EMA moves the codebook every step
    torch.testing.assert_close(books[-1].norm(dim=1), torch.ones(8))
    for before, after in itertools.pairwise(counts):
        assert not torch.equal(before, after)
    # Usage EMA: every step adds (1 - decay) x the 20 assignments, so after k steps the counts
    # sum to 20 (1 - decay^k).
    decay = quantizer.config.decay
    for k, c in enumerate(counts, start=1):
        torch.testing.assert_close(c.sum(), torch.tensor(20 * (1 - decay**k)))
    # Eval forwards leave the codex alone (the reference would update counts).
    model.eval()(x)
    assert torch.equal(quantizer.codebook, books[-1]) and torch.equal(quantizer.counts, counts[-1])
    assert losses[-1] < losses[0]


# ---------------------------------------------------------------------------- MAE
def _mae_pair() -> tuple[DuINMAE, DuINVQVAE]:
    vqvae = _small_vqvae(quantizer={"n_codes": 32, "kmeans_init": False})
    mae = DuINMAE(MAEConfig(**SMALL, n_codes=32), tokenizer=vqvae)
    return mae, vqvae


def test_mae_random_mask_and_targets_from_tokenizer() -> None:
    torch.manual_seed(0)
    mae, vqvae = _mae_pair()
    mae.train()
    assert not vqvae.training  # the target tokenizer stays frozen in eval mode
    x = torch.randn(3, 10, 500)
    out = mae(x, 0)
    assert out["logits"].shape == (3, 5, 32)
    assert out["mask"].dtype == torch.bool and (out["mask"].sum(1) == 5 - int(5 * 0.5)).all()
    assert torch.equal(out["targets"], vqvae.tokenize(x, 0))
    assert all(not p.requires_grad for p in vqvae.parameters())
    assert not any(k.startswith("_target") for k in mae.state_dict())


def test_mae_given_mask_and_fused_views_equal_separate_passes() -> None:
    torch.manual_seed(0)
    mae, _ = _mae_pair()
    mae.eval()
    x, s = torch.randn(2, 10, 500), torch.zeros(2, dtype=torch.int64)
    mask = torch.tensor([[True, False, True, False, False], [False, True, True, True, False]])
    targets = torch.randint(0, 32, (2, 5))
    out = mae(x, s, mask=mask, targets=targets, return_intermediates=True)
    assert torch.equal(out["mask"], mask) and torch.equal(out["targets"], targets)
    _, tokens = mae.embed(x, s)
    fill = mae.mask_embedding
    view0 = torch.where(mask[..., None], fill, tokens)
    view1 = torch.where(mask[..., None], tokens, fill)
    logits0, logits1 = mae.head(mae.encode(view0)), mae.head(mae.encode(view1))
    expected = torch.where(mask[..., None], logits0, logits1)
    torch.testing.assert_close(out["logits"], expected, rtol=1e-5, atol=1e-5)
    expected_loss = F.cross_entropy(expected.reshape(-1, 32), targets.reshape(-1))
    torch.testing.assert_close(out["loss"], expected_loss, rtol=1e-5, atol=1e-6)


def test_mae_without_targets_or_tokenizer_raises() -> None:
    mae = DuINMAE(MAEConfig(**SMALL, n_codes=32))
    with pytest.raises(ValueError, match="targets"):
        mae(torch.randn(1, 10, 500), 0)
    with pytest.raises(ValueError, match="n_codes"):
        mae.set_target_tokenizer(_small_vqvae(quantizer={"n_codes": 16}))


# ---------------------------------------------------------------------------- inputs
@pytest.mark.parametrize(
    ("x", "subject", "match"),
    [
        (torch.randn(10, 500), 0, "3 dimensions"),
        (torch.randn(2, 9, 500), 0, "channels"),
        (torch.randn(2, 10, 450), 0, "multiple of patch_len"),
        (torch.randn(2, 10, 600), 0, "n_times=500"),
        (torch.randn(2, 10, 500), torch.tensor([0, 3]), "unknown subject index 3"),
        (torch.randn(2, 10, 500), torch.tensor([0.0, 1.0]), "integer"),
        (torch.randn(2, 10, 500), torch.tensor([0, 0, 0]), r"shape \(batch,\)"),
        (torch.full((2, 10, 500), float("nan")), 0, "NaN or Inf"),
        (torch.full((2, 10, 500), float("inf")), 0, "NaN or Inf"),
        (torch.ones(2, 10, 500, dtype=torch.int64), 0, "floating-point"),
    ],
)
def test_bad_inputs_raise_value_error(x: torch.Tensor, subject, match: str) -> None:
    model = DuINClassifier(ClassifierConfig(**SMALL, n_subjects=2))
    with pytest.raises(ValueError, match=match):
        model(x, subject)


def test_multi_subject_padding_and_channel_contributions() -> None:
    torch.manual_seed(0)
    config = ClassifierConfig(**SMALL, n_channels=6, n_subjects=3, subject_channels=[4, 6, 2])
    model = DuINClassifier(config).eval()
    x4 = torch.randn(2, 4, 500)
    padded = F.pad(x4, (0, 0, 0, 2))
    subject = torch.tensor([0, 0])
    torch.testing.assert_close(model(x4, subject)["logits"], model(padded, subject)["logits"])
    with pytest.raises(ValueError, match="expect"):
        model(x4, torch.tensor([0, 1]))  # subject 1 has 6 channels
    for s, n in enumerate([4, 6, 2]):
        contrib = model.channel_contributions(s)
        assert contrib.shape == (n,)
        expected = model.subject_layer.weight[s, :n].abs().mean(1)
        torch.testing.assert_close(contrib, expected)
    with pytest.raises(ValueError, match="unknown subject"):
        model.channel_contributions(3)
    vqvae = _small_vqvae(n_channels=6, n_subjects=3, subject_channels=[4, 6, 2])
    mask = vqvae.default_channel_mask(torch.tensor([0, 2]))
    assert mask.sum(1).tolist() == [4, 2]


@pytest.mark.parametrize(
    ("config_cls", "field", "value"),
    [
        (MAEConfig, "mask_ratio", 1.0),
        (MAEConfig, "mask_ratio", 0.0),
        (ClassifierConfig, "n_classes", 0),
        (ClassifierConfig, "n_channels", -3),
        (VQVAEConfig, "n_blocks", 0),
        (VQVAEConfig, "decoder_strides", [1, 1, 10, 1, 5]),
        (ClassifierConfig, "loss", "bce"),
        (ClassifierConfig, "subject_channels", [3]),
        (ClassifierConfig, "n_times", 3050),
    ],
)
def test_config_validate_names_bad_field(config_cls, field: str, value) -> None:
    with pytest.raises(ValueError, match=field):
        config_cls(**{field: value}).validate()


def test_config_module_does_not_import_torch() -> None:
    code = "import sys, duin.models.config; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


# ---------------------------------------------------------------------------- hand-off
def test_transfer_encoder_and_shape_mismatch() -> None:
    torch.manual_seed(0)
    vqvae = _small_vqvae()
    with torch.no_grad():  # off the initial values, which any two fresh models share
        for tensor in vqvae.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.rand_like(tensor) + 0.5)
    cls = DuINClassifier(ClassifierConfig(**SMALL))
    transfer_encoder(vqvae, cls)
    for name in ("subject_layer", "tokenizer", "encoder"):
        src, dst = getattr(vqvae, name).state_dict(), getattr(cls, name).state_dict()
        assert src.keys() == dst.keys(), name
        assert all(torch.equal(src[k], dst[k]) for k in src), name
    other = DuINClassifier(ClassifierConfig(**SMALL, n_channels=12))
    with pytest.raises(ValueError, match=r"subject_layer\.weight.*channel count"):
        transfer_encoder(vqvae, other)
    with pytest.raises(ValueError, match="quantize_features"):
        transfer_encoder(vqvae, cls, include_quantizer=True)


def test_classifier_vq_variant_uses_frozen_codex() -> None:
    torch.manual_seed(0)
    vqvae = _small_vqvae(quantizer={"n_codes": 32, "kmeans_init": False}).eval()
    cls = DuINClassifier(
        ClassifierConfig(**SMALL, quantize_features=True, quantizer={"n_codes": 32})
    )
    transfer_encoder(vqvae, cls, include_quantizer=True)
    x = torch.randn(2, 10, 500)
    out = cls.eval()(x, 0)
    torch.testing.assert_close(out["features"], vqvae.quantize(x, 0)["embeddings"])
    before = cls.quantizer.codebook.clone()
    cls.train()(x, 0, labels=torch.tensor([0, 1]))["loss"].backward()
    assert torch.equal(before, cls.quantizer.codebook)
    assert all(not p.requires_grad for p in cls.quantizer.parameters())
    assert _trainable(cls) == _trainable(DuINClassifier(ClassifierConfig(**SMALL)))


def test_optimizer_param_groups() -> None:
    model = DuINClassifier(ClassifierConfig(**SMALL))
    decay, no_decay = optimizer_param_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].endswith("weight") and p.ndim >= 2 for p in decay["params"])
    assert all(names[id(p)].endswith(".bias") or p.ndim <= 1 for p in no_decay["params"])
    total = sum(p.numel() for g in (decay, no_decay) for p in g["params"])
    assert total == _trainable(model)
    ref_decay, _ = model.param_groups(0.05, reference=True)
    assert any(p is model.subject_layer.bias for p in ref_decay["params"])


# ---------------------------------------------------------------------------- registry
def test_registry_and_checkpoint_round_trip(tmp_path: Path) -> None:
    assert {"duin_cls", "duin_mae", "duin_vqvae"} <= set(list_models())
    torch.manual_seed(0)
    model = create_model("cls", n_blocks=2, n_times=500, n_classes=5, n_subjects=2)
    assert isinstance(model, DuINClassifier) and model.config.n_classes == 5
    path = save_model(model, tmp_path / "ckpt")
    meta = json.loads((path / "config.json").read_text())
    assert meta["name"] == "duin_cls" and meta["duin_version"] == duin.__version__
    assert meta["config"]["n_classes"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temp leftovers
    loaded = duin.load_model(path)
    assert not loaded.training
    x, s = torch.randn(2, 10, 500), torch.tensor([0, 1])
    torch.testing.assert_close(loaded(x, s)["logits"], model.eval()(x, s)["logits"])
    save_model(loaded, path)  # overwriting an existing checkpoint is atomic too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    with pytest.raises(ValueError, match="unknown model"):
        create_model("nope")
    with pytest.raises(ValueError, match="unknown field"):
        create_model("cls", n_clases=3)


def test_vqvae_checkpoint_keeps_codex(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _small_vqvae(quantizer={"n_codes": 16, "init_mode": "first_batch"}).train()
    model(torch.randn(2, 10, 500))
    loaded = load_model(save_model(model, tmp_path / "v"))
    assert bool(loaded.quantizer.initted)
    assert torch.equal(loaded.quantizer.codebook, model.quantizer.codebook)


def test_load_model_rejects_mismatched_checkpoint(tmp_path: Path) -> None:
    model = create_model("cls", n_blocks=2, n_times=500)
    path = save_model(model, tmp_path / "ckpt")
    meta = json.loads((path / "config.json").read_text())
    meta["config"]["n_channels"] = 12
    (path / "config.json").write_text(json.dumps(meta))
    write_manifest(path)  # a consistent checkpoint whose config does not fit its tensors
    with pytest.raises(ValueError, match=r"subject_layer\.weight.*shape"):
        load_model(path)
    meta["config"]["n_channels"] = 10
    meta["config"]["n_blocks"] = 3
    (path / "config.json").write_text(json.dumps(meta))
    write_manifest(path)
    with pytest.raises(ValueError, match="missing"):
        load_model(path)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "absent")


def test_enable_compile_falls_back_to_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_compile(fn, **kwargs):
        def run(*args):
            raise RuntimeError("no compiler here")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    torch.manual_seed(0)
    model = DuINClassifier(ClassifierConfig(**SMALL)).eval()
    x = torch.randn(2, 10, 500)
    expected = model(x)["logits"]
    model.enable_compile()
    with pytest.warns(UserWarning, match="running eagerly"):
        got = model(x)["logits"]
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(model(x)["logits"], expected)  # stays eager, no second warning
