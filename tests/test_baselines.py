"""Tests of the Du-IN paper's baselines (duin.models.baselines), on their quick configs."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch

import duin.models.baselines as baselines
from duin.models.baselines import (
    BASELINES,
    LaBraMPretrain,
    LaBraMPretrainConfig,
    LaBraMTokenizer,
    LaBraMTokenizerConfig,
    fft_resample,
    transfer_backbone,
)
from duin.models.registry import create_model, get_model_class, list_models, load_model, save_model

N_CLASSES = 61
BATCH = 4
CLASSIFIERS = sorted(BASELINES)
PRETRAINERS = ["tstcc_pretrain", "neurobert_pretrain", "brainbert_pretrain", "brant_pretrain"]


# Tiny configs (on top of each QUICK variant) so that the whole file runs in seconds.
_SMALL_HEADS = {"n_heads": 2, "d_head": 16, "d_ff": 32}
_SMALL_TRANSFORMER = {"n_blocks": 1, **_SMALL_HEADS}
_TINY_BRANT = {"conv_filters": [4, 4, 4], "temporal_blocks": 1, "spatial_blocks": 1, **_SMALL_HEADS}
_TINY_LABRAM = {**_SMALL_TRANSFORMER, "conv_filters": [4, 4, 4], "norm_groups": 2}
# Electrode positions (metres) of the 10 test channels: LaBraM-PopT cannot be built without them.
POSITIONS = [[0.01 * c, -0.02 + 0.003 * c, 0.005 * (c % 3)] for c in range(10)]
#: Fields a model needs from the data (not in its defaults).
FROM_DATA: dict[str, dict] = {"labram_popt": {"channel_positions": POSITIONS}}
TINY: dict[str, dict] = {
    "tstcc": {"filters": [8, 16, 32]},
    "tstcc_pretrain": {"filters": [8, 16, 32], "d_context": 32, "context_blocks": 1},
    "cnn_bigru": {"conv_filters": 16, "gru_hidden": 16, "head_hidden": [16]},
    "eeg_conformer": {"n_filters": 8, "d_model": 16, **_SMALL_TRANSFORMER},
    "neurobert": {"d_model": 32, **_SMALL_TRANSFORMER},
    "neurobert_pretrain": {"d_model": 32, "decoder_filters": [16, 16, 16], **_SMALL_TRANSFORMER},
    "dewave": {"conv_filters": [16] * 5, **_SMALL_TRANSFORMER},
    "brainbert": {"d_model": 32, **_SMALL_TRANSFORMER},
    "brainbert_pretrain": {"d_model": 32, **_SMALL_TRANSFORMER},
    "brant": _TINY_BRANT,
    "brant_pretrain": _TINY_BRANT,
    "labram": _TINY_LABRAM,
    "labram_popt": {**_TINY_LABRAM, **FROM_DATA["labram_popt"]},
    "labram_tokenizer": {**_TINY_LABRAM, "quantizer": {"n_codes": 64, "d_code": 8}},
    "labram_pretrain": {**_TINY_LABRAM, "n_codes": 64},
}


def _quick(name: str, **overrides):
    """A tiny model: the QUICK variant with :data:`TINY` and ``overrides`` on top."""
    _, config_class = get_model_class(name)
    return create_model(name, config_class.quick(**{**TINY[name], **overrides}))


def _batch(n_times: int, seed: int = 0, n_channels: int = 10) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "x": torch.randn(BATCH, n_channels, n_times, generator=gen),
        "subject": torch.zeros(BATCH, dtype=torch.int64),
    }


def _seeded_loss(model: torch.nn.Module, batch: dict, seed: int = 123) -> torch.Tensor:
    # Same seed before every forward: same masks, augmentations and dropout in each pass.
    torch.manual_seed(seed)
    return model(**batch)["loss"]


def _loss_drops(model: torch.nn.Module, batch: dict, steps: int = 3, lr: float = 1e-3) -> None:
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    with torch.no_grad():
        before = float(_seeded_loss(model, batch))
    for _ in range(steps):
        optimizer.zero_grad()
        _seeded_loss(model, batch).backward()
        optimizer.step()
    with torch.no_grad():
        after = float(_seeded_loss(model, batch))
    assert np.isfinite(before) and np.isfinite(after)
    assert after < before, f"{type(model).__name__}: loss {before:.4f} -> {after:.4f}"


# ---------------------------------------------------------------------------- table, registry
def test_registry_and_table() -> None:
    names = set(list_models())
    for info in BASELINES.values():
        assert info.name in names
        assert info.token_level in ("region", "channel")
        assert info.pretrained == bool(info.pretrain)
        assert all(stage in names for stage in info.pretrain)
        model_cls, config_cls = get_model_class(info.name)
        assert config_cls is info.config_class
        assert issubclass(model_cls, baselines.BaselineClassifier)
    levels = {info.name: info.token_level for info in BASELINES.values()}
    assert {n for n, lv in levels.items() if lv == "channel"} == {
        "brainbert",
        "brant",
        "labram",
        "labram_popt",
    }


@pytest.mark.parametrize(
    ("n_in", "n_out"), [(3000, 750), (3000, 90), (3000, 1200), (4000, 1600), (101, 37), (99, 250)]
)
def test_fft_resample_matches_scipy(n_in: int, n_out: int) -> None:
    x = np.random.default_rng(0).standard_normal((2, 3, n_in))
    expected = scipy.signal.resample(x, n_out, axis=-1)
    got = fft_resample(torch.from_numpy(x), n_out).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-10)


# ---------------------------------------------------------------------------- classifiers
@pytest.mark.parametrize("name", CLASSIFIERS)
def test_classifier_shapes(name: str) -> None:
    model = _quick(name).eval()
    batch = _batch(3000)
    labels = torch.arange(BATCH, dtype=torch.int64)
    out = model(**batch, labels=labels)
    assert out["logits"].shape == (BATCH, N_CLASSES)
    assert out["features"].shape[0] == BATCH
    assert bool(torch.isfinite(out["features"]).all())
    assert out["loss"].ndim == 0 and bool(torch.isfinite(out["loss"]))
    assert "loss" not in model(**batch)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_classifier_step_lowers_loss(name: str) -> None:
    torch.manual_seed(0)
    model = _quick(name)
    batch = {**_batch(3000, seed=1), "labels": torch.arange(BATCH, dtype=torch.int64) * 7}
    _loss_drops(model, batch)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_bad_input_raises(name: str) -> None:
    model = _quick(name)
    subject = torch.zeros(2, dtype=torch.int64)
    with pytest.raises(ValueError, match="3 dimensions"):
        model(torch.randn(10, 3000), subject[:1])
    with pytest.raises(ValueError, match="n_times=3000"):
        model(torch.randn(2, 10, 2000), subject)
    with pytest.raises(ValueError, match="n_channels=10"):
        model(torch.randn(2, 9, 3000), subject)
    with pytest.raises(ValueError, match="subject"):
        model(torch.randn(2, 10, 3000), torch.ones(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="NaN"):
        model(torch.full((2, 10, 3000), float("nan")), subject)
    with pytest.raises(ValueError, match="labels"):
        model(torch.randn(2, 10, 3000), subject, labels=torch.zeros(3, dtype=torch.int64))


@pytest.mark.parametrize("name", [*PRETRAINERS, "labram_tokenizer", "labram_pretrain"])
def test_pretrain_bad_input_raises(name: str) -> None:
    model = _quick(name)
    subject = torch.zeros(2, dtype=torch.int64)
    with pytest.raises(ValueError, match="3 dimensions"):
        model(torch.randn(10, 4000), subject[:1])
    with pytest.raises(ValueError, match="n_times=4000"):
        model(torch.randn(2, 10, 3000), subject)


def test_scale_gradient() -> None:
    x = torch.ones(3, requires_grad=True)
    y = baselines.common.scale_gradient(x, 0.1)
    torch.testing.assert_close(y, x.detach())
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.full((3,), 0.1))


def test_masked_mean_broadcasts_the_mask() -> None:
    values = torch.arange(12.0).reshape(2, 3, 2)
    mask = torch.tensor([[True, False], [False, False]])[:, None, :]  # (2, 1, 2)
    torch.testing.assert_close(baselines.common.masked_mean(values, mask), values[0, :, 0].mean())
    assert float(baselines.common.masked_mean(values, torch.zeros(2, 3, 2, dtype=torch.bool))) == 0


def _channel_tokens(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Per-channel tokens before any transformer, ``(batch, n_channels, ...)``."""
    signal = model.prepare(x, 0)
    backbone = model.backbone
    if hasattr(backbone, "spectrogram"):  # BrainBERT
        return backbone.embed(backbone.spectrogram(signal))
    if hasattr(backbone, "tokenize"):  # LaBraM
        return backbone.tokenize(signal)
    return backbone.embed(baselines.common.to_patches(signal, backbone.patch_len))  # Brant


@pytest.mark.parametrize("name", ["brainbert", "brant", "labram"])
def test_channel_level_tokens_do_not_mix_channels(name: str) -> None:
    """Channel-level models tokenize each channel on its own (the paper's ablation axis)."""
    model = _quick(name).eval()
    x = torch.randn(2, 10, 3000)
    y = x.clone()
    y[:, 3] += torch.randn(2, 3000)
    with torch.no_grad():
        a, b = _channel_tokens(model, x), _channel_tokens(model, y)
    changed = (a - b).flatten(2).abs().amax(dim=2) > 1e-6  # (batch, n_channels)
    assert changed[:, 3].all() and not changed[:, [0, 1, 2, 4, 5, 6, 7, 8, 9]].any()


def test_bad_config_raises() -> None:
    with pytest.raises(ValueError, match="unknown field"):
        create_model("neurobert", {"n_layers": 3})
    with pytest.raises(ValueError, match="n_times"):
        create_model("neurobert", {"n_times": 3001})  # not a whole number of 400 Hz samples
    with pytest.raises(ValueError, match="patches"):
        create_model("brant", {"n_times": 500})


# ---------------------------------------------------------------------------- pretraining
@pytest.mark.parametrize("name", PRETRAINERS)
def test_pretrain_objective(name: str) -> None:
    torch.manual_seed(0)
    model = _quick(name)
    batch = _batch(4000, seed=2)
    out = model(**batch)
    assert out["loss"].ndim == 0 and bool(torch.isfinite(out["loss"]))
    assert bool(torch.isfinite(out["features"]).all())
    _loss_drops(model, batch)


def _quick_labram_tokenizer() -> LaBraMTokenizer:
    return LaBraMTokenizer(LaBraMTokenizerConfig.quick(**TINY["labram_tokenizer"]))


def test_labram_tokenizer_objective() -> None:
    torch.manual_seed(0)
    tokenizer = _quick_labram_tokenizer()
    batch = _batch(4000, seed=3)
    with torch.no_grad():
        tokenizer(**batch)  # k-means init of the codex from this batch (160 >= 64 vectors)
    assert bool(tokenizer.quantizer.initted)
    out = tokenizer(**batch)
    assert out["codes"].shape == (BATCH, 40)
    assert {"loss_amplitude", "loss_phase", "loss_vq"} <= set(out)
    _loss_drops(tokenizer, batch, steps=5)


def test_labram_masked_code_prediction() -> None:
    torch.manual_seed(0)
    tokenizer = _quick_labram_tokenizer()
    batch = _batch(4000, seed=4)
    with torch.no_grad():
        tokenizer(**batch)
    model = LaBraMPretrain(LaBraMPretrainConfig.quick(**TINY["labram_pretrain"]))
    with pytest.raises(ValueError, match="targets"):
        model(**batch)
    model.set_target_tokenizer(tokenizer)
    codebook = tokenizer.quantizer.codebook.clone()
    out = model(**batch)
    assert out["logits"].shape == (BATCH, 40, 64)
    assert torch.equal(out["targets"], tokenizer.eval().tokenize(**batch))
    assert torch.equal(codebook, tokenizer.quantizer.codebook)  # the target stays frozen
    assert "_target" not in dict(model.named_children())
    _loss_drops(model, batch)
    with pytest.raises(ValueError, match="n_codes"):
        _quick("labram_pretrain", n_codes=32).set_target_tokenizer(tokenizer)


@pytest.mark.parametrize(
    ("pretrain", "classifier"),
    [
        ("tstcc_pretrain", "tstcc"),
        ("neurobert_pretrain", "neurobert"),
        ("brainbert_pretrain", "brainbert"),
        ("brant_pretrain", "brant"),
        ("labram_pretrain", "labram"),
        ("labram_tokenizer", "labram"),
    ],
)
def test_transfer_backbone_from_4s_pretraining(pretrain: str, classifier: str) -> None:
    src, dst = _quick(pretrain), _quick(classifier)
    assert src.config.n_times == 4000 and dst.config.n_times == 3000
    transfer_backbone(src, dst)
    for key, value in src.backbone.state_dict().items():
        assert torch.equal(value, dst.backbone.state_dict()[key]), key
    out = dst.eval()(**_batch(3000))
    assert out["logits"].shape == (BATCH, N_CLASSES)


def test_transfer_backbone_rejects_mismatch() -> None:
    with pytest.raises(ValueError, match="shape"):
        transfer_backbone(_quick("neurobert_pretrain"), _quick("neurobert", d_ff=64))
    with pytest.raises(ValueError, match="backbone"):
        transfer_backbone(_quick("neurobert_pretrain"), torch.nn.Linear(2, 2))


def test_save_and_load_roundtrip(tmp_path) -> None:
    model = _quick("brant").eval()
    batch = _batch(3000)
    path = save_model(model, tmp_path / "brant")
    loaded = load_model(path)
    torch.testing.assert_close(loaded(**batch)["logits"], model(**batch)["logits"])


ALL_MODELS = [*CLASSIFIERS, *PRETRAINERS, "labram_tokenizer", "labram_pretrain"]


def test_every_model_has_a_tiny_test_config() -> None:
    assert set(TINY) == set(ALL_MODELS)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_quick_variant_runs(name: str) -> None:
    """The documented CPU variants build, stay small and run one forward pass."""
    _, config_class = get_model_class(name)
    config = config_class.quick(**FROM_DATA.get(name, {}))
    model = create_model(name, config).eval()
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) < 3_000_000, name
    batch = {"x": torch.randn(2, 10, config.n_times), "subject": torch.zeros(2, dtype=torch.int64)}
    if name == "labram_pretrain":
        batch["targets"] = torch.zeros(2, config.n_tokens, dtype=torch.int64)
    with torch.no_grad():
        out = model(**batch)
    assert bool(torch.isfinite(out["logits"] if name in BASELINES else out["loss"]).all())


# ---------------------------------------------------------------------------- sizes (slow)
# Trainable parameters at the default configs (C=10, 3 s, 61 classes); see the module
# docstrings for why they differ from the Du-IN paper's Table 2.
DEFAULT_PARAMS = {
    "tstcc": 324_669,  # Table 2: 0.32M
    "cnn_bigru": 542_141,  # 0.54M
    "eeg_conformer": 2_234_941,  # 2.34M
    "neurobert": 2_135_997,  # 2.14M
    "dewave": 3_087_293,  # 5.70M
    "brainbert": 43_551_293,  # 43.58M
    "brant": 69_258_749,  # 69.35M
    "labram": 6_573_933,  # 6.85M
    "labram_popt": 6_581_733,  # 6.85M: LaBraM less its channel table, plus the position Linear
}


@pytest.mark.slow
@pytest.mark.parametrize("name", CLASSIFIERS)
def test_default_parameter_counts(name: str) -> None:
    _, config_class = get_model_class(name)
    model = create_model(name, config_class(**FROM_DATA.get(name, {})))
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == DEFAULT_PARAMS[name]
