"""Streaming generation of a recording's signal block by block (1/f background, rhythms,
line noise, artefacts, word responses), and the task design of a run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.signal as sps

from duin.data.simulate.config import _BLOCK, _BLOCK_PAUSE_S, _PREPARE_S, _RUN_PAD_S, _TRIAL_S
from duin.data.simulate.subject import _SOS_CACHE, _rng, _SubjectModel


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
    """Spontaneous words at Poisson times in non-task data.

    Each utterance is a word of the subject's lexicon drawn by its Zipf frequency
    (:meth:`_SubjectModel.lexicon`), or with ``spontaneous_lexicon: 0`` 1-3 syllables whose
    initial, final and tone are drawn independently.
    """
    cfg = model.config
    sf = model.sfreq
    rate = cfg.spontaneous_rate
    words, freq = model.lexicon() if cfg.spontaneous_lexicon else ([], None)
    out: list[_Utterance] = []
    t = 1.0
    duration = n_times / sf
    while rate > 0:
        t += rng.exponential(1 / rate) + 0.3
        if t > duration - 3.0:
            break
        if freq is not None:
            syls = words[int(rng.choice(len(words), p=freq))]
        else:
            syls = tuple(
                (
                    int(rng.integers(model.n_initials)),
                    int(rng.integers(model.n_finals)),
                    int(rng.integers(model.n_tones)),
                )
                for _ in range(int(rng.integers(1, 4)))
            )
        n_syl = len(syls)
        dur = float(0.25 * math.exp(rng.normal(0, 0.1)))
        amp = float(math.exp(rng.normal(0, cfg.amplitude_sd))) / cfg.difficulty
        out.append(_Utterance(int(round(t * sf)), syls, dur, amp, int(rng.integers(2**62))))
        t += n_syl * dur
    return out
