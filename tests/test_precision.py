"""Training precision switch: fp32 (default), bf16 autocast on CPU, fp16 only on CUDA."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch.utils.data import Dataset

from duin.config import ConfigError, OptimConfig, TrainerConfig, from_dict
from duin.models.config import ClassifierConfig, VQVAEConfig
from duin.models.duin import DuINClassifier, DuINVQVAE
from duin.training.precision import autocast, autocast_dtype, grad_scaler
from duin.training.trainer import Trainer


def _small_classifier() -> DuINClassifier:
    torch.manual_seed(0)
    config = ClassifierConfig(
        n_channels=4, n_times=1000, n_blocks=2, d_ff=64, head_hidden=[32], n_classes=5
    )
    return DuINClassifier(config)


def _loss_after_step(precision: str) -> tuple[float, float]:
    """(loss of the first step, loss after one AdamW step) in ``precision``; same seed/data."""
    model = _small_classifier()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(8, 4, 1000, generator=gen)
    labels = torch.randint(0, 5, (8,), generator=gen)
    optimizer = torch.optim.AdamW(model.param_groups(0.05), lr=1e-3)
    torch.manual_seed(2)  # same dropout masks for both precisions
    with autocast(precision, "cpu"):
        loss = model(x, 0, labels=labels)["loss"]
    loss.float().backward()
    optimizer.step()
    model.eval()
    with torch.no_grad(), autocast(precision, "cpu"):
        after = model(x, 0, labels=labels)["loss"]
    return float(loss.detach()), float(after)


def test_bf16_training_step_on_cpu_is_finite_and_close_to_fp32():
    first32, after32 = _loss_after_step("fp32")
    first16, after16 = _loss_after_step("bf16")
    for value in (first16, after16):
        assert math.isfinite(value)
    # bf16 keeps about 3 significant digits: the losses agree to ~1 %, not bit for bit.
    assert first16 == pytest.approx(first32, rel=0.02)
    assert after16 == pytest.approx(after32, rel=0.02)
    assert first16 != first32  # autocast really ran in bf16


def test_bf16_autocast_runs_matmuls_in_bf16_and_quantizer_projection_in_fp32():
    model = DuINVQVAE(VQVAEConfig(n_channels=4, n_times=1000, n_blocks=1, n_decoder_blocks=1))
    model.quantizer.initted.fill_(True)
    x = torch.randn(2, 4, 1000)
    seen = []
    model.encoder.blocks[0].attn.qkv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    with autocast("bf16", "cpu"):
        out = model(x, 0, return_intermediates=True)
        out["loss"].backward()
    assert seen == [torch.bfloat16]
    assert out["vq_z"].dtype == torch.float32  # codes and EMA statistics in float32
    assert torch.isfinite(out["loss"])


def test_fp16_on_cpu_is_a_clear_error():
    with pytest.raises(ValueError, match=r"fp16 needs a CUDA device.*bf16"):
        autocast_dtype("fp16", "cpu")
    with pytest.raises(ValueError, match=r"trainer\.precision must be one of"):
        autocast_dtype("fp8", "cpu")
    assert autocast_dtype("fp32", "cpu") is None
    assert autocast_dtype("bf16", "cpu") is torch.bfloat16
    assert not grad_scaler("bf16", "cpu").is_enabled()


def test_trainer_config_precision_key_and_deprecated_amp():
    assert TrainerConfig().resolved_precision == "fp32"
    assert from_dict(TrainerConfig, {"precision": "bf16"}).resolved_precision == "bf16"
    assert from_dict(TrainerConfig, {"amp": "bf16"}).resolved_precision == "bf16"
    assert from_dict(TrainerConfig, {"amp": "auto"}).resolved_precision == "fp32"
    with pytest.raises(ConfigError, match="precision"):
        from_dict(TrainerConfig, {"precision": "fp8"})
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        from_dict(TrainerConfig, {"precision": "fp16", "device": "cpu"})


class _Trials(Dataset):
    def __init__(self, n: int = 8) -> None:
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, 1000, generator=gen)
        self.labels = torch.randint(0, 5, (n,), generator=gen)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "subject": torch.tensor(0), "labels": self.labels[i]}


def _forward(model, batch):
    return model(batch["x"], batch["subject"], labels=batch["labels"])


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_trainer_precision_on_cpu(tmp_path, precision):
    def make() -> Trainer:
        return Trainer(
            _small_classifier(),
            _Trials(),
            _Trials(4),
            run_dir=tmp_path / precision,
            optim=OptimConfig(lr=1e-3, lr_min=1e-4, warmup_epochs=0, epochs=1, batch_size=4),
            trainer=TrainerConfig(
                device="cpu", tensorboard=False, log_every=1, precision=precision
            ),
            forward_fn=_forward,
            seed=0,
            quiet=True,
        )

    if precision == "fp16":
        with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
            make().fit()
        assert not (tmp_path / precision).exists()  # refused before any work
        return
    result = make().fit()
    assert all(math.isfinite(r["train/loss"]) for r in result.history)


@pytest.mark.slow
def test_trainer_compile_flag_trains(tmp_path):
    """trainer.compile=True compiles the model (or falls back to eager) and trains."""
    model = _small_classifier()
    trainer = Trainer(
        model,
        _Trials(),
        _Trials(4),
        run_dir=tmp_path / "compiled",
        optim=OptimConfig(lr=1e-3, lr_min=1e-4, warmup_epochs=0, epochs=1, batch_size=4),
        trainer=TrainerConfig(device="cpu", tensorboard=False, log_every=1, compile=True),
        forward_fn=_forward,
        seed=0,
        quiet=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the eager fallback warns when no compiler is usable
        result = trainer.fit()
    assert "_compiled" in model.__dict__  # the flag reached the model (enable_compile ran)
    assert all(math.isfinite(r["train/loss"]) for r in result.history)
