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

Modules: :mod:`~duin.data.simulate.config` (settings, presets, result types),
:mod:`~duin.data.simulate.subject` (montage and word-part responses of one subject),
:mod:`~duin.data.simulate.signal` (block-wise signal generation, task design),
:mod:`~duin.data.simulate.oracle` (the ceiling and a band-power baseline),
:mod:`~duin.data.simulate.corpus` (:func:`simulate`, :func:`simulate_rest`) and
:mod:`~duin.data.simulate.io` (:func:`simulate_to_disk`, :func:`read_simulated`).
"""

# The private names (noqa: F401) are internals tests/test_simulate.py reaches as attributes of
# this package.
from duin.data.simulate.config import (
    _BLOCK,  # noqa: F401
    PRESETS,
    SimulatedCorpus,
    SimulatedSubject,
    SimulationConfig,
)
from duin.data.simulate.corpus import simulate, simulate_rest
from duin.data.simulate.io import read_simulated, simulate_to_disk
from duin.data.simulate.oracle import band_power_baseline, band_power_features, oracle_accuracy
from duin.data.simulate.signal import _RecordingGenerator, _render, _spontaneous  # noqa: F401
from duin.data.simulate.subject import _rng, _SubjectModel, _vocabulary  # noqa: F401

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
