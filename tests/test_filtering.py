"""Block filtering with carried state equals one-shot scipy filtering, for any block sizes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import signal as sps

from duin.data.filtering import BlockFilter


def blocks(n: int, rng: np.random.Generator, first: int) -> list[tuple[int, int]]:
    """Irregular consecutive ``[start, stop)`` blocks covering ``n`` samples."""
    edges = [0, first]
    while edges[-1] < n:
        edges.append(min(n, edges[-1] + int(rng.integers(1, 700))))
    return list(itertools.pairwise(edges))


@pytest.fixture
def sos() -> np.ndarray:
    band = sps.butter(4, [0.5, 200.0], "bandpass", fs=2000.0, output="sos")
    notch = sps.tf2sos(*sps.iirnotch(50.0, 30.0, fs=2000.0))
    return np.vstack([band, notch])


def test_zero_phase_blocks_equal_sosfiltfilt(sos):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 9001)).cumsum(axis=1)  # drifting, so the start-up matters
    bf = BlockFilter(sos, zero_phase=True)
    spans = blocks(x.shape[1], rng, bf.n_start)
    forward = np.concatenate([bf.forward(x[:, a:b]) for a, b in spans], axis=1)
    state = bf.end_state(x[:, -bf.n_start :])
    out = np.empty_like(forward)
    for a, b in reversed(spans):
        out[:, a:b], state = bf.backward(forward[:, a:b], state)
    expected = sps.sosfiltfilt(sos, x, axis=-1)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-9 * np.abs(expected).max())


def test_causal_blocks_equal_steady_state_sosfilt(sos):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 5000)).cumsum(axis=1)
    bf = BlockFilter(sos, zero_phase=False)
    assert bf.n_start == 1
    out = np.concatenate([bf.forward(x[:, a:b]) for a, b in blocks(x.shape[1], rng, 1)], axis=1)
    zi = sps.sosfilt_zi(sos)[:, None, :] * x[None, :, :1]
    expected, _ = sps.sosfilt(sos, x, axis=-1, zi=zi)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-9 * np.abs(expected).max())


def test_first_block_too_short_and_end_before_start(sos):
    bf = BlockFilter(sos, zero_phase=True)
    with pytest.raises(ValueError, match="end_state"):
        bf.end_state(np.zeros((1, bf.n_start)))
    with pytest.raises(ValueError, match=f"needs {bf.n_start}"):
        bf.forward(np.zeros((1, bf.n_start - 1)))
