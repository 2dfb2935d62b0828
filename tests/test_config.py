"""Typed configs: dataclass <-> dict <-> YAML, overrides, validation messages, packaged files."""

from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass
from typing import Literal

import pytest

from duin.config import (
    STAGES,
    ConfigError,
    OptimConfig,
    RunConfig,
    TrainerConfig,
    apply_overrides,
    builtin_config_path,
    config_to_yaml,
    from_dict,
    load_config,
    parse_scalar,
    save_config,
    to_dict,
)
from duin.models.config import MAEConfig


def test_roundtrip_dataclass_dict_yaml(tmp_path):
    cfg = RunConfig(seed=3, optim=OptimConfig(lr=1e-3, betas=(0.9, 0.999)))
    data = to_dict(cfg)
    assert data["optim"]["betas"] == [0.9, 0.999]
    assert from_dict(RunConfig, data) == cfg
    path = save_config(cfg, tmp_path / "c.yaml")
    assert load_config(path) == cfg
    assert config_to_yaml(load_config(path)) == config_to_yaml(cfg)


def test_yaml_scalars_follow_yaml_1_2():
    assert parse_scalar("3e-4") == pytest.approx(3e-4)
    assert parse_scalar("off") == "off"  # not False (YAML 1.1 would say so)
    assert parse_scalar("true") is True
    assert parse_scalar("null") is None
    assert parse_scalar("[0.9, 0.99]") == [0.9, 0.99]
    assert parse_scalar("12") == 12
    assert parse_scalar("val/top1") == "val/top1"


def test_overrides_apply_with_yaml_semantics():
    cfg = load_config(
        None,
        ["optim.lr=3e-4", "optim.grad_clip=1", "trainer.amp=off", "optim.betas=[0.9,0.999]"],
    )
    assert cfg.optim.lr == pytest.approx(3e-4) and isinstance(cfg.optim.lr, float)
    assert cfg.optim.grad_clip == 1.0 and cfg.trainer.amp == "off"
    assert cfg.optim.betas == (0.9, 0.999)
    cfg = load_config(None, ["trainer.keep_last=null", "model.depth=4"])
    assert cfg.trainer.keep_last is None and cfg.model == {"depth": 4}


def test_unknown_key_names_the_key_and_lists_choices():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["optim.lrr=1"])
    msg = str(err.value)
    assert msg.startswith("unknown key 'optim.lrr'; valid keys under 'optim': lr, lr_min,")
    assert "(did you mean 'lr'?)" in msg
    with pytest.raises(ConfigError, match="valid keys at the top level: seed"):
        load_config(None, ["sed=1"])


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("optim.lr=-1", "lr must be > 0"),
        ("optim.lr_min=1", "lr_min"),
        ("optim.epochs=ten", r"'optim.epochs': expected int, got 'ten'"),
        ("optim.epochs=2.5", "expected int"),
        ("optim.warmup_epochs=500", "warmup_epochs"),
        ("optim.betas=[0.9]", "expected 2 items"),
        ("optim.schedule=cosine", "valid choices: 'epoch', 'step'"),
        ("trainer.tensorboard=1", "expected bool"),
        ("trainer.device=tpu", "device must be"),
        ("protocol=leaky", "'clean', 'reference'"),
        ("optim=3", "must be a mapping"),
        ("optim.lr.x=1", r"'optim.lr': expected float"),
        ("optim=3", "must be a mapping"),
        ("novalue", "expected KEY=VALUE"),
    ],
)
def test_bad_values_are_rejected_with_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [override])


@dataclass
class _Inner:
    ratio: float = 0.5
    kind: Literal["a", "b"] = "a"

    def validate(self) -> None:
        if not 0.0 < self.ratio < 1.0:
            raise ValueError(f"ratio must be in (0, 1), got {self.ratio}")


@dataclass
class _StageConfig(RunConfig):
    model: _Inner = field(default_factory=_Inner)
    sizes: list[int] = field(default_factory=lambda: [1, 2])
    name: str | None = None


def test_stage_configs_plug_typed_sections_into_run_config():
    cfg = from_dict(_StageConfig, {"model": {"kind": "b"}, "sizes": [3], "name": "x"})
    assert cfg.model == _Inner(0.5, "b") and cfg.sizes == [3] and cfg.name == "x"
    with pytest.raises(ConfigError, match=r"invalid config 'model': ratio must be in \(0, 1\)"):
        from_dict(_StageConfig, {"model": {"ratio": 1.5}})
    with pytest.raises(ConfigError, match=r"unknown key 'model.depth'; valid keys under 'model'"):
        from_dict(_StageConfig, {"model": {"depth": 2}})
    with pytest.raises(ConfigError, match=r"'sizes\[1\]': expected int"):
        from_dict(_StageConfig, {"sizes": [1, "a"]})


def test_model_config_dataclasses_plug_in():
    # Built at run time, as a stage module would declare it statically.
    MAERun = make_dataclass(
        "MAERun", [("model", MAEConfig, field(default_factory=MAEConfig))], bases=(RunConfig,)
    )
    cfg = from_dict(MAERun, {})
    assert isinstance(cfg.model, MAEConfig)
    assert from_dict(MAERun, to_dict(cfg)) == cfg


def _stage_class(stage: str) -> type:
    """The stage's config class (its sections extend the files), else the generic one."""
    try:
        from duin.training.stages import STAGE_CONFIGS
    except ImportError:
        return RunConfig
    return STAGE_CONFIGS[stage]


@pytest.mark.parametrize("name", ["quick", "paper"])
@pytest.mark.parametrize("stage", STAGES)
def test_packaged_configs_load_for_every_stage(name, stage):
    cfg = load_config(name, section=stage, cls=_stage_class(stage))
    assert isinstance(cfg.optim, OptimConfig) and isinstance(cfg.trainer, TrainerConfig)
    assert cfg.optim.betas == (0.9, 0.99)


def test_paper_recipes():
    vq = load_config("paper", section="vqvae", cls=_stage_class("vqvae")).optim
    assert (vq.epochs, vq.warmup_epochs, vq.batch_size, vq.lr, vq.lr_min, vq.weight_decay) == (
        400,
        40,
        64,
        3e-4,
        5e-5,
        0.01,
    )
    mae = load_config("paper", section="mae", cls=_stage_class("mae")).optim
    assert (mae.epochs, mae.warmup_epochs, mae.batch_size, mae.weight_decay) == (400, 40, 64, 0.05)
    cls = load_config("paper", section="cls", cls=_stage_class("cls"))
    assert (cls.optim.epochs, cls.optim.warmup_epochs, cls.optim.batch_size) == (200, 20, 32)
    assert (cls.optim.lr, cls.optim.lr_min, cls.optim.weight_decay) == (2e-4, 5e-6, 0.05)
    assert cls.trainer.selection_metric == "val/top1" and cls.trainer.selection_mode == "max"


def test_config_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="packaged configs: bench, paper, quick"):
        builtin_config_path("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(bad)
    good = tmp_path / "good.yaml"
    good.write_text("seed: 1\ncls:\n  optim: {epochs: 3, warmup_epochs: 1}\n")
    assert load_config(good, section="cls").optim.epochs == 3
    assert load_config(good).optim.epochs == 200  # sections only apply when selected
    with pytest.raises(ConfigError, match="unknown stage"):
        load_config(good, section="pretrain")


def test_apply_overrides_does_not_mutate_input():
    data = {"optim": {"lr": 1.0}}
    out = apply_overrides(data, ["optim.lr=2"])
    assert data == {"optim": {"lr": 1.0}} and out == {"optim": {"lr": 2}}


def test_overriding_a_value_with_a_section_is_an_error():
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"optim": {"lr": 1.0}}, ["optim.lr.x=1"])
