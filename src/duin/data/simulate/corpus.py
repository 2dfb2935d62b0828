"""Whole recordings and corpora in memory (or streamed to ``.npy`` files): :func:`simulate` and
:func:`simulate_rest`.

Files are written block by block with plain file I/O (:class:`duin.utils.npy.NpyBlockWriter`),
not through a writable memory map, so peak memory does not grow with the recording's length.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from duin.data.recording import Event, Recording
from duin.data.simulate.config import _TRIAL_S, SimulatedCorpus, SimulatedSubject, SimulationConfig
from duin.data.simulate.oracle import oracle_accuracy
from duin.data.simulate.signal import _RecordingGenerator, _render, _spontaneous, _task_design
from duin.data.simulate.subject import _rng, _SubjectModel, _vocabulary
from duin.utils.npy import NpyBlockWriter

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------- public
def _render_to(gen: _RecordingGenerator, shape: tuple[int, int], path: Path | None) -> np.ndarray:
    """Render a recording in memory, or to ``path`` (returning a read-only memory map of it)."""
    if path is None:
        out = np.empty(shape, dtype=np.float32)
        _render(gen, out)
        return out
    writer = NpyBlockWriter(path, shape)
    _render(gen, writer)  # type: ignore[arg-type]
    return writer.finish()


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
    ``out_path`` the signals go block by block into a float32 ``.npy`` file (written under a
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
    path = None if out_path is None else Path(out_path)
    out = _render_to(gen, (model.n_channels, n_times), path)
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
            gen = _RecordingGenerator(model, r, n_times, utterances)
            out = _render_to(gen, (model.n_channels, n_times), path)
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
            gen = _RecordingGenerator(model, rec_id, n_times, utt)
            out = _render_to(gen, (model.n_channels, n_times), path)
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
