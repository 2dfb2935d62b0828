"""One simulated subject: montage (shafts, contacts, regions), background and artefact
parameters, the word-part responses on the informative contacts, and shared signal helpers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.signal as sps

from duin.data.simulate.config import (
    _FALLBACK_N_CHARS,
    _HG_BAND,
    _REGION_INFORMATIVE,
    SimulationConfig,
)


# ---------------------------------------------------------------------------------- helpers
def _vocabulary(n_words: int) -> list[str]:
    """The first ``n_words`` labels of the 61-word vocabulary in label (code-point) order."""
    try:
        from duin.data.words import WORDS

        return sorted(WORDS)[:n_words]
    except ImportError:  # pragma: no cover - only if the vocabulary module is absent
        pass
    return [f"word{i:02d}" + ("x" * (_FALLBACK_N_CHARS[i] - 1)) for i in range(n_words)]


def _rng(*key: int) -> np.random.Generator:
    """An independent generator for a tuple of non-negative ints (seed, subject, stream...)."""
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


def _pink_sos(sfreq: float, exponent: float, knee: float = 0.3) -> np.ndarray:
    """Second-order sections shaping unit white noise to unit-RMS ``1/f**exponent`` power.

    Alternating real poles and zeros, log-spaced from ``knee`` Hz up to Nyquist: each pole
    bends the amplitude slope by -1, each following zero by +1, so with the zero a fraction
    ``exponent/2`` of the way to the next pole the average power slope is ``-exponent``. One
    such cascade reaches at most ``-2``; steeper spectra (real sEEG/ECoG: about ``-2.5`` to
    ``-3`` between 2 and 100 Hz) cascade two with half the exponent each. Below ``knee`` the
    spectrum is flat.
    """
    n_cascades = 1 if exponent <= 1.9 else 2
    sos = np.concatenate([_pole_zero_sos(sfreq, exponent / n_cascades, knee)] * n_cascades)
    # normalise to unit output RMS for unit white input (from the impulse response energy)
    impulse = np.zeros(int(sfreq * 20))
    impulse[0] = 1.0
    h = sps.sosfilt(sos, impulse)
    rms = float(np.sqrt(np.sum(h**2)))
    sos[0, :3] /= rms
    return sos


def _pole_zero_sos(sfreq: float, exponent: float, knee: float) -> np.ndarray:
    """One pole/zero cascade with average power slope ``-exponent`` (<= 2) above ``knee`` Hz."""
    nyq = sfreq / 2
    ratio = math.sqrt(10.0)
    poles, zeros = [], []
    f = knee
    while f < nyq * 0.9:
        poles.append(f)
        zeros.append(min(f * ratio ** (exponent / 2), nyq * 0.95))
        f *= ratio
    # analogue zpk -> bilinear (pre-warped) digital
    warp = lambda hz: 2 * sfreq * math.tan(math.pi * hz / sfreq)  # noqa: E731
    z_a = [-warp(v) for v in zeros]
    p_a = [-warp(v) for v in poles]
    z, p, k = sps.bilinear_zpk(z_a, p_a, 1.0, sfreq)
    return sps.zpk2sos(z, p, k)


def _band_rms(sos: np.ndarray, sfreq: float, band: tuple[float, float]) -> float:
    """RMS of unit-white-noise filtered by ``sos`` within ``band`` (Hz)."""
    freqs, resp = sps.sosfreqz(sos, worN=8192, fs=sfreq)
    sel = (freqs >= band[0]) & (freqs <= band[1])
    # one-sided PSD of unit white noise at rate fs is 2/fs per Hz
    power = np.trapezoid(np.abs(resp[sel]) ** 2 * 2 / sfreq, freqs[sel])
    return float(np.sqrt(power))


def _bump(t: np.ndarray, center: np.ndarray, width: np.ndarray) -> np.ndarray:
    """Gaussian bumps: ``t`` (n_times,), centre/width (n,) -> (n, n_times)."""
    return np.exp(-0.5 * ((t[None, :] - center[:, None]) / width[:, None]) ** 2)


# ---------------------------------------------------------------------------------- subject
class _SubjectModel:
    """Generative parameters of one subject (anatomy, noise, word parts and responses)."""

    def __init__(self, config: SimulationConfig, index: int, vocabulary: list[str]) -> None:
        self.config = config
        self.index = index
        self.subject = f"{index + 1:02d}"
        rng = _rng(config.seed, index, 0)
        sf = config.sfreq
        self.sfreq = sf

        # ---- anatomy: shafts A, B, ... with contacts 1..n (1 = deepest)
        names, regions, shaft_of, coords = [], [], [], []
        self.shaft_rows: list[np.ndarray] = []
        lo, hi = config.contacts_per_shaft
        letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        for s in range(config.n_shafts):
            n_contacts = int(rng.integers(lo, hi + 1))
            letter = letters[s % 26] + ("'" if s >= 26 else "")
            if s == 0:
                cortex = "vSMC"
            elif s == 1:
                cortex = "STG"
            else:
                cortex = str(rng.choice(["other", "MTG", "insula", "other"]))
            deep = "hippocampus" if s == 1 or rng.random() < 0.3 else "white"
            n_cortex = int(rng.integers(3, 6))
            n_deep = int(rng.integers(1, 3))
            entry = rng.uniform(-0.06, 0.06, 3)
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            start = len(names)
            for c in range(n_contacts):
                names.append(f"{letter}{c + 1}")
                if c < n_deep:
                    regions.append(deep)
                elif c >= n_contacts - n_cortex:
                    regions.append(cortex)
                else:
                    regions.append("white")
                shaft_of.append(s)
                coords.append(entry + direction * 0.0035 * c)
            self.shaft_rows.append(np.arange(start, len(names)))
        self.ch_names = names
        self.ch_regions = regions
        self.ch_coords = np.asarray(coords)
        self.shaft_of = np.asarray(shaft_of)
        n_ch = len(names)
        self.n_channels = n_ch

        # ---- background: per-channel gain, bad channels, oscillation and line-noise mixing
        self.pink_sos = _pink_sos(sf, config.spectral_exponent, config.spectral_knee)
        self.gain = config.background_rms * np.exp(rng.normal(0, 0.35, n_ch))
        n_bad = int(round(config.bad_channel_fraction * n_ch))
        informative_shafts = set(self.shaft_rows[0]) | set(self.shaft_rows[1])
        candidates = [i for i in range(n_ch) if i not in informative_shafts]
        bad = sorted(rng.choice(candidates, size=min(n_bad, len(candidates)), replace=False))
        self.bad_kind = {int(i): ("noisy" if rng.random() < 0.6 else "flat") for i in bad}
        for i, kind in self.bad_kind.items():
            self.gain[i] *= 8.0 if kind == "noisy" else 0.03
        self.bad_channels = [names[i] for i in self.bad_kind]

        # oscillation sources: alpha and beta per shaft, burst-gated
        self.osc_freqs = []
        mix = np.zeros((n_ch, 2 * config.n_shafts))
        for s, rows in enumerate(self.shaft_rows):
            for j, (f_lo, f_hi) in enumerate(((8.0, 12.0), (15.0, 25.0))):
                self.osc_freqs.append(float(rng.uniform(f_lo, f_hi)))
                centre = rng.uniform(0, len(rows))
                profile = np.exp(-0.5 * ((np.arange(len(rows)) - centre) / 3.0) ** 2)
                mix[rows, 2 * s + j] = profile * (1.5 if j == 0 else 0.8)
        self.osc_mix = mix * self.gain[:, None]  # (n_ch, n_sources)
        self.osc_sos = [sps.iirpeak(f, Q=f / 3.0, fs=sf) for f in self.osc_freqs]  # list of (b, a)
        self.gate_sos = sps.butter(2, 0.7, fs=sf, output="sos")
        # line noise: per-channel amplitude/phase per harmonic -> (n_ch, 2 * n_harm)
        n_harm = config.n_line_harmonics
        line_amp = config.background_rms * np.exp(rng.normal(-0.5, 0.6, (n_ch, max(n_harm, 1))))
        line_amp = line_amp[:, :n_harm] / (1 + np.arange(n_harm))[None, :]
        for i, kind in self.bad_kind.items():
            if kind == "noisy":
                line_amp[i] *= 20.0
        phase = rng.uniform(0, 2 * np.pi, (n_ch, n_harm))
        self.line_mix = np.concatenate(
            [line_amp * np.cos(phase), line_amp * np.sin(phase)], axis=1
        )  # (n_ch, 2 * n_harm): coefficients of sin(wt), cos(wt)

        # ---- word information: informative contacts and their weights
        weights = np.zeros(n_ch)
        for s in (0, 1):
            rows = self.shaft_rows[s]
            for r in rows:
                if regions[r] in _REGION_INFORMATIVE:
                    weights[r] = rng.uniform(0.5, 1.0)
            # white-matter contacts just below the cortical ones pick up a little (as in the
            # paper, where several selected contacts sat in white matter)
            cortical = [r for r in rows if regions[r] in _REGION_INFORMATIVE]
            if cortical:
                first = cortical[0]
                for r in (first - 1, first - 2):
                    if r in set(rows) and regions[r] == "white":
                        weights[r] = rng.uniform(0.15, 0.35)
        self.weights = weights
        order = np.argsort(-weights, kind="stable")
        self.informative = np.array([i for i in order if weights[i] > 0])  # rows, best first
        inf = self.informative
        n_inf = len(inf)
        # region latency relative to speech onset: vSMC leads, STG follows
        self.latency = np.array(
            [
                (-0.05 if regions[r] == "vSMC" else 0.12 if regions[r] == "STG" else 0.03)
                + rng.normal(0, 0.015)
                for r in inf
            ]
        )
        # background band RMS of each informative channel (for the response scaling)
        self.bg_hg_rms = _band_rms(self.pink_sos, sf, _HG_BAND) * self.gain[inf]
        self.bg_lf_rms = _band_rms(self.pink_sos, sf, (1.0, 12.0)) * self.gain[inf]

        # ---- word parts: initials, finals, tones each with a spatio-temporal response.
        # With the paper's vocabulary the parts are the real pinyin initials/finals/tones.
        self.vocabulary = vocabulary
        self._lexicon: tuple[list[tuple[tuple[int, int, int], ...]], np.ndarray] | None = None
        parsed = _syllables_of(vocabulary, rng)
        initials = sorted({syl[0] for word in parsed for syl in word})
        finals = sorted({syl[1] for word in parsed for syl in word})
        tones = sorted({syl[2] for word in parsed for syl in word})
        self.part_names = (
            [f"initial:{v}" for v in initials]
            + [f"final:{v}" for v in finals]
            + [f"tone:{v}" for v in tones]
        )
        self.n_initials, self.n_finals, self.n_tones = len(initials), len(finals), len(tones)
        self.words = [
            tuple((initials.index(i), finals.index(f), tones.index(t)) for i, f, t in word)
            for word in parsed
        ]
        n_parts = len(self.part_names)
        self.part_offset = np.concatenate(
            [
                rng.uniform(0.0, 0.06, self.n_initials),  # initials: syllable start
                rng.uniform(0.08, 0.18, self.n_finals),  # finals: the vowel
                rng.uniform(0.05, 0.15, self.n_tones),
            ]
        )
        self.part_width = np.concatenate(
            [
                rng.uniform(0.03, 0.06, self.n_initials),
                rng.uniform(0.05, 0.10, self.n_finals),
                rng.uniform(0.08, 0.14, self.n_tones),
            ]
        )
        # spatial patterns: smooth along the shaft (random walk), sparse-ish, region gated
        hg_w = np.zeros((n_parts, n_inf))
        lf_w = np.zeros((n_parts, n_inf))
        for p in range(n_parts):
            walk = np.cumsum(rng.normal(0, 1, n_inf))
            pattern = np.maximum(rng.normal(0, 1, n_inf) + 0.6 * (walk - walk.mean()), 0)
            hg_w[p] = pattern / (pattern.max() + 1e-9)
            lf_w[p] = rng.normal(0, 1, n_inf) * (
                1.0 if p >= self.n_initials + self.n_finals else 0.5
            )
        hg_w *= self.weights[inf][None, :]
        lf_w *= self.weights[inf][None, :]
        self.hg_weights = hg_w  # (n_parts, n_inf)
        self.lf_weights = lf_w  # (n_parts, n_inf)
        self.lf_freq = rng.uniform(2.0, 8.0, n_parts)
        self.lf_phase = rng.uniform(0, 2 * np.pi, n_parts)
        # speech-general activation (identical for every word) on the informative contacts
        self.general_hg = self.weights[inf] * 0.6

    # ------------------------------------------------------------------- spontaneous speech
    def lexicon(self) -> tuple[list[tuple[tuple[int, int, int], ...]], np.ndarray]:
        """The words of spontaneous speech and their probabilities (Zipf's law).

        ``config.spontaneous_lexicon`` distinct words: the task's words plus words with the
        task words' syllable counts and random initials, finals and tones of the same
        inventory; ranks are a random permutation, frequency is proportional to 1 / rank.
        Drawn from its own random stream (the rest of the subject does not change with it).

        Returns
        -------
        words : list of tuple
            Each word's syllables ``(initial, final, tone)`` as part indices.
        probabilities : numpy.ndarray
            ``(n_words,)``, summing to 1.
        """
        if self._lexicon is None:
            rng = _rng(self.config.seed, self.index, 7)
            words = [tuple(w) for w in self.words]
            known = set(words)
            lengths = [len(w) for w in self.words]
            n_syllables = self.n_initials * self.n_finals * self.n_tones
            possible = sum(n_syllables**n for n in set(lengths))
            if possible < self.config.spontaneous_lexicon:
                raise ValueError(
                    f"SimulationConfig.spontaneous_lexicon: {self.config.spontaneous_lexicon} "
                    f"distinct words do not fit this vocabulary's syllable inventory (at most "
                    f"{possible}); lower it"
                )
            while len(words) < self.config.spontaneous_lexicon:
                word = tuple(
                    (
                        int(rng.integers(self.n_initials)),
                        int(rng.integers(self.n_finals)),
                        int(rng.integers(self.n_tones)),
                    )
                    for _ in range(int(rng.choice(lengths)))
                )
                if word not in known:
                    known.add(word)
                    words.append(word)
            rank = rng.permutation(len(words)) + 1
            freq = 1.0 / rank
            self._lexicon = (words, freq / freq.sum())
        return self._lexicon

    # ---------------------------------------------------------------- utterance rendering
    def parts_of(self, syllable: tuple[int, int, int]) -> list[int]:
        """Part indices (initial, final, tone) of one syllable."""
        i, f, t = syllable
        return [i, self.n_initials + f, self.n_initials + self.n_finals + t]

    def response(
        self,
        syllables: Sequence[tuple[int, int, int]],
        syllable_dur: float,
        amplitude: float,
        t: np.ndarray,
        carrier_rng: np.random.Generator | None,
    ) -> np.ndarray:
        """Volts added to the informative channels for one utterance.

        Parameters
        ----------
        syllables : sequence of (initial, final, tone)
            What is said.
        syllable_dur : float
            Seconds per syllable.
        amplitude : float
            Trial amplitude factor (already divided by the difficulty).
        t : numpy.ndarray
            ``(n_times,)`` times in seconds relative to speech onset.
        carrier_rng : numpy.random.Generator or None
            Source of the random-phase high-gamma carrier; ``None`` returns the expected
            squared high-gamma envelope instead of a signal (used by the oracle).

        Returns
        -------
        numpy.ndarray
            ``(n_informative, n_times)`` in volts, or with ``carrier_rng=None`` a pair
            ``(lf, hg_power)`` of that shape each.
        """
        cfg = self.config
        n_inf = len(self.informative)
        env = np.zeros((n_inf, t.size))
        lf = np.zeros((n_inf, t.size))
        lat = self.latency
        dt = (t[-1] - t[0]) / max(t.size - 1, 1)
        for k, syl in enumerate(syllables):
            t0 = k * syllable_dur
            for p in self.parts_of(syl):
                centre = t0 + self.part_offset[p] + lat  # (n_inf,)
                w = self.part_width[p] * (syllable_dur / 0.25)
                # a bump is < 1e-8 beyond 6 widths: only compute its support
                i0 = max(int((centre.min() - 6 * w - t[0]) / dt), 0)
                i1 = min(int((centre.max() + 6 * w - t[0]) / dt) + 2, t.size)
                if i1 <= i0:
                    continue
                ts = t[i0:i1]
                bumps = _bump(ts, centre, np.full(n_inf, w))  # (n_inf, n_support)
                env[:, i0:i1] += self.hg_weights[p][:, None] * bumps
                # cos(w (t - c)) = cos(wt) cos(wc) + sin(wt) sin(wc): no per-channel cosines
                omega = 2 * np.pi * self.lf_freq[p]
                wave = np.outer(np.cos(omega * centre), np.cos(omega * ts)) + np.outer(
                    np.sin(omega * centre), np.sin(omega * ts)
                )
                lf[:, i0:i1] += self.lf_weights[p][:, None] * bumps * wave
        total = len(syllables) * syllable_dur
        general = _bump(t, lat + total / 2, np.full(n_inf, 0.25 + total / 3))
        env += self.general_hg[:, None] * general
        env *= amplitude * cfg.hg_snr * self.bg_hg_rms[:, None]
        lf *= amplitude * cfg.lf_snr * self.bg_lf_rms[:, None]
        if carrier_rng is None:
            return lf, env**2  # type: ignore[return-value]
        carrier = carrier_rng.standard_normal((n_inf, t.size + 400))
        carrier = sps.sosfilt(_hg_sos(self.sfreq), carrier, axis=-1)[:, 400:]
        carrier /= _band_gain(self.sfreq)
        return lf + env * carrier

    def draw_trial(self, rng: np.random.Generator) -> tuple[float, float, float]:
        """Speech onset after the go cue (s), syllable duration (s), amplitude factor."""
        cfg = self.config
        onset = cfg.reaction_time + rng.normal(0, cfg.effective_jitter_sd)
        onset = float(np.clip(onset, 0.2, 1.4))
        dur = float(0.25 * math.exp(rng.normal(0, 0.1)))
        amp = float(math.exp(rng.normal(0, cfg.amplitude_sd))) / cfg.difficulty
        return onset, dur, amp

    def metadata(self) -> dict[str, Any]:
        """JSON-ready generative parameters."""
        inf = self.informative
        return {
            "ch_names": self.ch_names,
            "ch_regions": self.ch_regions,
            "gain_volts": [float(g) for g in self.gain],
            "bad_channels": {self.ch_names[i]: k for i, k in self.bad_kind.items()},
            "latency_s": {
                self.ch_names[r]: float(v) for r, v in zip(inf, self.latency, strict=False)
            },
            "oscillation_hz": self.osc_freqs,
            "words": {
                label: [[self.part_names[p] for p in self.parts_of(syl)] for syl in seq]
                for label, seq in zip(self.vocabulary, self.words, strict=False)
            },
            "parts": self.part_names,
        }


def _syllables_of(
    vocabulary: list[str], rng: np.random.Generator
) -> list[list[tuple[str, str, int]]]:
    """(initial, final, tone) of each syllable of each word.

    The paper's words use their real pinyin (``duin.data.words.syllables``); other labels get
    one or two syllables drawn from a small inventory so that parts are still shared.
    """
    try:
        from duin.data.words import syllables

        return [[(s.initial, s.final, s.tone) for s in syllables(w)] for w in vocabulary]
    except (ImportError, KeyError):
        pass
    out: list[list[tuple[str, str, int]]] = []
    for label in vocabulary:
        n_syl = 1 + label.count("x") if label.startswith("word") else min(len(label), 2)
        while True:
            word = [
                (f"i{rng.integers(12)}", f"f{rng.integers(10)}", int(rng.integers(1, 5)))
                for _ in range(n_syl)
            ]
            if word not in out:
                out.append(word)
                break
    return out


_SOS_CACHE: dict[tuple[str, float], Any] = {}


def _hg_sos(sfreq: float) -> np.ndarray:
    key = ("hg", sfreq)
    if key not in _SOS_CACHE:
        _SOS_CACHE[key] = sps.butter(4, _HG_BAND, btype="band", fs=sfreq, output="sos")
    return _SOS_CACHE[key]


def _band_gain(sfreq: float) -> float:
    """RMS of unit white noise after the high-gamma band-pass."""
    key = ("hg_gain", sfreq)
    if key not in _SOS_CACHE:
        impulse = np.zeros(int(sfreq))
        impulse[0] = 1.0
        _SOS_CACHE[key] = float(np.sqrt(np.sum(sps.sosfilt(_hg_sos(sfreq), impulse) ** 2)))
    return _SOS_CACHE[key]
