"""NaN/Inf losses and gradients: ``trainer.on_nonfinite: stop | skip``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from duin.config import OptimConfig, TrainerConfig, load_config
from duin.training.trainer import Trainer
from duin.training.trainer.nonfinite import NonFiniteLossError
from duin.utils.integrity import verify_manifest


class _Data(Dataset):
    def __len__(self) -> int:
        return 16

    def __getitem__(self, i):
        x = torch.linspace(-1, 1, 4) * (i + 1) / 16
        return {"x": x, "target": x.sum(0, keepdim=True), "index": torch.tensor(i)}


class _Poisoned(nn.Module):
    """A linear regressor whose loss (or gradient) turns NaN on chosen forward calls."""

    def __init__(self, nan_calls: set[int], where: str = "loss") -> None:
        super().__init__()
        self.fc = nn.Linear(4, 1)
        self.nan_calls, self.where, self.calls = nan_calls, where, 0

    def forward(self, x, target, index):
        self.calls += 1
        poisoned = self.calls in self.nan_calls
        pred = self.fc(x)
        if poisoned and self.where == "gradient":
            pred.register_hook(lambda g: torch.full_like(g, float("nan")))
        recon = ((pred - target) ** 2).mean()
        if poisoned and self.where == "loss":
            recon = recon * float("nan")
        return {"loss": recon + 0.0 * pred.mean(), "recon": recon}


def _run(run_dir: Path, model: nn.Module, **trainer_kw) -> Trainer:
    torch.manual_seed(0)
    cfg = TrainerConfig(device="cpu", tensorboard=False, checkpoint_every_steps=1, **trainer_kw)
    return Trainer(
        model,
        _Data(),
        run_dir=run_dir,
        optim=OptimConfig(lr=1e-2, epochs=2, batch_size=4, warmup_epochs=0),
        trainer=cfg,
        quiet=True,
    )


def test_nan_loss_stops_with_one_line_and_keeps_last_good_checkpoint(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(NonFiniteLossError) as info:
        _run(run, _Poisoned({3})).fit()
    message = str(info.value)
    print(message)
    assert "\n" not in message
    assert "step 3" in message and "'recon/loss'" in message and "stage run" in message
    assert str(run / "checkpoints" / "last") in message
    last = run / "checkpoints" / "last"
    state = json.loads((last / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert verify_manifest(last, required=True) >= 4
    from safetensors.torch import load_file

    weights = load_file(str(last / "model.safetensors"))
    assert all(bool(torch.isfinite(v).all()) for v in weights.values())


def test_nan_gradient_is_named(tmp_path):
    with pytest.raises(NonFiniteLossError, match="non-finite gradient at step 2"):
        _run(tmp_path / "run", _Poisoned({2}, where="gradient")).fit()


def test_skip_drops_the_step_within_its_budget(tmp_path, caplog):
    model = _Poisoned({3, 6})
    trainer = _run(tmp_path / "run", model, on_nonfinite="skip", max_nonfinite_skips=2)
    result = trainer.fit()
    assert result.global_step == 8 - 2  # 2 epochs x 4 steps, two skipped
    assert "optimizer step skipped (2/2)" in caplog.text
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert all(torch.isfinite(torch.tensor(r["train/loss"])) for r in records)
    with pytest.raises(NonFiniteLossError, match="max_nonfinite_skips=1"):
        _run(tmp_path / "run2", _Poisoned({3, 6}), on_nonfinite="skip", max_nonfinite_skips=1).fit()


def test_on_nonfinite_is_validated_in_configs(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("trainer:\n  on_nonfinite: ignore\n")
    with pytest.raises(ValueError, match="on_nonfinite"):
        load_config(path)
    path.write_text("trainer:\n  max_nonfinite_skips: -1\n")
    with pytest.raises(ValueError, match="max_nonfinite_skips"):
        load_config(path)
