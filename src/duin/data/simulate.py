"""A realistic synthetic sEEG word-reading corpus with a known decoding ceiling.

The paper's recordings cannot be downloaded, so duin ships a generator whose output looks like
what the paper's pipeline receives: monopolar contacts on electrode shafts (8-16 contacts each)
in labelled regions, float32 volts at 2000 Hz, a spatially correlated 1/f background with
per-channel gains, alpha/beta bursts, 50 Hz line noise and harmonics, occasional transients and
bad channels. Word information lives only in a few vSMC/STG contacts (plus a little in the
white matter next to them), so channel selection matters as it did in the paper.

Words are built from shared parts: each word has one or two syllables and each syllable is an
(initial, final, tone) triple drawn from a small inventory, so classes share structure and are
confusable the way real words are. Every part has its own spatio-temporal response on the
informative contacts: a high-gamma (70-170 Hz) envelope modulation with a random-phase carrier
and a phase-locked low-frequency (2-8 Hz) wave, delayed by a region-dependent latency (vSMC
leads speech onset, STG follows it). Trials have onset jitter (reaction time), amplitude and
syllable-duration variability. The task follows the paper: blocks of ``2 * n_words`` trials
(each word twice, random order), 3-s trials (0.5 s prepare, 2 s read, 0.5 s rest), several
blocks per run. Non-task "pretraining" recordings carry the same part responses as spontaneous
utterances (random syllable sequences at random times) so self-supervised models have real
structure to learn.

Everything is generated block by block from per-block seeds, with the IIR filter states
carried over, so any recording can be streamed to a ``.npy`` memmap with bounded memory and the
result does not depend on how it is chunked (same seed -> bit-identical arrays).

``oracle_accuracy`` is computed, not assumed: fresh held-out trials are rendered from the
generator and classified by a maximum-likelihood classifier that knows the true templates, the
informative channels, the background noise level per feature and the jitter and amplitude
distributions (it marginalises over a grid of both). See :func:`oracle_accuracy`.

The ``difficulty`` knob divides every word-related response amplitude (``1.0`` = the
calibrated default; ``2.0`` halves the signal-to-noise ratio; ``0.5`` doubles it) and widens
the onset jitter by ``sqrt(difficulty)``.

Calibration at ``difficulty=1`` (measured with numpy 2.4 / scipy 1.17; "logreg" is
:func:`band_power_baseline`: a logistic regression on log 70-170 Hz power in 100-ms bins over
0-3 s, stratified 80/20 split; chance 1.6 %):

==============================================  ==========  ===============  ============
corpus                                           oracle      logreg (truth    logreg (all
                                                             channels)        channels)
==============================================  ==========  ===============  ============
``small`` preset (61 words x 10), seeds 0/1/2    85/70/87 %  26/11/18 %       14/7/7 %
61 words x 20, seed 42                           92 %        35 %             18 %
61 words x 20, seed 42, ``difficulty=0.5``       96 %        61 %             36 %
61 words x 50 (paper design), seed 0             86 %        46 %             25 %
==============================================  ==========  ===============  ============

Subjects differ (as the paper's did) because anatomy and part responses are drawn per subject.
The oracle is scored on artefact-free trials, so it is the ceiling for clean trials.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.signal as sps

from duin.data.recording import Event, Recording

__all__ = [
    "PRESETS",
    "SimulatedCorpus",
    "SimulatedSubject",
    "SimulationConfig",
    "band_power_baseline",
    "band_power_features",
    "oracle_accuracy",
    "read_simulated",
    "simulate",
    "simulate_rest",
    "simulate_to_disk",
]

log = logging.getLogger(__name__)

# Internal generation block: the seeds and filter states are defined per block of this many
# samples, so the output is independent of how callers chunk the writing.
_BLOCK = 20_000
_HG_BAND = (70.0, 170.0)
_REGION_INFORMATIVE = ("vSMC", "STG")
_TRIAL_S, _PREPARE_S = 3.0, 0.5
_BLOCK_PAUSE_S = 6.0  # rest between blocks of a run
_RUN_PAD_S = 4.0  # quiet lead-in and tail of each run

# A fallback vocabulary used only when duin.data.words is not importable (labels then carry
# the same number of characters as the paper's words: 15 one-character, 46 two-character).
_FALLBACK_N_CHARS = [1] * 15 + [2] * 46


# ---------------------------------------------------------------------------------- config
@dataclass
class SimulationConfig:
    """Parameters of the simulated corpus (defaults = the ``"small"`` preset).

    Parameters
    ----------
    seed : int
        Drives everything; same seed -> bit-identical corpus.
    n_subjects : int
        Number of simulated subjects.
    n_words : int
        Vocabulary size (the first ``n_words`` of the paper's 61 words, in label order).
    trials_per_word : int
        Trials of each word per subject; a block shows every word twice.
    blocks_per_run : int
        Blocks per task run (the release has ~5 blocks per run).
    n_shafts : int
        Electrode shafts per subject (the first two cross vSMC and STG).
    contacts_per_shaft : tuple of int
        Inclusive range of contacts per shaft (the paper: 8-16).
    pretrain_hours : float
        Hours of non-task recording per subject.
    pretrain_recording_hours : float
        Non-task data is cut into recordings of at most this length.
    sfreq : float
        Raw sampling rate in Hz (the paper records at 2000 Hz).
    difficulty : float
        Divides all word-related amplitudes and widens onset jitter by ``sqrt(difficulty)``.
        1.0 is calibrated so that a logistic regression on 100-ms high-gamma band power of the
        informative channels lands well below the oracle (see module docs / report).
    hg_snr : float
        Peak high-gamma envelope of a part response, relative to the channel's background
        high-gamma RMS (before ``difficulty``).
    lf_snr : float
        Peak low-frequency response relative to the background 1-12 Hz RMS.
    jitter_sd : float
        Standard deviation (s) of speech onset after the go cue (reaction-time jitter).
    reaction_time : float
        Mean speech onset after the go cue (s).
    amplitude_sd : float
        Log-normal SD of the per-trial response amplitude.
    spontaneous_rate : float
        Spontaneous utterances per second in the non-task recordings.
    background_rms : float
        Median broadband background RMS in volts.
    spectral_exponent : float
        Background power falls as ``1/f**spectral_exponent`` (between 0.2 and 1.9).
    shaft_correlation : float
        Correlation of neighbouring contacts' background (AR(1) along each shaft).
    line_freq : float
        Mains frequency (Hz); harmonics up to ``n_line_harmonics``.
    n_line_harmonics : int
        Number of line-noise components (50, 100, 150 Hz for 3).
    artefact_rate : float
        Transients (spikes, step-like discharges) per minute.
    bad_channel_fraction : float
        Fraction of contacts that are bad (very noisy or nearly flat).
    oracle_trials_per_word : int
        Held-out trials per word used to estimate ``oracle_accuracy``.
    compute_baseline : bool
        Also fit the band-power logistic-regression baseline when writing to disk.
    """

    seed: int = 0
    n_subjects: int = 1
    n_words: int = 61
    trials_per_word: int = 10
    blocks_per_run: int = 5
    n_shafts: int = 4
    contacts_per_shaft: tuple[int, int] = (8, 12)
    pretrain_hours: float = 0.25
    pretrain_recording_hours: float = 1.0
    sfreq: float = 2000.0
    difficulty: float = 1.0
    hg_snr: float = 4.0
    lf_snr: float = 1.25
    jitter_sd: float = 0.1
    reaction_time: float = 0.6
    amplitude_sd: float = 0.3
    spontaneous_rate: float = 0.4
    background_rms: float = 3e-5
    spectral_exponent: float = 1.6
    shaft_correlation: float = 0.6
    line_freq: float = 50.0
    n_line_harmonics: int = 3
    artefact_rate: float = 0.5
    bad_channel_fraction: float = 0.03
    oracle_trials_per_word: int = 10
    compute_baseline: bool = True

    def __post_init__(self) -> None:
        self.contacts_per_shaft = tuple(int(v) for v in self.contacts_per_shaft)  # type: ignore[assignment]

    def validate(self) -> SimulationConfig:
        """Check every field; raise ``ValueError`` naming the bad one. Returns ``self``."""

        def need(ok: bool, name: str, what: str) -> None:
            if not ok:
                raise ValueError(
                    f"SimulationConfig.{name}: expected {what}, got {getattr(self, name)!r}"
                )

        need(isinstance(self.seed, int) and self.seed >= 0, "seed", "a non-negative int")
        need(self.n_subjects >= 1, "n_subjects", ">= 1")
        need(2 <= self.n_words <= 61, "n_words", "between 2 and 61")
        need(self.trials_per_word >= 1, "trials_per_word", ">= 1")
        need(self.blocks_per_run >= 1, "blocks_per_run", ">= 1")
        need(self.n_shafts >= 2, "n_shafts", ">= 2 (two shafts cross vSMC and STG)")
        lo, hi = self.contacts_per_shaft
        need(6 <= lo <= hi <= 16, "contacts_per_shaft", "a range (lo, hi) with 6 <= lo <= hi <= 16")
        need(self.pretrain_hours >= 0, "pretrain_hours", ">= 0")
        need(self.pretrain_recording_hours > 0, "pretrain_recording_hours", "> 0")
        need(self.sfreq >= 1000, "sfreq", ">= 1000 Hz (high gamma must be representable)")
        need(self.difficulty > 0, "difficulty", "> 0")
        for name in ("hg_snr", "lf_snr", "jitter_sd", "amplitude_sd", "spontaneous_rate"):
            need(getattr(self, name) >= 0, name, ">= 0")
        need(0.2 < self.reaction_time < 1.2, "reaction_time", "between 0.2 and 1.2 s")
        need(0 < self.background_rms < 1e-2, "background_rms", "volts in (0, 1e-2)")
        need(0.2 <= self.spectral_exponent <= 1.9, "spectral_exponent", "between 0.2 and 1.9")
        need(0 <= self.shaft_correlation < 1, "shaft_correlation", "in [0, 1)")
        need(self.line_freq > 0, "line_freq", "> 0")
        need(self.n_line_harmonics >= 0, "n_line_harmonics", ">= 0")
        need(self.artefact_rate >= 0, "artefact_rate", ">= 0")
        need(0 <= self.bad_channel_fraction < 0.5, "bad_channel_fraction", "in [0, 0.5)")
        need(self.oracle_trials_per_word >= 1, "oracle_trials_per_word", ">= 1")
        return self

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> SimulationConfig:
        """Build a named preset (``"tiny"``, ``"small"``, ``"paper"``) with field overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown simulation preset {name!r}; choose from {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides}).validate()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of all fields."""
        return dataclasses.asdict(self)

    def estimated_bytes(self) -> int:
        """Approximate size of the raw float32 signals of the whole corpus (memory or disk).

        The ``paper`` preset is ~15 GB per subject (2.5 h of task runs + 2 h of non-task data
        at 2 kHz on ~120 contacts): simulate it with ``out_dir`` (memory-mapped), never in RAM.
        """
        n_blocks = math.ceil(self.trials_per_word / 2)
        n_runs = math.ceil(n_blocks / self.blocks_per_run)
        task_s = self.trials_per_word * self.n_words * _TRIAL_S + n_runs * 2 * _RUN_PAD_S
        task_s += (n_blocks - n_runs) * _BLOCK_PAUSE_S
        seconds = task_s + self.pretrain_hours * 3600
        n_channels = self.n_shafts * sum(self.contacts_per_shaft) / 2
        return int(self.n_subjects * seconds * self.sfreq * n_channels * 4)

    @property
    def effective_jitter_sd(self) -> float:
        """Onset jitter after the difficulty scaling (s)."""
        return self.jitter_sd * math.sqrt(self.difficulty)


#: Named configurations. ``tiny``: unit tests (seconds). ``small``: the CPU demo (61 words x 10
#: trials, one subject, 15 min of non-task data; trains in minutes). ``paper``: the paper's task
#: design (61 words x 50 trials in 25 blocks, 12 subjects, 7-13 shafts); its non-task data is
#: cut to 2 h per subject (the paper had ~12 h) to keep the disk footprint near 2 GB/hour/subject.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        n_words=8,
        trials_per_word=6,
        blocks_per_run=2,
        n_shafts=3,
        contacts_per_shaft=(8, 10),
        pretrain_hours=60 / 3600,
        oracle_trials_per_word=10,
    ),
    "small": {},
    "paper": dict(
        n_subjects=12,
        trials_per_word=50,
        blocks_per_run=5,
        n_shafts=10,
        contacts_per_shaft=(8, 16),
        pretrain_hours=2.0,
        oracle_trials_per_word=20,
    ),
}


# ---------------------------------------------------------------------------------- results
@dataclass
class SimulatedSubject:
    """One simulated subject: its recordings and ground truth.

    Parameters
    ----------
    subject : str
        Subject id (``"01"``, ...).
    task_runs : list of Recording
        Word-reading runs; events are the trials (onset = word shown, duration 3 s, label = word).
    pretrain : list of Recording
        Non-task recordings (no events).
    informative_channels : list of str
        Contacts that carry word information, most informative first.
    channel_weights : dict
        Contact name -> relative word-information weight (0 for the rest).
    oracle_accuracy : float
        Accuracy of the generative-model ML classifier on fresh held-out trials.
    metadata : dict
        Generative parameters (regions, gains, bad channels, word parts, latencies ...).
    """

    subject: str
    task_runs: list[Recording]
    pretrain: list[Recording]
    informative_channels: list[str]
    channel_weights: dict[str, float]
    oracle_accuracy: float
    metadata: dict[str, Any] = field(default_factory=dict)

    def informative_among(self, ch_names: Sequence[str]) -> list[str]:
        """The channels of a (re-referenced) montage that carry word information, best first.

        Parameters
        ----------
        ch_names : sequence of str
            Channel names after preprocessing: monopolar (``"A5"``), bipolar pairs
            (``"A5-A6"``) or bipolar named after the first contact (``"A5"`` = A5 - A6).

        Returns
        -------
        list of str
            Names whose contacts include an informative one, by decreasing true weight.
        """
        weights = self.channel_weights

        def weight(name: str) -> float:
            contacts = name.split("-") if "-" in name else [name]
            if len(contacts) == 1:  # "first contact" naming: the pair is (A5, A6)
                stem = name.rstrip("0123456789")
                if stem != name:
                    contacts.append(f"{stem}{int(name[len(stem) :]) + 1}")
            return max(weights.get(c, 0.0) for c in contacts)

        scored = [(weight(n), i, n) for i, n in enumerate(ch_names)]
        return [n for w, _, n in sorted(scored, key=lambda t: (-t[0], t[1])) if w > 0]


@dataclass
class SimulatedCorpus:
    """The output of :func:`simulate`.

    Parameters
    ----------
    config : SimulationConfig
        The configuration used.
    vocabulary : list of str
        Word labels; label index = position (code-point order for the paper's words).
    subjects : list of SimulatedSubject
        Per-subject data and truth.
    """

    config: SimulationConfig
    vocabulary: list[str]
    subjects: list[SimulatedSubject]

    @property
    def oracle_accuracy(self) -> dict[str, float]:
        """Subject id -> oracle accuracy."""
        return {s.subject: s.oracle_accuracy for s in self.subjects}

    @property
    def recordings(self) -> list[Recording]:
        """All task and non-task recordings, subject by subject."""
        return [r for s in self.subjects for r in (*s.task_runs, *s.pretrain)]

    def truth(self) -> dict[str, Any]:
        """JSON-ready summary: config, vocabulary, oracle accuracies, channel truth."""
        return {
            "config": self.config.to_dict(),
            "vocabulary": self.vocabulary,
            "chance": 1.0 / len(self.vocabulary),
            "oracle_accuracy": self.oracle_accuracy,
            "subjects": {
                s.subject: {
                    "informative_channels": s.informative_channels,
                    "channel_weights": s.channel_weights,
                    "oracle_accuracy": s.oracle_accuracy,
                    **s.metadata,
                }
                for s in self.subjects
            },
        }


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


def _pink_sos(sfreq: float, exponent: float) -> np.ndarray:
    """Second-order sections shaping unit white noise to unit-RMS ``1/f**exponent`` power.

    Alternating real poles and zeros, log-spaced from 0.3 Hz up to Nyquist: each pole bends
    the amplitude slope by -1, each following zero by +1, so with the zero a fraction
    ``exponent/2`` of the way to the next pole the average power slope is ``-exponent``.
    """
    nyq = sfreq / 2
    ratio = math.sqrt(10.0)
    poles, zeros = [], []
    f = 0.3
    while f < nyq * 0.9:
        poles.append(f)
        zeros.append(min(f * ratio ** (exponent / 2), nyq * 0.95))
        f *= ratio
    # analogue zpk -> bilinear (pre-warped) digital
    warp = lambda hz: 2 * sfreq * math.tan(math.pi * hz / sfreq)  # noqa: E731
    z_a = [-warp(v) for v in zeros]
    p_a = [-warp(v) for v in poles]
    z, p, k = sps.bilinear_zpk(z_a, p_a, 1.0, sfreq)
    sos = sps.zpk2sos(z, p, k)
    # normalise to unit output RMS for unit white input (from the impulse response energy)
    impulse = np.zeros(int(sfreq * 20))
    impulse[0] = 1.0
    h = sps.sosfilt(sos, impulse)
    rms = float(np.sqrt(np.sum(h**2)))
    sos[0, :3] /= rms
    return sos


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
        self.pink_sos = _pink_sos(sf, config.spectral_exponent)
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


# ---------------------------------------------------------------------------------- streaming
@dataclass
class _Utterance:
    """One word-related event to render: speech onset sample and its content."""

    start: int  # sample of speech onset
    syllables: tuple[tuple[int, int, int], ...]
    syllable_dur: float
    amplitude: float
    seed: int


@dataclass
class _Artefact:
    start: int
    rows: np.ndarray
    amplitude: float
    tau: float
    kind: str


class _RecordingGenerator:
    """Streams one recording block by block (background + oscillations + line + events)."""

    def __init__(
        self,
        model: _SubjectModel,
        rec_id: int,
        n_times: int,
        utterances: list[_Utterance],
    ) -> None:
        self.model = model
        self.rec_id = rec_id
        self.n_times = n_times
        self.utterances = sorted(utterances, key=lambda u: u.start)
        self.with_artefacts = True

    def _new_artefacts(self, block: int, start: int, n: int) -> list[_Artefact]:
        """Artefacts starting in this block (own seed: independent of the recording length)."""
        m, cfg = self.model, self.model.config
        if not self.with_artefacts or cfg.artefact_rate == 0:
            return []
        rng = _rng(cfg.seed, m.index, 1000 + self.rec_id, 1 + block, 7)
        out = []
        for _ in range(rng.poisson(cfg.artefact_rate * _BLOCK / m.sfreq / 60.0)):
            kind = "spike" if rng.random() < 0.6 else "transient"
            if rng.random() < 0.5:
                rows = m.shaft_rows[int(rng.integers(len(m.shaft_rows)))]
            else:
                rows = np.arange(m.n_channels)
            amp = float(rng.choice([-1, 1]) * cfg.background_rms * rng.uniform(10, 60))
            tau = float(rng.uniform(0.005, 0.02) if kind == "spike" else rng.uniform(0.1, 0.5))
            out.append(_Artefact(start + int(rng.integers(_BLOCK)), rows, amp, tau, kind))
        return [a for a in out if a.start < start + n]

    def blocks(self) -> Any:
        """Yield ``(start, block)`` with ``block`` float32 ``(n_channels, <= _BLOCK)`` volts."""
        m, cfg = self.model, self.model.config
        sf = m.sfreq
        n_ch = m.n_channels
        n_src = m.osc_mix.shape[1]
        pink_zi = np.zeros((m.pink_sos.shape[0], n_ch, 2))
        osc_zi = [np.zeros(2) for _ in range(n_src)]
        gate_zi = np.zeros((m.gate_sos.shape[0], n_src, 2))
        rho = cfg.shaft_correlation
        innov = math.sqrt(1 - rho**2)
        freqs = cfg.line_freq * np.arange(1, cfg.n_line_harmonics + 1)
        inf = m.informative
        # response windows relative to speech onset
        pre, post = -0.6, 2.2
        pending: dict[int, tuple[int, np.ndarray]] = {}
        active: list[_Artefact] = []
        next_utt = 0
        for b, start in enumerate(range(0, self.n_times, _BLOCK)):
            n = min(_BLOCK, self.n_times - start)
            rng = _rng(cfg.seed, m.index, 1000 + self.rec_id, 1 + b)
            # 1/f background, AR(1) correlated along each shaft
            # always draw a full block so the values do not depend on where the recording ends
            white = rng.standard_normal((n_ch, _BLOCK))[:, :n]
            for rows in m.shaft_rows:
                for k in range(1, len(rows)):
                    white[rows[k]] = rho * white[rows[k - 1]] + innov * white[rows[k]]
            bg, pink_zi = sps.sosfilt(m.pink_sos, white, axis=-1, zi=pink_zi)
            bg *= m.gain[:, None]
            # burst-gated alpha/beta sources mixed into contacts
            src_white = rng.standard_normal((n_src, _BLOCK))[:, :n]
            gate_white = rng.standard_normal((n_src, _BLOCK))[:, :n]
            gate, gate_zi = sps.sosfilt(m.gate_sos, gate_white, axis=-1, zi=gate_zi)
            # lowpassed unit noise has a tiny SD: normalise to ~1 then threshold into bursts
            gate = np.maximum(gate * _gate_scale(m) - 0.5, 0.0)
            sources = np.empty((n_src, n))
            for j, (bcoef, acoef) in enumerate(m.osc_sos):
                sources[j], osc_zi[j] = sps.lfilter(bcoef, acoef, src_white[j], zi=osc_zi[j])
            sources *= gate * _osc_scale(m)
            bg += m.osc_mix @ sources
            # line noise and harmonics (phase continuous: absolute time)
            if len(freqs):
                tt = (start + np.arange(n)) / sf
                arg = 2 * np.pi * freqs[:, None] * tt[None, :]
                basis = np.concatenate([np.sin(arg), np.cos(arg)], axis=0)  # (2h, n)
                bg += m.line_mix @ basis
            # artefacts (spikes, slow transients); those running past the block carry over
            active = [a for a in active if a.start + int(a.tau * 8 * sf) > start]
            active += self._new_artefacts(b, start, n)
            for art in active:
                lo = art.start
                hi = lo + int(art.tau * 8 * sf)
                s0, s1 = max(lo, start), min(hi, start + n)
                if s1 <= s0:
                    continue
                tt = (np.arange(s0, s1) - lo) / sf
                if art.kind == "spike":
                    shape = (tt / art.tau) * np.exp(1 - tt / art.tau)
                    shape = shape - 0.4 * np.exp(-tt / (3 * art.tau))
                else:
                    shape = np.exp(-tt / art.tau)
                bg[art.rows, s0 - start : s1 - start] += art.amplitude * shape[None, :]
            # word-related responses on the informative channels
            while next_utt < len(self.utterances):
                u = self.utterances[next_utt]
                w0 = u.start + int(pre * sf)
                if w0 >= start + n:
                    break
                t = (np.arange(int((post - pre) * sf)) + int(pre * sf)) / sf
                resp = m.response(u.syllables, u.syllable_dur, u.amplitude, t, _rng(u.seed))
                pending[next_utt] = (w0, resp)
                next_utt += 1
            for key in list(pending):
                w0, resp = pending[key]
                w1 = w0 + resp.shape[1]
                s0, s1 = max(w0, start), min(w1, start + n)
                if s1 > s0:
                    bg[inf, s0 - start : s1 - start] += resp[:, s0 - w0 : s1 - w0]
                if w1 <= start + n:
                    del pending[key]
            yield start, bg.astype(np.float32)


def _gate_scale(m: _SubjectModel) -> float:
    key = ("gate", m.sfreq)
    if key not in _SOS_CACHE:
        impulse = np.zeros(int(m.sfreq * 20))
        impulse[0] = 1.0
        _SOS_CACHE[key] = 1.0 / float(np.sqrt(np.sum(sps.sosfilt(m.gate_sos, impulse) ** 2)))
    return _SOS_CACHE[key]


def _osc_scale(m: _SubjectModel) -> np.ndarray:
    scales = []
    for f, (bcoef, acoef) in zip(m.osc_freqs, m.osc_sos, strict=False):
        key = ("osc", m.sfreq, f)
        if key not in _SOS_CACHE:
            impulse = np.zeros(int(m.sfreq * 10))
            impulse[0] = 1.0
            h = sps.lfilter(bcoef, acoef, impulse)
            _SOS_CACHE[key] = 1.0 / float(np.sqrt(np.sum(h**2)))
        scales.append(_SOS_CACHE[key])
    return np.asarray(scales)[:, None]


def _render(
    gen: _RecordingGenerator,
    out: np.ndarray,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Fill ``out`` ``(n_channels, n_times)`` block by block."""
    for start, block in gen.blocks():
        out[:, start : start + block.shape[1]] = block
        if progress is not None:
            progress(block.shape[1])


# ---------------------------------------------------------------------------------- design
def _task_design(
    model: _SubjectModel, rng: np.random.Generator
) -> list[tuple[list[tuple[float, int]], list[_Utterance], int]]:
    """Runs of the word-reading task: per run, (trial onsets s, word idx), utterances, n_times."""
    cfg = model.config
    sf = model.sfreq
    n_words = cfg.n_words
    n_blocks = math.ceil(cfg.trials_per_word / 2)
    blocks: list[np.ndarray] = []
    for b in range(n_blocks):
        reps = 2 if (b < n_blocks - 1 or cfg.trials_per_word % 2 == 0) else 1
        blocks.append(rng.permutation(np.repeat(np.arange(n_words), reps)))
    runs = []
    for r0 in range(0, n_blocks, cfg.blocks_per_run):
        trials: list[tuple[float, int]] = []
        utterances: list[_Utterance] = []
        t = _RUN_PAD_S
        for block in blocks[r0 : r0 + cfg.blocks_per_run]:
            for word in block:
                trials.append((t, int(word)))
                onset, dur, amp = model.draw_trial(rng)
                speech = t + _PREPARE_S + onset
                utterances.append(
                    _Utterance(
                        int(round(speech * sf)),
                        model.words[word],
                        dur,
                        amp,
                        int(rng.integers(2**62)),
                    )
                )
                t += _TRIAL_S
            t += _BLOCK_PAUSE_S
        n_times = int(round((t - _BLOCK_PAUSE_S + _RUN_PAD_S) * sf))
        runs.append((trials, utterances, n_times))
    return runs


def _spontaneous(model: _SubjectModel, rng: np.random.Generator, n_times: int) -> list[_Utterance]:
    """Random utterances (1-3 syllables from the pool) at Poisson times in non-task data."""
    cfg = model.config
    sf = model.sfreq
    rate = cfg.spontaneous_rate
    out: list[_Utterance] = []
    t = 1.0
    duration = n_times / sf
    while rate > 0:
        t += rng.exponential(1 / rate) + 0.3
        if t > duration - 3.0:
            break
        n_syl = int(rng.integers(1, 4))
        syls = tuple(
            (
                int(rng.integers(model.n_initials)),
                int(rng.integers(model.n_finals)),
                int(rng.integers(model.n_tones)),
            )
            for _ in range(n_syl)
        )
        dur = float(0.25 * math.exp(rng.normal(0, 0.1)))
        amp = float(math.exp(rng.normal(0, cfg.amplitude_sd))) / cfg.difficulty
        out.append(_Utterance(int(round(t * sf)), syls, dur, amp, int(rng.integers(2**62))))
        t += n_syl * dur
    return out


# ---------------------------------------------------------------------------------- oracle
def _oracle_features(lf: np.ndarray, hg_power: np.ndarray, sfreq: float) -> np.ndarray:
    """Features of (lf signal, hg power): 40-ms LF samples and 20-ms log HG-power bins."""
    step_lf = int(0.04 * sfreq)
    step_hg = int(0.02 * sfreq)
    n = lf.shape[-1] // step_hg * step_hg
    lf_feat = lf[..., step_lf // 2 : n : step_lf]
    hg = hg_power[..., :n].reshape(*hg_power.shape[:-1], n // step_hg, step_hg).mean(-1)
    return np.concatenate([lf_feat, np.log(hg)], axis=-1)


def _observed_features(epochs: np.ndarray, sfreq: float) -> np.ndarray:
    """Oracle features of observed epochs ``(n, n_inf, n_times)`` (volts)."""
    lf_sos = sps.butter(4, 12.0, fs=sfreq, output="sos")
    lf = sps.sosfiltfilt(lf_sos, epochs, axis=-1)
    hg = sps.sosfiltfilt(_hg_sos(sfreq), epochs, axis=-1)
    return _oracle_features(lf, hg**2, sfreq)


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
    feats = _observed_features(epochs.astype(np.float64), sf)  # (n, n_inf, n_feat)

    # noise model: the same generator with the responses switched off
    quiet_model = _SubjectModel.__new__(_SubjectModel)
    quiet_model.__dict__.update(model.__dict__)
    quiet_model.config = dataclasses.replace(cfg, hg_snr=0.0, lf_snr=0.0)
    noise_epochs = _render_epochs(quiet_model, np.zeros(max(100, 2 * n_words), int), 777_002)
    noise_feats = _observed_features(noise_epochs.astype(np.float64), sf)
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


# ---------------------------------------------------------------------------------- public
def _allocate(shape: tuple[int, int], path: Path | None) -> np.ndarray:
    if path is None:
        return np.empty(shape, dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    return np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)


def _make_recording(
    model: _SubjectModel,
    signals: np.ndarray,
    events: list[Event],
    task: str,
    run: str,
    cfg: SimulationConfig,
) -> Recording:
    return Recording(
        signals=signals,
        sfreq=cfg.sfreq,
        ch_names=list(model.ch_names),
        subject=model.subject,
        events=events,
        ch_regions=list(model.ch_regions),
        ch_coords=model.ch_coords.copy(),
        bad_channels=list(model.bad_channels),
        task=task,
        run=run,
        provenance={
            "source": f"duin.simulate(seed={cfg.seed}) sub-{model.subject} {task} run-{run}",
            "reader": "duin.simulate",
            "simulation": {"seed": cfg.seed, "difficulty": cfg.difficulty},
        },
    )


def simulate_rest(
    config: SimulationConfig | None = None,
    seconds: float = 60.0,
    out_path: str | os.PathLike[str] | None = None,
    subject_index: int = 0,
    run: int = 1,
) -> Recording:
    """Stream one non-task recording of one simulated subject (bounded memory).

    The same generator as :func:`simulate` uses for its pretraining recordings; with
    ``out_path`` the signals go block by block into a float32 ``.npy`` memmap (written under a
    temporary name, then renamed), so hours of data need only a few MB of RAM.

    Parameters
    ----------
    config : SimulationConfig, optional
        Default: the ``"small"`` preset.
    seconds : float
        Length of the recording.
    out_path : path, optional
        ``.npy`` file for the signals; default in memory.
    subject_index : int
        Which subject (0-based) of the config's seed.
    run : int
        Run number (selects the random stream; ``simulate`` uses 1, 2, ...).

    Returns
    -------
    Recording
        Raw 2 kHz monopolar recording in volts, no events.
    """
    config = (config or SimulationConfig()).validate()
    model = _SubjectModel(config, subject_index, _vocabulary(config.n_words))
    n_times = int(round(seconds * config.sfreq))
    if n_times < 1:
        raise ValueError(f"simulate_rest: seconds must be positive, got {seconds}")
    utt = _spontaneous(model, _rng(config.seed, subject_index, 2, run - 1), n_times)
    gen = _RecordingGenerator(model, 100 + run - 1, n_times, utt)
    if out_path is None:
        out = np.empty((model.n_channels, n_times), dtype=np.float32)
        _render(gen, out)
    else:
        path = Path(out_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp.npy")
        try:
            out = np.lib.format.open_memmap(
                tmp, mode="w+", dtype=np.float32, shape=(model.n_channels, n_times)
            )
            _render(gen, out)
            out.flush()
            del out
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        out = np.load(path, mmap_mode="r")
    return _make_recording(model, out, [], "rest", str(run), config)


def simulate(
    config: SimulationConfig | None = None,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    preset: str | None = None,
    progress: bool = False,
    **overrides: Any,
) -> SimulatedCorpus:
    """Generate a simulated sEEG word-reading corpus.

    Parameters
    ----------
    config : SimulationConfig, optional
        Full configuration (default: the ``"small"`` preset).
    out_dir : path, optional
        Stream every recording to ``<out_dir>/sub-XX/<task>_run-N.npy`` and return memory-
        mapped recordings (bounded memory); default keeps everything in memory.
    preset : str, optional
        Start from a named preset (``"tiny"``, ``"small"``, ``"paper"``).
    progress : bool
        Log progress per recording.
    **overrides
        Field overrides applied on top of ``config`` / ``preset``.

    Returns
    -------
    SimulatedCorpus
        Recordings, channel truth, vocabulary and oracle accuracies.

    Examples
    --------
    >>> corpus = simulate(preset="tiny", seed=1)  # doctest: +SKIP
    >>> corpus.subjects[0].task_runs[0].sfreq
    2000.0
    """
    if config is None:
        config = SimulationConfig.preset(preset or "small", **overrides)
    else:
        if preset is not None:
            raise ValueError("pass either config or preset, not both")
        config = dataclasses.replace(config, **overrides) if overrides else config
    config.validate()
    vocabulary = _vocabulary(config.n_words)
    root = Path(out_dir) if out_dir is not None else None
    subjects = []
    for s in range(config.n_subjects):
        model = _SubjectModel(config, s, vocabulary)
        rng = _rng(config.seed, s, 1)
        task_runs: list[Recording] = []
        for r, (trials, utterances, n_times) in enumerate(_task_design(model, rng)):
            path = (
                None
                if root is None
                else root / f"sub-{model.subject}" / f"wordreading_run-{r + 1}.npy"
            )
            out = _allocate((model.n_channels, n_times), path)
            _render(_RecordingGenerator(model, r, n_times, utterances), out)
            events = [Event(t, _TRIAL_S, vocabulary[w]) for t, w in trials]
            task_runs.append(_make_recording(model, out, events, "wordreading", str(r + 1), config))
            if progress:
                log.info("sub-%s task run %d: %.0f s", model.subject, r + 1, n_times / config.sfreq)
        pretrain: list[Recording] = []
        total = int(round(config.pretrain_hours * 3600 * config.sfreq))
        max_len = int(round(config.pretrain_recording_hours * 3600 * config.sfreq))
        k = 0
        while total > 0:
            n_times = min(total, max_len)
            total -= n_times
            if n_times < int(10 * config.sfreq):
                break
            rec_id = 100 + k
            utt = _spontaneous(model, _rng(config.seed, s, 2, k), n_times)
            path = None if root is None else root / f"sub-{model.subject}" / f"rest_run-{k + 1}.npy"
            out = _allocate((model.n_channels, n_times), path)
            _render(_RecordingGenerator(model, rec_id, n_times, utt), out)
            pretrain.append(_make_recording(model, out, [], "rest", str(k + 1), config))
            k += 1
        acc = float(oracle_accuracy(model))
        subjects.append(
            SimulatedSubject(
                subject=model.subject,
                task_runs=task_runs,
                pretrain=pretrain,
                informative_channels=[model.ch_names[i] for i in model.informative],
                channel_weights={
                    model.ch_names[i]: float(model.weights[i]) for i in range(model.n_channels)
                },
                oracle_accuracy=acc,
                metadata=model.metadata(),
            )
        )
    return SimulatedCorpus(config=config, vocabulary=vocabulary, subjects=subjects)


def simulate_to_disk(
    out: str | os.PathLike[str],
    format: str = "bids",
    config: SimulationConfig | None = None,
) -> Path:
    """Simulate a corpus and write it to ``out``, with ``simulation.json`` beside the data.

    Parameters
    ----------
    out : path
        Output directory; must not exist or be empty.
    format : {"bids", "released", "npz"}
        ``"bids"``: raw 2 kHz monopolar recordings (task and non-task runs) as a BIDS iEEG
        dataset via :func:`duin.data.writers.write_bids` (``simulation.json`` is listed in
        ``.bidsignore``). ``"released"``: the task runs preprocessed like the release
        (0.5-200 Hz, 50 Hz notch, 1000 Hz, bipolar named after the first contact) in the Du-IN
        layout via :func:`duin.data.writers.write_released`, with the non-task recordings,
        preprocessed the same way, as the paper's pretraining files
        (``<subj>/pretrain/dataset.default.1000hz/``: 8-s windows every 4 s, z-scored per channel
        over the non-task signal). ``"npz"``: raw ``.npy``
        signals per recording with a JSON sidecar each under ``raw/`` (no other dependency).
    config : SimulationConfig, optional
        Default: the ``"small"`` preset.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    ValueError
        Unknown format or invalid config.
    FileExistsError
        ``out`` exists and is not empty.
    """
    if format not in ("bids", "released", "npz"):
        raise ValueError(
            f"simulate_to_disk: format must be 'bids', 'released' or 'npz', got {format!r}"
        )
    config = (config or SimulationConfig()).validate()
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: already exists and is not empty")
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.sim-", dir=out.parent))
    try:
        raw_dir = out / "raw" if format == "npz" else scratch / "raw"
        corpus = simulate(config, out_dir=raw_dir)
        truth = corpus.truth()
        if config.compute_baseline:
            truth["baseline"] = {
                "method": "logistic regression (C=0.05, standardised) on log 70-170 Hz power in "
                "100-ms bins over 0-3 s of the informative channels; stratified 80/20 split",
                "accuracy": {s.subject: band_power_baseline(s) for s in corpus.subjects},
            }
        if format == "npz":
            for rec in corpus.recordings:
                _write_sidecar(
                    rec, out / "raw" / f"sub-{rec.subject}" / f"{rec.task}_run-{rec.run}.json"
                )
        elif format == "bids":
            from duin.data.writers import write_bids

            if out.exists():
                out.rmdir()  # empty (checked above); write_bids creates it atomically
            write_bids(
                corpus.recordings,
                out,
                line_freq=config.line_freq,
                vocabulary=corpus.vocabulary,
                dataset_name="duin simulated sEEG word-reading corpus",
            )
            ignore = out / ".bidsignore"
            previous = ignore.read_text() if ignore.exists() else ""
            _atomic_write_text(ignore, previous + "simulation.json\n")
        else:
            from duin.data.preprocess import PreprocessConfig, preprocess
            from duin.data.writers import write_released

            pre_cfg = PreprocessConfig(line_freq=config.line_freq, bipolar_naming="first")
            task = []
            for i, rec in enumerate(r for s in corpus.subjects for r in s.task_runs):
                task.append(preprocess(rec, pre_cfg, out_path=scratch / f"task{i}.npy"))
            rest = [
                preprocess(rec, pre_cfg, out_path=scratch / f"rest{i}.npy")
                for i, rec in enumerate(r for s in corpus.subjects for r in s.pretrain)
            ]
            write_released(task, out, vocabulary=corpus.vocabulary, pretrain=rest)
            del task, rest
            truth["released_preprocessing"] = pre_cfg.to_dict()
        _atomic_write_text(out / "simulation.json", json.dumps(truth, indent=1, ensure_ascii=False))
    finally:
        corpus = None  # release memmaps before removing their files
        shutil.rmtree(scratch, ignore_errors=True)
    return out


def read_simulated(root: str | os.PathLike[str]) -> list[Recording]:
    """Read the ``"npz"`` layout of :func:`simulate_to_disk` back (signals memory-mapped).

    Parameters
    ----------
    root : path
        The folder given to :func:`simulate_to_disk` (or its ``raw`` folder).

    Returns
    -------
    list of Recording
        Sorted by subject, task and run.

    Raises
    ------
    FileNotFoundError
        If no ``.json`` + ``.npy`` pair is found.
    """
    root = Path(root)
    sidecars = sorted(p for p in root.rglob("*.json") if p.with_suffix(".npy").is_file())
    if not sidecars:
        raise FileNotFoundError(f"{root}: no simulated recordings (<name>.json + <name>.npy)")
    out = []
    for path in sidecars:
        meta = json.loads(path.read_text(encoding="utf-8"))
        signals = np.load(path.with_suffix(".npy"), mmap_mode="r")
        out.append(
            Recording(
                signals=signals,
                sfreq=float(meta["sfreq"]),
                ch_names=meta["ch_names"],
                subject=meta["subject"],
                events=[Event(e["onset"], e["duration"], e["label"]) for e in meta["events"]],
                ch_regions=meta.get("ch_regions"),
                ch_coords=None if meta.get("ch_coords") is None else np.asarray(meta["ch_coords"]),
                bad_channels=meta.get("bad_channels", []),
                task=meta.get("task"),
                run=meta.get("run"),
                provenance={"source": str(path.with_suffix(".npy")), "reader": "read_simulated"},
            )
        )
    return sorted(out, key=lambda r: (r.subject, r.task or "", int(r.run or 0)))


def _write_sidecar(rec: Recording, path: Path) -> None:
    """JSON description of a recording stored as ``.npy`` beside it."""
    meta = {
        "sfreq": rec.sfreq,
        "units": "V",
        "subject": rec.subject,
        "task": rec.task,
        "run": rec.run,
        "ch_names": rec.ch_names,
        "ch_regions": rec.ch_regions,
        "ch_coords": rec.ch_coords.tolist() if rec.ch_coords is not None else None,
        "bad_channels": rec.bad_channels,
        "events": [dataclasses.asdict(e) for e in rec.events],
    }
    _atomic_write_text(path, json.dumps(meta, ensure_ascii=False))


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
