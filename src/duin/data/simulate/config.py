"""The simulator's settings (:class:`SimulationConfig`, :data:`PRESETS`), its result types and
the fixed constants of the task design.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from duin.data.recording import Recording

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
    spontaneous_lexicon : int
        Words spontaneous speech is drawn from, by Zipf's law (frequency proportional to
        1/rank): the task's words at random ranks among words of the same syllable inventory
        and length distribution. The default 1,000: in spoken English the 1,000 most frequent
        word families cover roughly 80 % of tokens (Nation 2006). Real speech is words, so the
        parts of an utterance predict one another; 0 draws each syllable's initial, final and
        tone independently (the simulator before: no structure that masked modelling could
        learn beyond a part's own envelope).
    background_rms : float
        Median broadband background RMS in volts.
    spectral_exponent : float
        Background power falls as ``1/f**spectral_exponent`` above ``spectral_knee`` (0.2-3.8).
        The default 2.7 is close to the slope a real ECoG recording shows between 2 and 100 Hz
        (``benchmarks/simulator_realism.py``); the earlier 1.6 gave spectra so flat that
        random-phase high gamma was a third of the variance of the informative channels.
    spectral_knee : float
        Below this frequency (Hz) the background spectrum is flat: the "knee" of real ECoG
        aperiodic spectra (Miller et al. 2009). Without it the power below 1 Hz swamps the
        low-frequency word responses.
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
    spontaneous_lexicon: int = 1000
    background_rms: float = 3e-5
    spectral_exponent: float = 2.7
    spectral_knee: float = 5.0
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
        need(
            self.spontaneous_lexicon == 0 or self.spontaneous_lexicon >= self.n_words,
            "spontaneous_lexicon",
            f"0 (random syllables) or >= n_words ({self.n_words})",
        )
        need(0.2 < self.reaction_time < 1.2, "reaction_time", "between 0.2 and 1.2 s")
        need(0 < self.background_rms < 1e-2, "background_rms", "volts in (0, 1e-2)")
        need(0.2 <= self.spectral_exponent <= 3.8, "spectral_exponent", "between 0.2 and 3.8")
        need(0.05 <= self.spectral_knee <= 50, "spectral_knee", "between 0.05 and 50 Hz")
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
