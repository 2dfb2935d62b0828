"""Preprocessing: chunked equals one-shot, line noise removed, re-referencing, bad channels."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import signal as sps

from duin.data.preprocess import (
    PreprocessConfig,
    bipolar_pairs,
    design_filter,
    parse_contact,
    preprocess,
)
from duin.data.recording import Event, Recording, RecordingError

SFREQ = 2000.0
LINE = (50.0, 100.0, 150.0)


def monopolar(
    n_seconds: float = 12.0, seed: int = 0, line_amp: float = 1e-4, **kwargs
) -> Recording:
    """Two shafts of contacts at 2 kHz: noise (~20 uV), slow drift and 50/100/150 Hz line noise."""
    rng = np.random.default_rng(seed)
    names = [f"SM{i}" for i in range(1, 6)] + [f"TI'{i}" for i in range(1, 5)]
    n = int(n_seconds * SFREQ) + 37  # not a multiple of any chunk size
    t = np.arange(n) / SFREQ
    x = rng.standard_normal((len(names), n)) * 2e-5 + 5e-4 * np.sin(2 * np.pi * 0.05 * t)
    for k, f in enumerate(LINE):
        x += line_amp * np.sin(2 * np.pi * f * t + k)
    kwargs.setdefault("events", [Event(1.0, 3.0, "吃"), Event(5.0, 3.0, "喝")])
    return Recording(
        x.astype(np.float32),
        SFREQ,
        names,
        "01",
        ch_regions=["vSMC"] * 5 + ["STG"] * 4,
        ch_coords=rng.normal(size=(len(names), 3)) * 0.01,
        **kwargs,
    )


def amplitude(x: np.ndarray, sfreq: float, freq: float) -> np.ndarray:
    """Per-channel amplitude of a sinusoid at ``freq`` (single-bin DFT)."""
    t = np.arange(x.shape[-1]) / sfreq
    return np.abs(x.astype(np.float64) @ np.exp(-2j * np.pi * freq * t)) * 2 / x.shape[-1]


@pytest.mark.parametrize(
    "config",
    [
        PreprocessConfig(),
        PreprocessConfig(phase="causal", reference="average", bad_channels="interpolate"),
        PreprocessConfig(sfreq=None, reference="none", bad_channels="zero"),
        PreprocessConfig(sfreq=500.0, line_freq=None, bipolar_naming="first"),
    ],
    ids=["paper", "causal-average", "no-resample", "to-500"],
)
def test_chunked_equals_one_shot(config):
    rec = monopolar(bad_channels=["SM3"])
    one_shot = preprocess(rec, config, chunk_samples=10**8)
    for chunk in (1000, 4099):
        chunked = preprocess(rec, config, chunk_samples=chunk)
        assert chunked.ch_names == one_shot.ch_names
        scale = np.abs(one_shot.signals).max()
        np.testing.assert_allclose(chunked.signals, one_shot.signals, rtol=0, atol=1e-6 * scale)


def test_matches_scipy_reference_chain():
    rec = monopolar()
    config = PreprocessConfig(reference="none", bad_channels="keep")
    sos = design_filter(config, SFREQ)
    x = rec.signals.astype(np.float64)
    expected = sps.resample_poly(sps.sosfiltfilt(sos, x, axis=-1), 1, 2, axis=-1)
    got = preprocess(rec, config, chunk_samples=3000)
    assert got.sfreq == 1000.0 and got.signals.shape == expected.shape
    np.testing.assert_allclose(got.signals, expected, rtol=0, atol=1e-6 * np.abs(expected).max())
    causal = preprocess(rec, dataclasses.replace(config, phase="causal"), chunk_samples=3000)
    zi = sps.sosfilt_zi(sos)[:, None, :] * x[None, :, :1]
    expected = sps.resample_poly(sps.sosfilt(sos, x, axis=-1, zi=zi)[0], 1, 2, axis=-1)
    np.testing.assert_allclose(causal.signals, expected, rtol=0, atol=1e-6 * np.abs(expected).max())


@pytest.mark.parametrize("phase", ["zero", "causal"])
def test_streamed_through_files_equals_one_shot_scipy(tmp_path, phase):
    # a memory-mapped recording filtered block by block through the on-disk scratch file (the
    # zero-phase backward pass reads it back in reverse) equals the one-shot scipy chain
    rec = monopolar(n_seconds=20.0)
    np.save(tmp_path / "in.npy", rec.signals)
    mapped = rec.replace(signals=np.load(tmp_path / "in.npy", mmap_mode="r"))
    config = PreprocessConfig(phase=phase)
    got = preprocess(mapped, config, out_path=tmp_path / "out.npy", chunk_samples=1500)
    sos = design_filter(config, SFREQ)
    x = rec.signals.astype(np.float64)
    if phase == "zero":
        filtered = sps.sosfiltfilt(sos, x, axis=-1)
    else:
        filtered = sps.sosfilt(
            sos, x, axis=-1, zi=sps.sosfilt_zi(sos)[:, None, :] * x[None, :, :1]
        )[0]
    resampled = sps.resample_poly(filtered, 1, 2, axis=-1)
    pairs = bipolar_pairs(rec.ch_names)
    expected = np.stack(
        [resampled[rec.ch_names.index(a)] - resampled[rec.ch_names.index(b)] for a, b in pairs]
    )
    assert got.signals.shape == expected.shape
    np.testing.assert_allclose(got.signals, expected, rtol=0, atol=1e-6 * np.abs(expected).max())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npy", "out.npy"]  # scratch removed


def test_line_noise_attenuated_by_more_than_30_db():
    rec = monopolar(line_amp=2e-4)
    out = preprocess(rec, PreprocessConfig(reference="none"), chunk_samples=5000)
    edge = 2000  # ignore filter edges (1 s at 2 kHz)
    for freq in LINE:
        before = amplitude(rec.signals[:, edge:-edge], SFREQ, freq)
        after = amplitude(out.signals[:, edge // 2 : -edge // 2], out.sfreq, freq)
        attenuation_db = 20 * np.log10(before / after)
        assert attenuation_db.min() > 30, (freq, attenuation_db)
    # The band of interest survives: a 20 Hz oscillation keeps its amplitude.
    t = np.arange(rec.n_times) / SFREQ
    tone = rec.replace(signals=(2e-5 * np.sin(2 * np.pi * 20 * t))[None].repeat(2, 0), ch_names=["A1", "A2"], ch_regions=None, ch_coords=None)  # fmt: skip
    kept = preprocess(tone, PreprocessConfig(reference="none"))
    ratio = amplitude(kept.signals[:, 1000:-1000], 1000.0, 20.0) / 2e-5
    np.testing.assert_allclose(ratio, 1.0, atol=0.01)


def test_bipolar_names_regions_coords_and_bad_contacts():
    rec = monopolar(bad_channels=["SM3"])
    out = preprocess(rec, PreprocessConfig(reference="bipolar", bad_channels="drop"))
    assert out.ch_names == ["SM1-SM2", "SM4-SM5", "TI'1-TI'2", "TI'2-TI'3", "TI'3-TI'4"]
    assert out.ch_regions == ["vSMC", "vSMC", "STG", "STG", "STG"]
    np.testing.assert_allclose(out.ch_coords[0], rec.ch_coords[:2].mean(axis=0))
    assert out.bad_channels == [] and out.sfreq == 1000.0
    assert out.events == rec.events
    first = preprocess(rec, PreprocessConfig(bipolar_naming="first", bad_channels="keep"))
    assert first.ch_names[:4] == ["SM1", "SM2", "SM3", "SM4"]
    assert first.bad_channels == ["SM2", "SM3"]  # pairs that use the bad contact
    # Bipolar = difference of the individually filtered contacts.
    none = preprocess(rec, PreprocessConfig(reference="none", bad_channels="keep"))
    np.testing.assert_allclose(
        first.signals[0], none.signals[0] - none.signals[1], atol=1e-6 * np.abs(none.signals).max()
    )


def test_average_reference_and_bad_channel_modes():
    rec = monopolar(bad_channels=["SM3"])
    base = PreprocessConfig(
        reference="average", line_freq=None, l_freq=None, h_freq=None, sfreq=None
    )
    dropped = preprocess(rec, base)
    assert "SM3" not in dropped.ch_names
    np.testing.assert_allclose(dropped.signals.sum(axis=0), 0, atol=1e-9)
    zeroed = preprocess(rec, dataclasses.replace(base, bad_channels="zero"))
    assert zeroed.bad_channels == ["SM3"] and np.all(zeroed.signals[2] == 0)
    interp = preprocess(
        rec, dataclasses.replace(base, reference="none", bad_channels="interpolate")
    )
    assert interp.bad_channels == []
    np.testing.assert_allclose(interp.signals[2], rec.signals[[1, 3]].mean(axis=0), rtol=1e-6)


def test_memmap_in_memmap_out(tmp_path):
    rec = monopolar()
    src = np.lib.format.open_memmap(tmp_path / "in.npy", "w+", np.float32, rec.signals.shape)
    src[:] = rec.signals
    src.flush()
    mapped = rec.replace(signals=np.load(tmp_path / "in.npy", mmap_mode="r"))
    out = preprocess(mapped, PreprocessConfig(), out_path=tmp_path / "out.npy", chunk_samples=2048)
    assert isinstance(out.signals, np.memmap) and out.provenance["signals_path"].endswith("out.npy")
    in_memory = preprocess(rec, PreprocessConfig(), chunk_samples=2048)
    np.testing.assert_array_equal(np.asarray(out.signals), in_memory.signals)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npy", "out.npy"]  # no scratch left
    assert out.provenance["preprocess"]["fingerprint"] == PreprocessConfig().fingerprint()


def test_config_validation_and_fingerprint():
    config = PreprocessConfig()
    assert config.fingerprint() == PreprocessConfig().fingerprint()
    assert len(config.fingerprint()) == 16
    assert config.fingerprint() != PreprocessConfig(h_freq=150.0).fingerprint()
    assert PreprocessConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown keys"):
        PreprocessConfig.from_dict({"hfreq": 1})
    for bad, field in [
        ({"l_freq": 300.0}, "l_freq"),
        ({"h_freq": -1.0}, "h_freq"),
        ({"phase": "backwards"}, "phase"),
        ({"reference": "laplacian"}, "reference"),
        ({"bad_channels": "ignore"}, "bad_channels"),
        ({"filter_order": 0}, "filter_order"),
        ({"notch_harmonics": 0}, "notch_harmonics"),
    ]:
        with pytest.raises(ValueError, match=f"PreprocessConfig.{field}"):
            PreprocessConfig(**bad).validate()
    with pytest.raises(ValueError, match="Nyquist"):
        PreprocessConfig(h_freq=600.0).validate(input_sfreq=2000.0)  # above the output Nyquist
    with pytest.raises(ValueError, match="rational"):
        PreprocessConfig(sfreq=1000.0 / 3**0.5, h_freq=100.0).validate(input_sfreq=2000.0)


def test_bad_input():
    rec = monopolar()
    with pytest.raises(RecordingError, match="needs more than"):
        preprocess(rec.crop(0, 0.02), PreprocessConfig())
    odd = rec.replace(ch_names=[f"X{c}" for c in "ABCDEFGHI"], ch_regions=None)
    with pytest.raises(RecordingError, match="bipolar"):
        preprocess(odd, PreprocessConfig())
    with pytest.raises(ValueError, match="chunk_samples"):
        preprocess(rec, chunk_samples=10)


def test_contact_parsing():
    assert parse_contact("SM8") == ("SM", 8)
    assert parse_contact("TI'12") == ("TI'", 12)
    assert parse_contact("LFP_RIGHT_0") == ("LFP_RIGHT_", 0)
    assert parse_contact("12") is None and parse_contact("Fz") is None
    assert bipolar_pairs(["A1", "A2", "A4", "A5", "B1"]) == [("A1", "A2"), ("A4", "A5")]
    assert bipolar_pairs(["A1", "A2", "A3"], exclude=["A2"]) == []
