"""The decoding ceiling (:func:`oracle_accuracy`: a maximum-likelihood classifier that knows
the generator) and a simple band-power baseline (:func:`band_power_baseline`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import scipy.signal as sps

from duin.data.recording import Recording
from duin.data.simulate.config import _HG_BAND, _PREPARE_S, _RUN_PAD_S, _TRIAL_S, SimulatedSubject
from duin.data.simulate.signal import _RecordingGenerator, _Utterance
from duin.data.simulate.subject import _hg_sos, _rng, _SubjectModel


# ---------------------------------------------------------------------------------- oracle
def _oracle_features(lf: np.ndarray, hg_power: np.ndarray, sfreq: float) -> np.ndarray:
    """Features of (lf signal, hg power): 40-ms LF samples and 20-ms log HG-power bins."""
    step_lf = int(0.04 * sfreq)
    step_hg = int(0.02 * sfreq)
    n = lf.shape[-1] // step_hg * step_hg
    lf_feat = lf[..., step_lf // 2 : n : step_lf]
    hg = hg_power[..., :n].reshape(*hg_power.shape[:-1], n // step_hg, step_hg).mean(-1)
    return np.concatenate([lf_feat, np.log(hg)], axis=-1)


_FEATURE_CHUNK = 32  # trials filtered at once by _observed_features


def _line_notches(sfreq: float, line_freq: float | None, band: tuple[float, float]) -> np.ndarray:
    """Notch sections ``(n, 6)`` for the mains harmonics inside ``band`` (none: empty)."""
    if not line_freq:
        return np.zeros((0, 6))
    harmonics = [f for f in np.arange(line_freq, band[1], line_freq) if f > band[0]]
    return np.concatenate(
        [np.zeros((0, 6))] + [sps.tf2sos(*sps.iirnotch(f, 30.0, fs=sfreq)) for f in harmonics]
    )


def _observed_features(epochs: np.ndarray, sfreq: float, line_freq: float | None) -> np.ndarray:
    """Oracle features of observed epochs ``(n, n_inf, n_times)`` (volts).

    Mains harmonics inside the high-gamma band are notched first: the line noise is far above
    the background's high-gamma power, and any decoder (the paper's preprocessing too) removes it.
    Trials are filtered in chunks (each trial independently), so the filter outputs never exist
    for all trials at once: peak memory does not grow with the number of trials.
    """
    lf_sos = sps.butter(4, 12.0, fs=sfreq, output="sos")
    hg_sos = np.concatenate([_line_notches(sfreq, line_freq, _HG_BAND), _hg_sos(sfreq)])
    chunks = []
    for start in range(0, len(epochs), _FEATURE_CHUNK):
        part = epochs[start : start + _FEATURE_CHUNK]
        lf = sps.sosfiltfilt(lf_sos, part, axis=-1)
        hg = sps.sosfiltfilt(hg_sos, part, axis=-1)
        chunks.append(_oracle_features(lf, hg**2, sfreq))
    return np.concatenate(chunks)


def _restricted(model: _SubjectModel, shafts: Sequence[int]) -> _SubjectModel:
    """A shallow copy of ``model`` keeping only some shafts (for cheap oracle rendering).

    The background of a contact depends only on its own shaft (AR correlation, oscillation
    sources, gains, line noise), so the informative contacts of the copy have the same
    distribution as in the full recording.
    """
    sub = _SubjectModel.__new__(_SubjectModel)
    sub.__dict__.update(model.__dict__)
    rows = np.concatenate([model.shaft_rows[s] for s in shafts])
    new_index = {int(r): i for i, r in enumerate(rows)}
    sub.shaft_rows = [np.array([new_index[int(r)] for r in model.shaft_rows[s]]) for s in shafts]
    sub.n_channels = len(rows)
    sub.gain = model.gain[rows]
    src_cols = np.concatenate([[2 * s, 2 * s + 1] for s in shafts])
    sub.osc_mix = model.osc_mix[np.ix_(rows, src_cols)]
    sub.osc_freqs = [model.osc_freqs[c] for c in src_cols]
    sub.osc_sos = [model.osc_sos[c] for c in src_cols]
    sub.line_mix = model.line_mix[rows]
    sub.informative = np.array([new_index[int(r)] for r in model.informative])
    sub.bad_kind = {new_index[i]: k for i, k in model.bad_kind.items() if i in new_index}
    return sub


def _render_epochs(
    model: _SubjectModel,
    word_ids: np.ndarray,
    seed_key: int,
) -> np.ndarray:
    """Fresh 3-s trials ``(n, n_informative, n_times)`` rendered exactly like a task run.

    Only the shafts holding informative contacts are generated, and without artefacts.
    """
    sf = model.sfreq
    shafts = sorted({int(model.shaft_of[r]) for r in model.informative})
    view = _restricted(model, shafts)
    rng = _rng(model.config.seed, model.index, seed_key)
    utterances, onsets = [], []
    t = _RUN_PAD_S
    for word in word_ids:
        onset, dur, amp = model.draw_trial(rng)
        utterances.append(
            _Utterance(
                int(round((t + _PREPARE_S + onset) * sf)),
                model.words[int(word)],
                dur,
                amp,
                int(rng.integers(2**62)),
            )
        )
        onsets.append(int(round(t * sf)))
        t += _TRIAL_S
    n_times = int(round((t + _RUN_PAD_S) * sf))
    gen = _RecordingGenerator(view, seed_key, n_times, utterances)
    gen.with_artefacts = False  # the oracle is scored on artefact-free trials
    win = int(_TRIAL_S * sf)
    inf = view.informative
    out = np.empty((len(word_ids), len(inf), win), dtype=np.float32)
    for start, block in gen.blocks():
        stop = start + block.shape[1]
        for i, o in enumerate(onsets):
            s0, s1 = max(o, start), min(o + win, stop)
            if s1 > s0:
                out[i, :, s0 - o : s1 - o] = block[inf, s0 - start : s1 - start]
    return out


def oracle_accuracy(model: _SubjectModel, n_trials_per_word: int | None = None) -> float:
    """Accuracy of the maximum-likelihood classifier that knows the generative model.

    Fresh held-out trials (``n_trials_per_word`` per word, artefact-free, seeded independently
    of the corpus) are rendered on the informative channels. Each trial is reduced to 40-ms
    low-frequency (< 12 Hz) samples and 20-ms log high-gamma-power bins. For every word, a grid
    of onset jitters (9 points over +-2.5 SD, Gaussian prior weights) and amplitudes (5
    log-normal quantiles) gives the *exact* expected low-frequency response and the expected
    high-gamma power (background power, measured on response-free trials of the same
    generator, plus the squared template envelope). The per-feature noise SD is measured on
    those response-free trials (the noise model). The classifier picks the word with the
    largest likelihood summed over the grid, treating features as independent Gaussians. It
    is a lower bound on the Bayes rate (it ignores feature correlations and the syllable-
    duration variability), i.e. a slightly conservative ceiling.

    Parameters
    ----------
    model : _SubjectModel
        The subject's generative parameters.
    n_trials_per_word : int, optional
        Held-out trials per word (default ``config.oracle_trials_per_word``).

    Returns
    -------
    float
        Accuracy in [0, 1].
    """
    cfg = model.config
    sf = model.sfreq
    n_words = cfg.n_words
    n_per = n_trials_per_word or cfg.oracle_trials_per_word
    word_ids = np.tile(np.arange(n_words), n_per)
    epochs = _render_epochs(model, word_ids, seed_key=777_001)  # (n, n_inf, win)
    feats = _observed_features(
        epochs.astype(np.float64), sf, model.config.line_freq
    )  # (n, n_inf, n_feat)

    # noise model: the same generator with the responses switched off
    quiet_model = _SubjectModel.__new__(_SubjectModel)
    quiet_model.__dict__.update(model.__dict__)
    quiet_model.config = dataclasses.replace(cfg, hg_snr=0.0, lf_snr=0.0)
    noise_epochs = _render_epochs(quiet_model, np.zeros(max(100, 2 * n_words), int), 777_002)
    noise_feats = _observed_features(noise_epochs.astype(np.float64), sf, model.config.line_freq)
    sd = noise_feats.std(axis=0) + 1e-12  # (n_inf, n_feat)
    step_lf, step_hg = int(0.04 * sf), int(0.02 * sf)
    win = int(_TRIAL_S * sf)
    n_lf = len(range(step_lf // 2, win, step_lf))
    bg_lf_mean = noise_feats[..., :n_lf].mean(axis=0)
    bg_hg_power = np.exp(noise_feats[..., n_lf:]).mean(axis=0)  # mean power per bin
    hg_log_bias = noise_feats[..., n_lf:].mean(axis=0) - np.log(bg_hg_power)

    # template grid: exact expectations at each (word, jitter, amplitude) grid point
    z_jit = np.linspace(-2.5, 2.5, 9)
    log_prior = -0.5 * z_jit**2
    log_prior -= np.logaddexp.reduce(log_prior)
    z_amp = np.array([-1.28, -0.52, 0.0, 0.52, 1.28])
    amps = np.exp(cfg.amplitude_sd * z_amp) / cfg.difficulty
    t_trial = np.arange(win) / sf
    lf_sos = sps.butter(4, 12.0, fs=sf, output="sos")
    templates, priors = [], []
    for w in range(n_words):
        for zj, lp in zip(z_jit, log_prior, strict=False):
            onset = float(np.clip(cfg.reaction_time + zj * cfg.effective_jitter_sd, 0.2, 1.4))
            lf, hg_pow = model.response(
                model.words[w], 0.25, 1.0, t_trial - (_PREPARE_S + onset), None
            )
            lf = sps.sosfiltfilt(lf_sos, lf, axis=-1)[:, step_lf // 2 :: step_lf]
            hg_bins = hg_pow[:, : win // step_hg * step_hg].reshape(len(lf), -1, step_hg).mean(-1)
            for a in amps:
                mu = np.concatenate(
                    [bg_lf_mean + a * lf, np.log(bg_hg_power + a**2 * hg_bins) + hg_log_bias],
                    axis=-1,
                )
                templates.append(mu.ravel())
                priors.append(lp - math.log(len(amps)))
    mu = np.asarray(templates) / sd.ravel()[None, :]  # (n_templates, n_features), whitened
    f = feats.reshape(len(feats), -1) / sd.ravel()[None, :]  # (n_trials, n_features)
    # log N(f; mu, I) up to a constant: f.mu - |mu|^2 / 2
    ll = f @ mu.T - 0.5 * (mu**2).sum(axis=1)[None, :] + np.asarray(priors)[None, :]
    ll = ll.reshape(len(f), n_words, -1)  # (n_trials, n_words, n_grid)
    scores = np.logaddexp.reduce(ll, axis=2)
    return float((scores.argmax(axis=1) == word_ids).mean())


# ---------------------------------------------------------------------------------- baseline
def band_power_features(
    recording: Recording,
    channels: Sequence[str],
    window: tuple[float, float] = (0.0, 3.0),
    bin_s: float = 0.1,
    band: tuple[float, float] = _HG_BAND,
    line_freq: float | None = 50.0,
) -> tuple[np.ndarray, list[str]]:
    """Log high-gamma power in ``bin_s`` bins for every labelled event of a recording.

    Parameters
    ----------
    recording : Recording
        Raw or preprocessed recording with word events.
    channels : sequence of str
        Channels to use.
    window : tuple of float
        Seconds relative to each event onset.
    bin_s : float
        Bin width in seconds.
    band : tuple of float
        Band-pass in Hz (clipped to below Nyquist).
    line_freq : float or None
        Mains frequency whose harmonics inside the band are notched first (raw recordings carry
        line noise far above the background's high-gamma power); ``None``: no notch.

    Returns
    -------
    features : numpy.ndarray
        ``(n_events, n_channels * n_bins)``.
    labels : list of str
        Event labels.
    """
    sf = recording.sfreq
    rows = [recording.ch_names.index(c) for c in channels]
    hi = min(band[1], 0.45 * sf)
    sos = sps.butter(4, (band[0], hi), btype="band", fs=sf, output="sos")
    sos = np.concatenate([_line_notches(sf, line_freq, (band[0], hi)), sos])
    pad = int(0.5 * sf)
    win = int(round((window[1] - window[0]) * sf))
    step = int(round(bin_s * sf))
    feats, labels = [], []
    for ev in recording.events:
        s0 = int(round((ev.onset + window[0]) * sf))
        lo, hi_s = max(0, s0 - pad), min(recording.n_times, s0 + win + pad)
        seg = np.asarray(recording.signals[rows, lo:hi_s], dtype=np.float64)
        filt = sps.sosfiltfilt(sos, seg, axis=-1)[:, s0 - lo : s0 - lo + win]
        if filt.shape[1] < win:
            continue
        power = (filt[:, : win // step * step] ** 2).reshape(len(rows), -1, step).mean(-1)
        feats.append(np.log(power + 1e-30).ravel())
        labels.append(ev.label)
    return np.asarray(feats), labels


def band_power_baseline(
    subject: SimulatedSubject,
    channels: Sequence[str] | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> float:
    """Test accuracy of a logistic regression on 100-ms high-gamma band power.

    Parameters
    ----------
    subject : SimulatedSubject
        The subject whose task runs are used.
    channels : sequence of str, optional
        Channels (default: the informative contacts, i.e. a perfect channel selection).
    test_fraction : float
        Stratified held-out fraction.
    seed : int
        Split seed.

    Returns
    -------
    float
        Held-out accuracy.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    channels = list(channels or subject.informative_channels)
    xs, ys = [], []
    for run in subject.task_runs:
        x, y = band_power_features(run, channels)
        xs.append(x)
        ys.extend(y)
    x = np.concatenate(xs)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, ys, test_size=test_fraction, stratify=ys, random_state=seed
    )
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000))
    clf.fit(x_tr, y_tr)
    return float(clf.score(x_te, y_te))
