"""The simulated corpus: determinism, realism of the raw data, task structure, ceiling."""

from __future__ import annotations

import dataclasses
import json
import tracemalloc
from collections import Counter

import numpy as np
import pytest

import duin
from duin.data import simulate as sim
from duin.data.simulate import (
    SimulationConfig,
    band_power_baseline,
    simulate,
    simulate_to_disk,
)
from helpers.bids_validator import validate

FAST = dict(n_words=4, trials_per_word=2, blocks_per_run=1, pretrain_hours=20 / 3600)


@pytest.fixture(scope="module")
def tiny():
    return simulate(preset="tiny", seed=1)


def test_lazy_public_export():
    assert duin.simulate is simulate


def test_same_seed_bit_identical_and_seed_matters():
    a = simulate(preset="tiny", seed=5, **FAST)
    b = simulate(preset="tiny", seed=5, **FAST)
    c = simulate(preset="tiny", seed=6, **FAST)
    for ra, rb in zip(a.recordings, b.recordings, strict=True):
        assert ra.signals.tobytes() == rb.signals.tobytes()
        assert ra.events == rb.events and ra.ch_names == rb.ch_names
    assert a.oracle_accuracy == b.oracle_accuracy
    assert not np.array_equal(a.recordings[0].signals[:, :1000], c.recordings[0].signals[:, :1000])


def test_raw_signals_are_realistic_volts(tiny):
    cfg = tiny.config
    subject = tiny.subjects[0]
    for rec in subject.task_runs + subject.pretrain:
        assert rec.sfreq == 2000.0
        assert rec.signals.dtype == np.float32
        good = [i for i, n in enumerate(rec.ch_names) if n not in rec.bad_channels]
        sd = rec.signals[good].std(axis=1)
        # microvolt-scale sEEG: ~1e-5..1e-4 V per channel
        assert np.all(sd > 3e-6) and np.all(sd < 3e-4), sd
        assert 1e-5 < np.median(sd) < 1e-4
    rec = subject.task_runs[0]
    # line noise at 50 Hz stands out of the 1/f background; power falls with frequency
    good = [i for i, n in enumerate(rec.ch_names) if n not in rec.bad_channels]
    x = rec.signals[good[0], :40000].astype(np.float64)
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size))) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / rec.sfreq)

    def band(lo, hi):
        return spec[(freqs >= lo) & (freqs < hi)].mean()

    assert band(49.5, 50.5) > 10 * band(40, 48)
    assert band(2, 5) > 10 * band(300, 400)
    assert len(rec.ch_names) >= cfg.n_shafts * cfg.contacts_per_shaft[0]


def test_anatomy_regions_and_channel_truth(tiny):
    subject = tiny.subjects[0]
    rec = subject.task_runs[0]
    regions = set(rec.ch_regions)
    assert {"vSMC", "STG", "white"} <= regions
    shafts = Counter(name.rstrip("0123456789") for name in rec.ch_names)
    lo, hi = tiny.config.contacts_per_shaft
    assert len(shafts) == tiny.config.n_shafts
    assert all(lo <= n <= hi for n in shafts.values())
    inf = subject.informative_channels
    assert 3 <= len(inf) < len(rec.ch_names) / 2  # most channels carry no word information
    region_of = dict(zip(rec.ch_names, rec.ch_regions, strict=True))
    assert all(region_of[c] in ("vSMC", "STG", "white") for c in inf)
    assert {region_of[c] for c in inf} & {"vSMC", "STG"}
    weights = subject.channel_weights
    assert all(weights[c] > 0 for c in inf)
    assert sum(w > 0 for w in weights.values()) == len(inf)
    assert rec.ch_coords is not None and rec.ch_coords.shape == (len(rec.ch_names), 3)
    assert not set(rec.bad_channels) & set(inf)


def test_task_structure_follows_the_paper(tiny):
    cfg = tiny.config
    subject = tiny.subjects[0]
    events = [ev for run in subject.task_runs for ev in run.events]
    counts = Counter(ev.label for ev in events)
    assert set(counts) == set(tiny.vocabulary) and len(tiny.vocabulary) == cfg.n_words
    assert set(counts.values()) == {cfg.trials_per_word}
    assert tiny.vocabulary == sorted(tiny.vocabulary)  # label index = code-point order
    assert all(ev.duration == 3.0 for ev in events)
    n_blocks = cfg.trials_per_word // 2
    assert len(subject.task_runs) == -(-n_blocks // cfg.blocks_per_run)
    for run in subject.task_runs:
        onsets = np.array([ev.onset for ev in run.events])
        gaps = np.diff(onsets)
        assert np.allclose(gaps[gaps < 4.0], 3.0)  # back-to-back 3-s trials in a block
        block = 2 * cfg.n_words
        labels = run.labels
        for b in range(0, len(labels), block):  # each block shows every word twice
            assert set(Counter(labels[b : b + block]).values()) == {2}
    assert subject.pretrain and all(not r.events for r in subject.pretrain)
    assert abs(sum(r.duration for r in subject.pretrain) - cfg.pretrain_hours * 3600) < 1.0


def test_words_share_parts(tiny):
    words = tiny.subjects[0].metadata["words"]
    parts = Counter(p for syllables in words.values() for syl in syllables for p in syl)
    assert any(n > 1 for n in parts.values())  # parts reused across words


def test_chunking_does_not_change_the_signal():
    cfg = SimulationConfig.preset("tiny", seed=3)
    model = sim._SubjectModel(cfg, 0, sim._vocabulary(cfg.n_words))
    n = int(2.5 * sim._BLOCK)
    utt = sim._spontaneous(model, sim._rng(3, 0, 2, 0), n)
    short = np.empty((model.n_channels, n), np.float32)
    sim._render(sim._RecordingGenerator(model, 100, n, utt), short)
    # a longer recording with the same events starts with exactly the same samples
    longer = np.empty((model.n_channels, n + sim._BLOCK), np.float32)
    sim._render(sim._RecordingGenerator(model, 100, n + sim._BLOCK, utt), longer)
    assert np.array_equal(short, longer[:, :n])
    # no jump at block boundaries: first differences there look like everywhere else
    d = np.abs(np.diff(short.astype(np.float64), axis=1))
    edge = d[:, sim._BLOCK - 1]
    assert np.median(edge) < 5 * np.median(d)


def test_streaming_to_disk_equals_in_memory(tmp_path):
    a = simulate(preset="tiny", seed=4, **FAST)
    b = simulate(preset="tiny", seed=4, out_dir=tmp_path, **FAST)
    for ra, rb in zip(a.recordings, b.recordings, strict=True):
        assert isinstance(rb.signals, np.memmap)
        assert np.array_equal(ra.signals, rb.signals)


def test_generation_memory_is_bounded(tmp_path):
    cfg = SimulationConfig.preset("tiny", seed=0, n_shafts=4, contacts_per_shaft=(12, 12))
    model = sim._SubjectModel(cfg, 0, sim._vocabulary(cfg.n_words))
    peaks = []
    for seconds in (60, 240):
        n = int(seconds * cfg.sfreq)
        utt = sim._spontaneous(model, sim._rng(0, 0, 2, 0), n)
        out = np.lib.format.open_memmap(
            tmp_path / f"{seconds}.npy", mode="w+", dtype=np.float32, shape=(model.n_channels, n)
        )
        tracemalloc.start()
        sim._render(sim._RecordingGenerator(model, 100, n, utt), out)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        del out
    full_240 = model.n_channels * 240 * cfg.sfreq * 4
    assert peaks[1] < 1.3 * peaks[0] + 1e6  # does not grow with length
    assert peaks[1] < full_240 / 2


def test_oracle_beats_logistic_regression_beats_chance():
    corpus = simulate(preset="tiny", seed=0, n_words=12, trials_per_word=20, pretrain_hours=0)
    subject = corpus.subjects[0]
    chance = 1 / 12
    logreg = band_power_baseline(subject)
    assert subject.oracle_accuracy > logreg + 0.1
    assert logreg > 2 * chance


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="difficulty"):
        SimulationConfig(difficulty=0).validate()
    with pytest.raises(ValueError, match="contacts_per_shaft"):
        SimulationConfig(contacts_per_shaft=(4, 20)).validate()
    with pytest.raises(ValueError, match="preset"):
        SimulationConfig.preset("huge")
    assert SimulationConfig.preset("paper").trials_per_word == 50


def test_simulate_to_disk_writes_truth(tmp_path):
    cfg = SimulationConfig.preset("tiny", seed=2, compute_baseline=False, **FAST)
    out = simulate_to_disk(tmp_path / "corpus", "npz", cfg)
    truth = json.loads((out / "simulation.json").read_text(encoding="utf-8"))
    assert truth["config"]["seed"] == 2
    sub = truth["subjects"]["01"]
    assert sub["informative_channels"] and 0 <= sub["oracle_accuracy"] <= 1
    assert truth["oracle_accuracy"]["01"] == sub["oracle_accuracy"]
    meta = json.loads((out / "raw" / "sub-01" / "wordreading_run-1.json").read_text("utf-8"))
    signals = np.load(out / "raw" / "sub-01" / "wordreading_run-1.npy", mmap_mode="r")
    assert signals.shape[0] == len(meta["ch_names"]) and meta["units"] == "V"
    assert not list(tmp_path.glob(".*sim-*"))  # scratch removed
    with pytest.raises(FileExistsError):
        simulate_to_disk(out, "npz", cfg)
    with pytest.raises(ValueError, match="format"):
        simulate_to_disk(tmp_path / "x", "edf", cfg)


def test_npz_layout_reads_back(tmp_path):
    from duin.data.simulate import read_simulated

    cfg = SimulationConfig.preset("tiny", seed=2, compute_baseline=False, **FAST)
    out = simulate_to_disk(tmp_path / "corpus", "npz", cfg)
    back = read_simulated(out)
    truth = json.loads((out / "simulation.json").read_text(encoding="utf-8"))
    assert [r.task for r in back] == ["rest", "wordreading", "wordreading"][: len(back)]
    for rec in back:
        assert isinstance(rec.signals, np.memmap) and rec.signals.dtype == np.float32
        assert rec.ch_names == truth["subjects"]["01"]["ch_names"]
        assert rec.sfreq == 2000.0 and rec.ch_regions is not None
    n_trials = sum(len(r.events) for r in back)
    assert n_trials == cfg.n_words * cfg.trials_per_word


@pytest.mark.parametrize("fmt", ["bids", "released"])
def test_bids_and_released_layouts_read_back(tmp_path, fmt):
    cfg = SimulationConfig.preset("tiny", seed=2, compute_baseline=False, **FAST)
    out = simulate_to_disk(tmp_path / fmt, fmt, cfg)
    assert (out / "simulation.json").is_file()
    if fmt == "bids":
        from duin.data.readers.bids import read_bids

        runs = read_bids(out, subject="01", task="wordreading")
        assert runs and runs[0].sfreq == 2000.0
        assert sum(len(r.events) for r in runs) == cfg.n_words * cfg.trials_per_word
        assert "simulation.json" in (out / ".bidsignore").read_text()
        report = validate(out)
        assert report["issues"]["errors"] == [], report["issues"]["errors"]
    else:
        from duin.data.readers.released import read_released

        runs = read_released(out, subject="01")
        assert runs and runs[0].sfreq == 1000.0
        assert sum(len(r.events) for r in runs) == cfg.n_words * cfg.trials_per_word
        pretrain = out / "data" / "seeg.he2023xuanwu" / "01" / "pretrain"
        files = sorted((pretrain / "dataset.default.1000hz").glob("*.npy"))
        seconds = round(cfg.pretrain_hours * 3600)
        assert cfg.pretrain_recording_hours * 3600 >= seconds  # one non-task recording
        assert len(files) == (seconds - 8) // 4 + 1  # 8-s windows every 4 s
        assert np.load(files[0]).shape == (2, runs[0].n_channels, 8000)
    assert not list(tmp_path.glob(".*sim-*"))


def test_informative_channels_after_rereferencing(tiny):
    subject = tiny.subjects[0]
    best = subject.informative_channels[0]
    stem = best.rstrip("0123456789")
    number = int(best[len(stem) :])
    pair = f"{stem}{number}-{stem}{number + 1}"
    names = ["Z1-Z2", pair, f"{stem}{number}"]
    assert subject.informative_among(names)[:1] in ([pair], [f"{stem}{number}"])
    assert "Z1-Z2" not in subject.informative_among(names)


def test_size_estimate_is_close(tiny):
    actual = sum(r.signals.nbytes for r in tiny.recordings)
    assert 0.7 < tiny.config.estimated_bytes() / actual < 1.3


def test_spontaneous_speech_is_words_of_a_zipf_lexicon():
    cfg = SimulationConfig.preset("tiny", seed=3, spontaneous_rate=2.0)
    model = sim._SubjectModel(cfg, 0, sim._vocabulary(cfg.n_words))
    words, freq = model.lexicon()
    assert len(words) == len(set(words)) == cfg.spontaneous_lexicon
    assert set(map(tuple, model.words)) <= set(words)  # the task words are in it
    assert freq.sum() == pytest.approx(1.0)
    assert sorted(freq)[-1] / sorted(freq)[0] == pytest.approx(len(words))  # 1/rank, ranks 1..N
    utts = sim._spontaneous(model, sim._rng(3, 0, 2, 0), int(1200 * cfg.sfreq))
    said = Counter(u.syllables for u in utts)
    assert set(said) <= set(words)
    top = words[int(np.argmax(freq))]
    assert said[top] / len(utts) == pytest.approx(freq.max(), abs=0.03)
    # the lexicon has its own random stream: the same subject with or without it
    flat = sim._SubjectModel(dataclasses.replace(cfg, spontaneous_lexicon=0), 0, model.vocabulary)
    assert np.array_equal(flat.hg_weights, model.hg_weights)
    assert all(
        len(u.syllables) in (1, 2, 3)
        for u in sim._spontaneous(flat, sim._rng(3, 0, 2, 0), int(60 * cfg.sfreq))
    )


def test_spontaneous_lexicon_is_validated():
    with pytest.raises(ValueError, match="spontaneous_lexicon"):
        SimulationConfig.preset("tiny", spontaneous_lexicon=3)
    cfg = SimulationConfig.preset("tiny", seed=1, spontaneous_lexicon=10**12)
    model = sim._SubjectModel(cfg, 0, sim._vocabulary(cfg.n_words))
    with pytest.raises(ValueError, match="do not fit"):
        model.lexicon()
