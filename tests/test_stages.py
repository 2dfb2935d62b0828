"""Stage task definitions: configs, variants, hand-offs and epoch selection."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from duin.config import ConfigError
from duin.evaluation.metrics import codex_usage
from duin.models.config import ClassifierConfig, MAEConfig, VQVAEConfig
from duin.models.duin import DuINClassifier, DuINMAE, DuINVQVAE
from duin.models.registry import load_model
from duin.training.stages import (
    VARIANTS,
    ClsRunConfig,
    MAERunConfig,
    VQVAERunConfig,
    build_classifier,
    classifier_evaluate_fn,
    evaluate_classifier,
    load_stage_config,
    select_epoch,
    train_classifier,
    train_mae,
    train_vqvae,
)

TINY = dict(
    n_blocks=1,
    n_heads=2,
    d_head=8,
    d_ff=16,
    tokenizer_filters=[8, 8, 4],
)


def _vqvae(n_channels: int = 3) -> DuINVQVAE:
    return DuINVQVAE(
        VQVAEConfig.from_dict(
            {
                "n_channels": n_channels,
                "n_times": 400,
                "n_decoder_blocks": 1,
                "decoder_filters": [8, 8, 8, 8, 4],
                "quantizer": {"n_codes": 8, "d_code": 4},
                **TINY,
            }
        )
    )


def _cls_cfg(**kw) -> ClassifierConfig:
    return ClassifierConfig.from_dict(
        {"n_times": 300, "n_classes": 4, "head_hidden": [8], **TINY, **kw}
    )


@pytest.mark.parametrize(
    "stage,cls", [("vqvae", VQVAERunConfig), ("mae", MAERunConfig), ("cls", ClsRunConfig)]
)
@pytest.mark.parametrize("name", ["quick", "paper"])
def test_packaged_configs_load_typed(stage, cls, name):
    cfg = load_stage_config(stage, name)
    assert isinstance(cfg, cls)
    assert cfg.model.n_times % cfg.model.patch_len == 0


def test_paper_recipes():
    vq, mae, cls = (load_stage_config(s, "paper") for s in ("vqvae", "mae", "cls"))
    assert (vq.optim.epochs, vq.optim.lr, vq.optim.weight_decay) == (400, 3e-4, 0.01)
    assert (mae.optim.epochs, mae.optim.weight_decay, mae.model.mask_ratio) == (400, 0.05, 0.5)
    assert (cls.optim.epochs, cls.optim.batch_size, cls.optim.lr) == (200, 32, 2e-4)
    assert cls.model.n_blocks == 8 and cls.model.d_ff == 320 and vq.model.quantizer.n_codes == 2048
    assert cls.data.n_channels == 10 and cls.seeds == [42, 0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    "override,stage,needle",
    [
        ("optim.lrr=1", "cls", "did you mean 'lr'"),
        ("optim.lr=-1", "cls", "lr must be > 0"),
        ("model.mask_ratio=1.5", "mae", "mask_ratio"),
        ("model.n_times=3050", "cls", "multiple of patch_len"),
        ("variant=foo", "cls", "valid choices: 'scratch', 'vqvae', 'vqvae+vq', 'mae'"),
        ("data.split=[0.5,0.5,0.5]", "cls", "sum to 1"),
        ("trainer.selection_metric=test/top1", "cls", "test split never drives selection"),
        ("data.pretrain_data=every", "vqvae", "valid choices"),
    ],
)
def test_bad_overrides_fail_with_choices(override, stage, needle):
    with pytest.raises(ConfigError, match=None) as info:
        load_stage_config(stage, "quick", [override])
    assert needle in str(info.value)


def test_select_epoch_clean_keeps_earliest_tie():
    hist = [
        {"epoch": 0, "val/top1": 0.2, "test/top1": 0.1},
        {"epoch": 1, "val/top1": 0.5, "test/top1": 0.2},
        {"epoch": 2, "val/top1": 0.5, "test/top1": 0.9},
    ]
    assert select_epoch(hist, "clean")["epoch"] == 1
    ref = select_epoch(hist, "reference")
    assert ref["epoch"] == 2 and ref["n_tied"] == 2 and "TEST" in ref["rule"]
    assert select_epoch(hist, "clean", metric="val/top1", mode="min")["epoch"] == 0


def test_reference_selection_rounds_to_four_decimals():
    hist = [
        {"epoch": 0, "val/top1": 0.500001, "test/top1": 0.1},
        {"epoch": 1, "val/top1": 0.5, "test/top1": 0.3},
    ]
    assert select_epoch(hist, "reference")["epoch"] == 1
    assert select_epoch(hist, "clean")["epoch"] == 0


ENCODER_PARTS = ("subject_layer", "tokenizer", "encoder")


def _assert_encoder_copied(src: torch.nn.Module, dst: torch.nn.Module) -> None:
    """Every tensor of the pretrained encoder (subject layer, tokenizer with BatchNorm
    statistics, transformer blocks) is in the classifier, and the fresh head is not pretrained."""
    src_state, dst_state = src.state_dict(), dst.state_dict()
    keys = [k for k in src_state if k.split(".")[0] in ENCODER_PARTS]
    for part in ENCODER_PARTS:
        assert any(k.startswith(part + ".") for k in keys), part
    assert any(".blocks." in k for k in keys) and any("running_mean" in k for k in keys)
    for key in keys:
        assert torch.equal(dst_state[key], src_state[key]), key
    assert {k.split(".")[0] for k in dst_state} - set(ENCODER_PARTS) <= {"head", "quantizer"}


def _as_if_trained(model: torch.nn.Module) -> torch.nn.Module:
    """Move every tensor off its initial value (fresh LayerNorm/BatchNorm tensors are equal in
    any two models), so that a tensor left untransferred is seen."""
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.rand_like(tensor) + 0.5)
            elif tensor.dtype == torch.int64 and tensor.dim() == 0:
                tensor.add_(7)  # BatchNorm num_batches_tracked
    return model


def test_build_classifier_variants_transfer_weights():
    torch.manual_seed(0)
    vq = _as_if_trained(_vqvae())
    mae = _as_if_trained(
        DuINMAE(MAEConfig.from_dict({"n_channels": 3, "n_times": 400, "n_codes": 8, **TINY}))
    )
    cfg = _cls_cfg()
    scratch = build_classifier(cfg, n_channels=3, variant="scratch")
    assert scratch.quantizer is None and scratch.config.n_channels == 3
    from_vq = build_classifier(cfg, n_channels=3, variant="vqvae", init=vq)
    for key, value in vq.encoder.state_dict().items():
        assert torch.equal(from_vq.encoder.state_dict()[key], value)
    for key, value in vq.tokenizer.state_dict().items():  # incl. BatchNorm statistics
        assert torch.equal(from_vq.tokenizer.state_dict()[key], value)
    with_vq = build_classifier(cfg, n_channels=3, variant="vqvae+vq", init=vq)
    assert with_vq.config.quantize_features and with_vq.quantizer is not None
    for key, value in vq.quantizer.state_dict().items():
        assert torch.equal(with_vq.quantizer.state_dict()[key], value)
    from_mae = build_classifier(cfg, n_channels=3, variant="mae", init=mae)
    _assert_encoder_copied(mae, from_mae)
    _assert_encoder_copied(vq, from_vq)
    # the pretrained architecture wins over the classifier's own fields
    big = _cls_cfg(n_blocks=3)
    assert build_classifier(big, n_channels=3, variant="mae", init=mae).config.n_blocks == 1


@pytest.mark.parametrize(
    "variant,init,needle",
    [
        ("mae", None, "needs an init"),
        ("mae", "vq", "needs a DuINMAE"),
        ("vqvae", "mae", "needs a DuINVQVAE"),
        ("scratch", "vq", "takes no init"),
        ("poms", None, "needs an init"),
        ("poms", "vq", "needs a DuINMAE"),
        ("best", None, "unknown variant"),
    ],
)
def test_build_classifier_rejects_wrong_init(variant, init, needle):
    models = {
        "vq": _vqvae(),
        "mae": DuINMAE(
            MAEConfig.from_dict({"n_channels": 3, "n_times": 400, "n_codes": 8, **TINY})
        ),
        None: None,
    }
    with pytest.raises(ValueError, match=needle):
        build_classifier(_cls_cfg(), n_channels=3, variant=variant, init=models[init])


def test_variants_constant():
    assert VARIANTS == ("scratch", "vqvae", "vqvae+vq", "mae", "poms")


class _Toy(torch.utils.data.Dataset):
    def __init__(self, n: int, n_times: int, n_channels: int = 3, with_labels: bool = True):
        gen = torch.Generator().manual_seed(n)
        self.x = torch.randn(n, n_channels, n_times, generator=gen)
        self.y = torch.arange(n) % 4
        self.with_labels = with_labels

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        item = {"x": self.x[i], "subject": torch.tensor(0)}
        if self.with_labels:
            item["labels"] = self.y[i]
        return item


def _run_cfg(cls, **optim):
    cfg = cls()
    return dataclasses.replace(
        cfg,
        optim=dataclasses.replace(cfg.optim, epochs=1, warmup_epochs=0, batch_size=4, **optim),
        trainer=dataclasses.replace(
            cfg.trainer, device="cpu", tensorboard=False, progress=False, log_every=0
        ),
    )


def test_stage_handoffs_train_end_to_end(tmp_path):
    torch.manual_seed(0)
    vq_cfg = _run_cfg(VQVAERunConfig)
    vq_cfg = dataclasses.replace(
        vq_cfg,
        model=VQVAEConfig.from_dict(
            {
                "n_times": 400,
                "n_decoder_blocks": 1,
                "decoder_filters": [8, 8, 8, 8, 4],
                "quantizer": {"n_codes": 8, "d_code": 4},
                **TINY,
            }
        ),
    )
    crops = _Toy(8, 400, with_labels=False)
    fit = train_vqvae(vq_cfg, crops, crops, tmp_path / "vq", n_channels=3)
    from duin.models.registry import load_model

    vq = load_model(fit.last_dir)
    assert isinstance(vq, DuINVQVAE)
    mae_cfg = _run_cfg(MAERunConfig)
    mae_cfg = dataclasses.replace(mae_cfg, model=MAEConfig.from_dict({"n_times": 400, **TINY}))
    fit = train_mae(mae_cfg, vq, crops, crops, tmp_path / "mae")
    mae = load_model(fit.last_dir)
    assert isinstance(mae, DuINMAE) and mae.config.n_codes == 8  # follows the tokenizer
    assert "val/top1" in fit.history[-1]
    cls_cfg = dataclasses.replace(_run_cfg(ClsRunConfig), model=_cls_cfg(), variant="mae")
    model = build_classifier(cls_cfg.model, n_channels=3, variant="mae", init=mae)
    trials = _Toy(8, 300)
    with pytest.raises(ValueError, match="never shows the test split"):
        train_classifier(cls_cfg, model, trials, trials, tmp_path / "bad", test_data=trials)
    fit = train_classifier(cls_cfg, model, trials, trials, tmp_path / "cls")
    assert {"val/top1", "val/top5", "val/loss"} <= set(fit.history[-1])
    assert isinstance(load_model(fit.best_dir), DuINClassifier)
    metrics = evaluate_classifier(model, trials.x.numpy(), trials.y.numpy())
    assert {"top1", "balanced_accuracy", "confusion"} <= set(metrics)  # top5 needs > 4 classes


def test_reference_protocol_monitors_test_every_epoch(tmp_path):
    torch.manual_seed(0)
    cfg = dataclasses.replace(_run_cfg(ClsRunConfig), model=_cls_cfg(), protocol="reference")
    cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, epochs=2))
    model = build_classifier(cfg.model, n_channels=3)
    trials = _Toy(8, 300)
    with pytest.raises(ValueError, match="evaluates the test split"):
        train_classifier(cfg, model, trials, trials, tmp_path / "a")
    fit = train_classifier(cfg, model, trials, trials, tmp_path / "b", test_data=trials)
    assert all("test/top1" in r for r in fit.history)
    assert (tmp_path / "b" / "checkpoints" / "epoch-0000").is_dir()


def test_classifier_evaluate_fn_counts_top_k():
    class Fixed(torch.nn.Module):
        def forward(self, x, subject, labels):
            logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]]).repeat(len(labels), 1)
            return {"logits": logits, "loss": torch.tensor(1.0)}

    batches = [
        {"x": torch.zeros(2, 1, 1), "subject": torch.zeros(2), "labels": torch.tensor([0, 3])}
    ]
    out = classifier_evaluate_fn(Fixed(), batches)
    assert out == {"loss": 1.0, "top1": 0.5, "top5": 1.0}
    assert np.isclose(out["top1"], 0.5)


def test_codex_health_is_logged_per_epoch_for_vqvae_and_mae_targets(tmp_path):
    torch.manual_seed(0)
    vq_cfg = dataclasses.replace(
        _run_cfg(VQVAERunConfig),
        model=VQVAEConfig.from_dict(
            {
                "n_times": 400,
                "n_decoder_blocks": 1,
                "decoder_filters": [8, 8, 8, 8, 4],
                "quantizer": {"n_codes": 8, "d_code": 4},
                **TINY,
            }
        ),
    )
    crops = _Toy(8, 400, with_labels=False)
    fit = train_vqvae(vq_cfg, crops, crops, tmp_path / "vq", n_channels=3)
    record = fit.history[-1]
    vq = load_model(fit.last_dir)
    # The logged validation figures are those of the trained codex on the validation crops.
    codes = vq.tokenize(crops.x, torch.zeros(len(crops), dtype=torch.long))
    expected = codex_usage(torch.bincount(codes.reshape(-1), minlength=8))
    assert record["val/codes_used"] == expected["codes_used"]
    assert record["val/codex_perplexity"] == pytest.approx(expected["codex_perplexity"])
    assert 1.0 <= record["train/codex_perplexity"] <= 8.0
    assert 1 <= record["train/codes_used"] <= 8
    lines = (tmp_path / "vq" / "metrics.jsonl").read_text().splitlines()
    assert "train/codex_perplexity" in json.loads(lines[-1])
    mae_cfg = dataclasses.replace(
        _run_cfg(MAERunConfig), model=MAEConfig.from_dict({"n_times": 400, **TINY})
    )
    mae_record = train_mae(mae_cfg, vq, crops, crops, tmp_path / "mae").history[-1]
    # The MAE's targets are the frozen codex's codes of the same (unmasked) crops.
    assert mae_record["val/codes_used"] == expected["codes_used"]
    assert mae_record["val/codex_perplexity"] == pytest.approx(expected["codex_perplexity"])


def test_codex_usage_perplexity():
    assert codex_usage(torch.tensor([5, 0, 0, 0])) == {"codex_perplexity": 1.0, "codes_used": 1.0}
    uniform = codex_usage(torch.tensor([3, 3, 3, 3, 0, 0]))
    assert uniform["codex_perplexity"] == pytest.approx(4.0) and uniform["codes_used"] == 4.0
    assert codex_usage(torch.zeros(3))["codes_used"] == 0.0


def _mae(n_channels: int = 3) -> DuINMAE:
    return DuINMAE(MAEConfig.from_dict({"n_channels": n_channels, "n_times": 400, **TINY}))


def test_pretrained_parameters_frozen_then_scaled(tmp_path):
    """pretrained_frozen_epochs keeps the copied encoder fixed, then pretrained_lr_scale applies."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(
        _run_cfg(ClsRunConfig, lr=1e-2, lr_min=1e-2),
        model=_cls_cfg(),
        variant="mae",
        pretrained_lr_scale=0.25,
        pretrained_frozen_epochs=1,
    )
    cfg = dataclasses.replace(
        cfg,
        optim=dataclasses.replace(cfg.optim, epochs=2),
        trainer=dataclasses.replace(cfg.trainer, snapshot_every_epochs=1),
    )
    cfg.validate()
    model = build_classifier(cfg.model, n_channels=3, variant="mae", init=_mae())
    encoder0 = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    head0 = {k: v.clone() for k, v in model.head.state_dict().items()}
    fit = train_classifier(cfg, model, _Toy(8, 300), _Toy(8, 300), tmp_path / "cls")
    assert [r["lr"] for r in fit.history] == pytest.approx([1e-2, 1e-2])
    epoch0 = load_model(tmp_path / "cls" / "checkpoints" / "epoch-0000")
    for k, v in epoch0.encoder.state_dict().items():
        torch.testing.assert_close(v, encoder0[k], rtol=0, atol=0)  # frozen in epoch 0
    assert any(not torch.equal(v, head0[k]) for k, v in epoch0.head.state_dict().items())
    assert any(not torch.equal(v, encoder0[k]) for k, v in model.encoder.state_dict().items())


def test_pretrained_lr_settings_validate():
    cfg = dataclasses.replace(_run_cfg(ClsRunConfig), pretrained_frozen_epochs=1)
    with pytest.raises(ValueError, match="pretrained_frozen_epochs"):
        cfg.validate()  # 1 epoch in all: nothing would ever train the encoder
    with pytest.raises(ValueError, match="pretrained_lr_scale"):
        dataclasses.replace(_run_cfg(ClsRunConfig), pretrained_lr_scale=-1.0).validate()


def test_stage_prefixed_overrides_apply_to_their_stage_only():
    overrides = ["vqvae.model.power_loss_weight=4.0", "cls.optim.epochs=7", "optim.lr=3e-4"]
    vq = load_stage_config("vqvae", "quick", overrides)
    cls = load_stage_config("cls", "quick", overrides)
    mae = load_stage_config("mae", "quick", overrides)
    assert vq.model.power_loss_weight == 4.0 and vq.optim.epochs == 20
    assert cls.optim.epochs == 7
    assert vq.optim.lr == cls.optim.lr == mae.optim.lr == 3e-4  # unprefixed: every stage
    with pytest.raises(ConfigError, match="power_loss_wieght"):
        load_stage_config("vqvae", "quick", ["vqvae.model.power_loss_wieght=1"])
