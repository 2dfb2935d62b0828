"""Cache reuse and keys, training-only normalisation, shift augmentation, crops, padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from duin.data import datasets as ds_module
from duin.data.datasets import (
    PretrainDataset,
    TrialDataset,
    build_cache,
    cache_key,
    compute_channel_stats,
    shift_time,
)
from duin.data.preprocess import PreprocessConfig
from duin.data.recording import Event, Recording
from duin.data.splits import Window, pretrain_windows, split_trials

SF = 1000.0


def _recording(subject="01", run="1", n_channels=3, seconds=60.0, seed=0, offset_after=None):
    rng = np.random.default_rng(seed)
    n = int(seconds * SF)
    x = rng.normal(0, 1e-5, (n_channels, n)).astype(np.float32)
    x += (np.arange(n_channels, dtype=np.float32) * 1e-5)[:, None]
    events = [Event(1.0 + 3.0 * i, 3.0, f"w{i % 4}") for i in range(int((seconds - 2) // 3))]
    if offset_after is not None:  # a huge offset late in the run (where val/test will be)
        x[:, int(offset_after * SF) :] += 1.0
    return Recording(
        signals=x,
        sfreq=SF,
        ch_names=[f"A{i + 1}" for i in range(n_channels)],
        subject=subject,
        run=run,
        task="words",
        events=events,
        provenance={"source": f"test {subject} {run}"},
    )


def test_cache_is_reused_and_keyed(tmp_path, monkeypatch):
    recs = [_recording(run="1"), _recording(run="2", seed=1)]
    first = build_cache(recs, tmp_path)
    assert (first.n_built, first.n_reused) == (2, 0)

    def fail(*args, **kwargs):
        raise AssertionError("the second build must not write anything")

    monkeypatch.setattr(ds_module, "_build_entry", fail)
    second = build_cache(recs, tmp_path)
    assert (second.n_built, second.n_reused) == (0, 2)
    assert [e.key for e in first.entries] == [e.key for e in second.entries]
    np.testing.assert_array_equal(second.signals("sub-01_task-words_run-1"), recs[0].signals)
    assert isinstance(second.signals("sub-01_task-words_run-1"), np.memmap)
    # no temporary files left behind
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # the key changes with the channel selection and the data
    assert cache_key(recs[0]) != cache_key(recs[0], channels=["A1"])
    changed = recs[0].replace(signals=recs[0].signals + np.float32(1e-6))
    assert cache_key(changed) != cache_key(recs[0])


def test_cache_key_follows_preprocessing_config(tmp_path):
    rec = _recording(n_channels=4, seconds=20.0)
    a = PreprocessConfig(reference="none", sfreq=None, l_freq=0.5, h_freq=200.0)
    b = PreprocessConfig(reference="none", sfreq=None, l_freq=1.0, h_freq=200.0)
    assert cache_key(rec, a) != cache_key(rec, b)
    assert cache_key(rec, a) == cache_key(rec, PreprocessConfig(**a.to_dict()))
    index = build_cache([rec], tmp_path, a, channels=["A3", "A1"])
    entry = index.entries[0]
    assert entry.ch_names == ["A3", "A1"]
    assert index.signals(entry.recording).shape == (2, rec.n_times)
    assert build_cache([rec], tmp_path, a, channels=["A3", "A1"]).n_built == 0
    assert build_cache([rec], tmp_path, b, channels=["A3", "A1"]).n_built == 1
    with pytest.raises(ValueError, match="not in the preprocessed"):
        build_cache([rec], tmp_path, a, channels=["Z9"])
    # without a selection the preprocessed file itself becomes the cache entry
    whole = build_cache([rec], tmp_path, a)
    assert whole.n_built == 1 and whole.entries[0].ch_names == rec.ch_names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_zscore_uses_training_trials_only(tmp_path):
    rec = _recording(seconds=90.0, offset_after=60.0)
    index = build_cache([rec], tmp_path)
    trials = index.trials()
    split = split_trials(trials, seed=0, protocol="reference")  # the test pool is late trials
    train_only = split_trials(trials, seed=0)
    train = [t for t in train_only.train if t.stop <= 60.0]
    stats = compute_channel_stats(index, train)
    pooled = np.concatenate(
        [rec.signals[:, int(t.start * SF) : int(t.stop * SF)] for t in train], axis=1
    ).astype(np.float64)
    np.testing.assert_allclose(stats.mean["01"], pooled.mean(axis=1), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(stats.std["01"], pooled.std(axis=1), rtol=1e-6)
    # the late offset (only in held-out data) does not leak into training statistics
    assert np.all(np.abs(stats.mean["01"]) < 1e-3)
    dataset = TrialDataset(index, train, stats=stats)
    xs = torch.stack([dataset[i]["x"] for i in range(len(dataset))])
    assert abs(float(xs.mean())) < 0.05 and abs(float(xs.std()) - 1) < 0.05
    # the reference protocol pools all trials (recorded on the split)
    ref_stats = compute_channel_stats(index, split.normalization_trials, source="all")
    assert np.all(ref_stats.mean["01"] > 0.1)


def test_shift_semantics():
    x = np.arange(1, 11, dtype=np.float32)[None, :].repeat(2, axis=0)
    pos = shift_time(x, 3)  # delays, zero-fills the head
    np.testing.assert_array_equal(pos[0], [0, 0, 0, 1, 2, 3, 4, 5, 6, 7])
    neg = shift_time(x, -3)  # advances, zero-fills the tail
    np.testing.assert_array_equal(neg[1], [4, 5, 6, 7, 8, 9, 10, 0, 0, 0])
    np.testing.assert_array_equal(shift_time(x, 0), x)
    assert not shift_time(x, 12).any()


def test_trial_dataset_samples_and_seeded_shift(tmp_path):
    rec = _recording(seconds=40.0)
    index = build_cache([rec], tmp_path)
    trials = index.trials()
    plain = TrialDataset(index, trials)
    sample = plain[2]
    assert set(sample) == {"x", "subject", "labels"}
    assert sample["x"].dtype == torch.float32 and sample["x"].shape == (3, 3000)
    assert sample["subject"].dtype == torch.int64 and sample["subject"].ndim == 0
    assert int(sample["labels"]) == plain.labels.index(trials[2].label)
    start = int(trials[2].onset * SF)
    np.testing.assert_array_equal(sample["x"].numpy(), rec.signals[:, start : start + 3000])

    aug = TrialDataset(index, trials, max_shift=300, seed=5)
    shifts = set()
    for i in range(len(aug)):
        x_aug = aug[i]["x"].numpy()
        x = plain[i]["x"].numpy()
        matches = [s for s in range(-300, 301) if np.array_equal(shift_time(x, s), x_aug)]
        assert len(matches) == 1
        shifts.add(matches[0])
        np.testing.assert_array_equal(aug[i]["x"].numpy(), x_aug)  # deterministic per epoch
    assert len(shifts) > 1
    aug.set_epoch(1)
    assert any(not torch.equal(aug[i]["x"], plain[i]["x"]) for i in range(len(aug)))


def test_pretrain_crops_stay_inside_windows_and_are_seeded(tmp_path):
    rec = _recording(seconds=60.0)
    index = build_cache([rec], tmp_path)
    split = split_trials(index.trials(), seed=0)
    windows = pretrain_windows(index.spans(), split, margin=0.5, length=8.0)
    stats = compute_channel_stats(index, windows, by="recording")
    assert set(stats.mean) == {index.entries[0].recording} and stats.by == "recording"
    data = PretrainDataset(index, windows, crop_len=4000, seed=3, stats=stats)
    assert len(data) == len(windows)
    held = [(t.start - 0.5, t.stop + 0.5) for t in split.val + split.test]
    for epoch in range(3):
        data.set_epoch(epoch)
        for i in range(len(data)):
            start = data.crop_start(i)
            w = data.windows[i]
            assert w.start * SF <= start and start + 4000 <= w.stop * SF + 1e-6
            assert all(start + 4000 <= lo * SF or start >= hi * SF for lo, hi in held)
            sample = data[i]
            assert sample["x"].shape == (3, 4000) and "labels" not in sample
    data.set_epoch(0)
    first = [data.crop_start(i) for i in range(len(data))]
    data.set_epoch(0)
    assert first == [data.crop_start(i) for i in range(len(data))]
    data.set_epoch(1)
    assert first != [data.crop_start(i) for i in range(len(data))]
    with pytest.raises(ValueError, match="crop"):
        PretrainDataset(index, [Window(windows[0].recording, "01", 0.0, 2.0)], crop_len=4000)


def test_multi_subject_padding_and_index(tmp_path):
    recs = [
        _recording("01", n_channels=3, seconds=20.0),
        _recording("02", n_channels=5, seconds=20.0),
    ]
    index = build_cache(recs, tmp_path)
    trials = index.trials()
    stats = compute_channel_stats(index, trials)
    data = TrialDataset(index, trials, stats=stats)
    assert data.n_channels == 5
    by_subject = {}
    for i, t in enumerate(trials):
        sample = data[i]
        by_subject[t.subject] = sample
    assert int(by_subject["01"]["subject"]) == 0 and int(by_subject["02"]["subject"]) == 1
    x01 = by_subject["01"]["x"]
    assert x01.shape == (5, 3000) and not x01[3:].any() and x01[:3].abs().sum() > 0
    batch = torch.utils.data.default_collate([data[0], data[len(data) - 1]])
    assert batch["x"].shape == (2, 5, 3000) and batch["subject"].shape == (2,)


def test_channel_rows_pick_and_order_channels(tmp_path):
    rec = _recording(seconds=40.0)
    index = build_cache([rec], tmp_path)
    trials = index.trials()
    plain = TrialDataset(index, trials)
    picked = TrialDataset(index, trials, channel_rows=[2, 0])
    assert picked[1]["x"].shape == (2, 3000)
    torch.testing.assert_close(picked[1]["x"], plain[1]["x"][[2, 0]])
    assert int(picked[1]["labels"]) == int(plain[1]["labels"])
