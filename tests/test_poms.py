"""Multi-subject ("poms") pretraining: one VQ-VAE and one MAE over two simulated subjects with
different channel counts, through the CLI; the run layout; leak-free windows; and the
single-subject cut that ``finetune --variant poms`` starts each classifier from."""

from __future__ import annotations

import json

import pytest
import torch
import typer
from typer.testing import CliRunner

from duin.cli import register
from duin.data.pooled import SubjectPool
from duin.models.registry import load_model
from duin.models.subjects import extract_subject
from duin.training.stages import build_classifier, load_stage_config
from duin.workflows.pooled import pooled_pretrain_sets
from duin.workflows.prepare import prepare_data
from duin.workflows.pretrain import _split_for
from helpers.tiny_recipe import tiny_recipe, tiny_simulation

# Two subjects, 2 shafts of 6-9 contacts each: the seed gives them different
# channel counts (asserted below). No non-task signal, so pretraining cuts the task runs
# (pretrain_data: auto -> all) and must avoid every validation/test trial.
TINY = tiny_recipe(
    tiny_simulation(
        seed=3,
        n_subjects=2,
        n_words=4,
        contacts_per_shaft=[6, 9],
        pretrain_hours=0.0,
        sfreq=1000.0,
        oracle_trials_per_word=2,
    ),
    epochs={"vqvae": 1, "mae": 1, "cls": 1},
    protocol="clean",
    data={"preprocess": None, "pretrain_window": 1.0},
    vqvae={"model": {"n_times": 500}},
    mae={"min_codex_perplexity": 0.0},
    cls={"variant": "poms", "model": {"n_times": 500}},
)


def make_app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        pass

    register(app)
    return app


def invoke(app: typer.Typer, *args: object, ok: bool = True) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, (args, result.output, result.exception)
    else:
        assert result.exit_code != 0, (args, result.output)
    return result.output


@pytest.fixture(scope="module")
def pooled_runs(tmp_path_factory):
    """Pooled VQ-VAE and MAE runs trained through the CLI (shared by the tests below)."""
    tmp = tmp_path_factory.mktemp("poms")
    cfg = tmp / "tiny.yaml"
    cfg.write_text(TINY)
    common = ["--config", cfg, "--cache", tmp / "cache", "--quiet"]
    app = make_app()
    vq, mae = tmp / "vq", tmp / "mae"
    out = invoke(app, "pretrain-vqvae", "--out", vq, "--subjects", "all", *common)
    assert f"{vq}/pooled/checkpoints/last" in out
    invoke(app, "pretrain-mae", "--out", mae, "--vqvae", vq, "--subjects", "01,02", *common)
    return {"app": app, "tmp": tmp, "cfg": cfg, "common": common, "vq": vq, "mae": mae}


@pytest.mark.parametrize("stage", ["vq", "mae"])
def test_pooled_run_layout_and_checkpoint(pooled_runs, stage):
    run = pooled_runs[stage]
    assert not list(run.glob("sub-*")), "a pooled run has no per-subject trainer runs"
    channels = json.loads((run / "channels.json").read_text())["channels"]
    assert list(channels) == ["01", "02"]  # subject-index order
    counts = [len(v) for v in channels.values()]
    assert counts[0] != counts[1], f"the corpus must have different channel counts: {counts}"
    model = load_model(run / "pooled" / "checkpoints" / "last")
    assert model.config.n_subjects == 2
    assert model.config.subject_channels == counts
    assert model.config.n_channels == max(counts)
    assert type(model).__name__ == ("DuINVQVAE" if stage == "vq" else "DuINMAE")
    info = json.loads((run / "data.json").read_text())
    assert info["pooled"] is True and info["subjects"] == ["01", "02"]
    assert set(info["pretraining"]) == {"01", "02"}


def test_pooled_windows_avoid_every_held_out_trial(pooled_runs):
    cfg = load_stage_config("vqvae", pooled_runs["cfg"])
    prepared = prepare_data(cfg.data, pooled_runs["tmp"] / "cache", quiet=True)
    channels = json.loads((pooled_runs["vq"] / "channels.json").read_text())["channels"]
    train, val, infos = pooled_pretrain_sets(
        prepared, cfg.data, channels, n_times=500, seed=cfg.seed, protocol=cfg.protocol
    )
    assert {i["pretrain_data"] for i in infos.values()} == {"all"}  # task runs are cut
    shared = 0  # windows in a recording that holds held-out trials (the check is not vacuous)
    for index, subject in enumerate(channels):
        split = _split_for(prepared, subject, cfg.data, cfg.seed, cfg.protocol)
        held = split.val + split.test
        assert held
        windows = train.parts[index].windows + val.parts[index].windows
        assert {w.subject for w in windows} == {subject}
        for w in windows:
            for t in held:
                if t.recording == w.recording:
                    shared += 1
                    overlap = min(w.stop, t.stop) - max(w.start, t.start)
                    assert overlap <= 0, (subject, w, t)
    assert shared > 0


def test_pool_pads_indexes_and_mixes_subjects():
    class Part(torch.utils.data.Dataset):
        def __init__(self, n_channels: int, n: int) -> None:
            self.x = torch.randn(n, n_channels, 8)
            self.epochs: list[int] = []

        def __len__(self) -> int:
            return len(self.x)

        def __getitem__(self, i):
            return {"x": self.x[i], "subject": torch.tensor(0)}

        def set_epoch(self, epoch: int) -> None:
            self.epochs.append(epoch)

    parts = [Part(3, 4), Part(5, 6)]
    pool = SubjectPool(parts)
    assert len(pool) == 10 and pool.subject_channels == [3, 5] and pool.n_channels == 5
    item = pool[2]
    assert int(item["subject"]) == 0 and item["x"].shape == (5, 8)
    assert torch.equal(item["x"][:3], parts[0].x[2]) and not item["x"][3:].any()
    assert int(pool[4]["subject"]) == 1 and torch.equal(pool[4]["x"], parts[1].x[0])
    pool.set_epoch(3)
    assert [p.epochs for p in parts] == [[3], [3]]
    torch.manual_seed(0)
    batches = list(torch.utils.data.DataLoader(pool, batch_size=5, shuffle=True))
    assert all(b["x"].shape[1:] == (5, 8) for b in batches)
    assert any(len(set(b["subject"].tolist())) == 2 for b in batches)  # subjects mix
    with pytest.raises(IndexError):
        pool[10]


@pytest.mark.parametrize("stage", ["vq", "mae"])
def test_subject_cut_computes_what_the_pooled_model_computes(pooled_runs, stage):
    pooled = load_model(pooled_runs[stage] / "pooled" / "checkpoints" / "last").eval()
    counts = pooled.config.subject_channels
    torch.manual_seed(0)
    for s, n_real in enumerate(counts):
        single = extract_subject(pooled, s)
        assert single.config.n_subjects == 1 and single.config.n_channels == n_real
        x = torch.randn(2, n_real, pooled.config.n_times)
        with torch.no_grad():
            want = pooled.features(x, torch.full((2,), s))  # padded to n_channels inside
            got = single.features(x)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        if stage == "vq":
            with torch.no_grad():
                rec_pooled = pooled(x, torch.full((2,), s))["reconstruction"][:, :n_real]
                rec_single = single(x)["reconstruction"]
            torch.testing.assert_close(rec_single, rec_pooled, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="unknown subject index 2"):
        extract_subject(pooled, 2)


def test_poms_classifier_starts_from_the_subjects_row(pooled_runs):
    mae = load_model(pooled_runs["mae"] / "pooled" / "checkpoints" / "last")
    cfg = load_stage_config("cls", pooled_runs["cfg"])
    for s, n_real in enumerate(mae.config.subject_channels):
        clf = build_classifier(
            cfg.model, n_channels=n_real, variant="poms", init=extract_subject(mae, s)
        )
        assert torch.equal(clf.subject_layer.weight[0], mae.subject_layer.weight[s, :n_real])
        assert torch.equal(
            clf.encoder.blocks[0].attn.qkv.weight, mae.encoder.blocks[0].attn.qkv.weight
        )


def test_finetune_poms_trains_every_subject(pooled_runs):
    app, tmp, common = pooled_runs["app"], pooled_runs["tmp"], pooled_runs["common"]
    out = tmp / "cls"
    invoke(
        app, "finetune", "--out", out, "--init", pooled_runs["mae"], "--variant", "poms", *common
    )
    for subject in ("01", "02"):
        result = json.loads((out / f"sub-{subject}" / "seed-3" / "result.json").read_text())
        assert result["variant"] == "poms" and 0.0 <= result["metrics"]["top1"] <= 1.0
    # a pooled run only initialises poms, and poms needs a pooled run
    bad = invoke(
        app, "finetune", "--out", tmp / "bad", "--init", pooled_runs["mae"], "--variant", "mae",
        *common, ok=False,
    )  # fmt: skip
    assert "variant poms needs a multi-subject MAE run" in bad
    refused = invoke(
        app, "pretrain-mae", "--out", tmp / "m2", "--vqvae", pooled_runs["vq"], *common, ok=False
    )
    assert "multi-subject VQ-VAE run: pass --subjects" in refused


def test_subjects_option_sets_data_subjects():
    from duin.cli.train import with_subjects
    from duin.config import ConfigError

    assert with_subjects(["seed=1"], "all") == ["seed=1"]
    assert with_subjects(None, "sub-01, 02") == ['data.subjects=["01", "02"]']
    with pytest.raises(ConfigError, match="'all' or a list"):
        with_subjects(None, " , ")


def test_a_split_other_than_the_pretrainings_is_refused(pooled_runs):
    """Pretraining on task runs saw every trial but its split's held-out ones: same split only."""
    app, tmp, common = pooled_runs["app"], pooled_runs["tmp"], pooled_runs["common"]
    seed = load_stage_config("cls", pooled_runs["cfg"]).seed
    for stage in ("vq", "mae"):
        infos = json.loads((pooled_runs[stage] / "data.json").read_text())["pretraining"]
        assert [i["held_out_split"] for i in infos.values()] == [
            {"seed": seed, "protocol": "stratified", "ratios": [0.8, 0.1, 0.1]}
        ] * 2
    other = ["--set", f"seed={seed + 1}"]
    refused = invoke(
        app, "finetune", "--out", tmp / "s1", "--init", pooled_runs["mae"], *other, *common,
        ok=False,
    )  # fmt: skip
    assert "would test on trials pretraining saw" in refused
    refused = invoke(
        app, "pretrain-mae", "--out", tmp / "m3", "--vqvae", pooled_runs["vq"], "--subjects",
        "01,02", *other, *common, ok=False,
    )  # fmt: skip
    assert "would test on trials pretraining saw" in refused
    assert not (tmp / "s1" / "sub-01").exists() and not (tmp / "m3" / "pooled").exists()
