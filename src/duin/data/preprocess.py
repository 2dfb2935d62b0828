"""Preprocessing as in the paper (§4.2): band-pass, line-noise notch, resampling, re-referencing.

The Du-IN data were band-passed 0.5-200 Hz, notch-filtered at 50 Hz, resampled from 2000 to
1000 Hz and bipolar re-referenced (neighbouring contacts on a shaft, ``A1 - A2``). The paper does
not give filter types or orders; :class:`PreprocessConfig` makes every choice explicit and its
:meth:`~PreprocessConfig.fingerprint` identifies the result for caches.

Everything runs in chunks so that a multi-hour recording (e.g. a ``numpy.memmap``) never needs
more than ``chunk_samples`` columns in memory at once, and files are written and read back with
plain block I/O (:class:`duin.utils.npy.NpyBlockWriter`), never a writable memory map, whose
touched pages would stay resident: peak memory does not grow with the recording's length.

1. IIR filtering (Butterworth band-pass and notch biquads as one second-order-section cascade)
   with :class:`duin.data.filtering.BlockFilter`, which online decoding uses too.
   ``phase="zero"`` reproduces :func:`scipy.signal.sosfiltfilt` (odd extension at both ends,
   steady-state initial conditions): a forward pass over the chunks carries the filter state
   across chunk boundaries and stores its output in a scratch file beside ``out_path``, then a
   backward pass runs over the chunks in reverse, overwriting each with its final samples.
   ``phase="causal"`` is one forward pass (:func:`scipy.signal.sosfilt`, steady-state start).
2. Polyphase resampling (:func:`scipy.signal.resample_poly`) on chunks that overlap by more than
   the anti-aliasing filter's half length and start on multiples of the decimation factor, so
   each kept output sample sees exactly the input the one-shot call would.
3. Bad-channel handling and re-referencing, one linear map across channels per time sample.

So chunked and one-shot results agree to float32 rounding (tested).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from scipy import signal as sps

from duin.data.filtering import BlockFilter, filter_padlen
from duin.data.recording import Recording, RecordingError
from duin.utils.npy import NpyBlockWriter, release_pages

__all__ = [
    "PreprocessConfig",
    "bipolar_pairs",
    "design_filter",
    "filter_padlen",
    "parse_contact",
    "preprocess",
    "resample_factors",
    "resample_margin",
    "spatial_map",
]

# Bump when the algorithm changes in a way that changes outputs (invalidates caches).
_ALGORITHM_VERSION = 1
_REFERENCES = ("bipolar", "average", "none")
_BAD_MODES = ("drop", "zero", "interpolate", "keep")
_PHASES = ("zero", "causal")
_NAMINGS = ("pair", "first")


@dataclass(frozen=True)
class PreprocessConfig:
    """Every preprocessing choice, with the paper's values as defaults.

    Parameters
    ----------
    l_freq : float or None
        High-pass edge in Hz of the band-pass (``None``: no high-pass). Paper: 0.5.
    h_freq : float or None
        Low-pass edge in Hz (``None``: no low-pass). Paper: 200.
    filter_order : int
        Butterworth order of each band edge (doubled in effect by ``phase="zero"``).
    phase : {"zero", "causal"}
        ``"zero"``: forward-backward (no delay, like ``sosfiltfilt``); ``"causal"``: forward only.
    line_freq : float or None
        Power-line frequency to notch, with its harmonics (``None``: no notch). Paper: 50.
    notch_harmonics : int or None
        How many multiples of ``line_freq`` to notch (1 = the fundamental only); ``None``: all
        below the Nyquist frequency of the input and the output.
    notch_q : float
        Quality factor of each notch (bandwidth = frequency / Q).
    sfreq : float or None
        Output sampling rate in Hz (``None``: keep). Paper: 1000 (from 2000).
    reference : {"bipolar", "average", "none"}
        Bipolar along shafts (paper), common average over good channels, or none.
    bipolar_naming : {"pair", "first"}
        Bipolar channel names: ``"SM8-SM9"`` or, like the release, the first contact ``"SM8"``.
    bad_channels : {"drop", "zero", "interpolate", "keep"}
        ``drop``: remove bad channels (and bipolar pairs that use them); ``zero``: set them to 0
        and keep them marked bad; ``interpolate``: replace a bad contact by the mean of its good
        neighbours on the same shaft (zero and still bad if it has none); ``keep``: use as is.
    """

    l_freq: float | None = 0.5
    h_freq: float | None = 200.0
    filter_order: int = 4
    phase: str = "zero"
    line_freq: float | None = 50.0
    notch_harmonics: int | None = None
    notch_q: float = 30.0
    sfreq: float | None = 1000.0
    reference: str = "bipolar"
    bipolar_naming: str = "pair"
    bad_channels: str = "drop"

    def validate(self, input_sfreq: float | None = None) -> None:
        """Raise ``ValueError`` naming the first bad field.

        Parameters
        ----------
        input_sfreq : float, optional
            Sampling rate of the data to process; also checks the band edges against it.
        """

        def bad(field: str, why: str) -> ValueError:
            return ValueError(f"PreprocessConfig.{field}: {why} (got {getattr(self, field)!r})")

        for name in ("l_freq", "h_freq", "line_freq", "sfreq"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise bad(name, "must be a positive number or None")
        if self.l_freq is not None and self.h_freq is not None and self.l_freq >= self.h_freq:
            raise bad("l_freq", f"must be below h_freq={self.h_freq}")
        if not isinstance(self.filter_order, int) or not 1 <= self.filter_order <= 16:
            raise bad("filter_order", "must be an integer in 1..16")
        if self.phase not in _PHASES:
            raise bad("phase", f"must be one of {_PHASES}")
        if self.notch_harmonics is not None and (
            not isinstance(self.notch_harmonics, int) or self.notch_harmonics < 1
        ):
            raise bad("notch_harmonics", "must be a positive integer or None")
        if not (math.isfinite(self.notch_q) and self.notch_q > 0):
            raise bad("notch_q", "must be positive")
        if self.reference not in _REFERENCES:
            raise bad("reference", f"must be one of {_REFERENCES}")
        if self.bipolar_naming not in _NAMINGS:
            raise bad("bipolar_naming", f"must be one of {_NAMINGS}")
        if self.bad_channels not in _BAD_MODES:
            raise bad("bad_channels", f"must be one of {_BAD_MODES}")
        if input_sfreq is not None:
            nyquist = input_sfreq / 2
            out_nyquist = (self.sfreq or input_sfreq) / 2
            if self.h_freq is not None and self.h_freq >= min(nyquist, out_nyquist):
                raise bad(
                    "h_freq",
                    f"must be below the Nyquist frequency {min(nyquist, out_nyquist):g} Hz",
                )
            if self.l_freq is not None and self.l_freq >= nyquist:
                raise bad("l_freq", f"must be below the Nyquist frequency {nyquist:g} Hz")
            if self.sfreq is not None:
                resample_factors(input_sfreq, self.sfreq)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (for YAML/JSON and provenance)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PreprocessConfig:
        """Build from a dict, naming any unknown key."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"PreprocessConfig: unknown keys {unknown} (known: {sorted(known)})")
        config = cls(**values)
        config.validate()
        return config

    def fingerprint(self) -> str:
        """Stable 16-hex-digit hash of the settings and algorithm version (a cache key)."""
        payload = json.dumps(
            {"version": _ALGORITHM_VERSION, **self.to_dict()}, sort_keys=True, default=float
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------- channels
_CONTACT = re.compile(r"^(.*?\D)(\d+)$")


def parse_contact(name: str) -> tuple[str, int] | None:
    """Split a contact name into shaft and number: ``"SM8" -> ("SM", 8)``, ``"TI'2" -> ("TI'", 2)``.

    Returns
    -------
    tuple of (str, int) or None
        ``None`` when the name does not end in a number after a non-digit prefix.
    """
    match = _CONTACT.match(name.strip())
    if match is None:
        return None
    return match.group(1), int(match.group(2))


def bipolar_pairs(ch_names: Sequence[str], exclude: Sequence[str] = ()) -> list[tuple[str, str]]:
    """Neighbouring-contact pairs ``(A_n, A_{n+1})`` along each shaft, in channel order.

    Parameters
    ----------
    ch_names : sequence of str
        Monopolar contact names (``"SM8"``, ``"SM9"``, ...).
    exclude : sequence of str
        Contacts that may not be used (e.g. bad ones).

    Returns
    -------
    list of (str, str)
        ``(first, second)`` with consecutive contact numbers on the same shaft.
    """
    excluded = set(exclude)
    lookup = {}
    for name in ch_names:
        parsed = parse_contact(name)
        if parsed is not None and name not in excluded:
            lookup[parsed] = name
    pairs = []
    for name in ch_names:
        parsed = parse_contact(name)
        if parsed is None or name in excluded:
            continue
        neighbour = lookup.get((parsed[0], parsed[1] + 1))
        if neighbour is not None:
            pairs.append((name, neighbour))
    return pairs


@dataclass
class _SpatialPlan:
    weights: np.ndarray  # (n_out, n_used) float64: output = weights @ filtered[used]
    used: list[int]  # input rows that feed any output
    ch_names: list[str]
    ch_regions: list[str] | None
    ch_coords: np.ndarray | None
    bad_channels: list[str]
    notes: dict[str, Any]


def spatial_map(rec: Recording, config: PreprocessConfig) -> _SpatialPlan:
    """Build the per-sample linear map (bad-channel handling then re-referencing).

    Parameters
    ----------
    rec : Recording
        Input (its names, bad channels, regions and coordinates are used).
    config : PreprocessConfig
        Settings.

    Returns
    -------
    _SpatialPlan
        Weights ``(n_out, n_used)`` and the output channel metadata.
    """
    names = rec.ch_names
    n = len(names)
    bad = set(rec.bad_channels)
    notes: dict[str, Any] = {}
    # Step 1: bad-channel handling as a matrix fix (n, n) applied to the monopolar signals.
    fix = np.eye(n)
    still_bad = set(bad)
    if config.bad_channels in ("zero", "interpolate"):
        for name in bad:
            i = names.index(name)
            fix[i] = 0.0
            if config.bad_channels == "interpolate":
                parsed = parse_contact(name)
                neighbours = []
                if parsed is not None:
                    for step in (-1, 1):
                        other = f"{parsed[0]}{parsed[1] + step}"
                        if other in names and other not in bad:
                            neighbours.append(names.index(other))
                if neighbours:
                    fix[i, neighbours] = 1.0 / len(neighbours)
                    still_bad.discard(name)
        notes["bad_handling"] = {"mode": config.bad_channels, "channels": sorted(bad)}
    drop = bad if config.bad_channels == "drop" else set()

    regions, coords = rec.ch_regions, rec.ch_coords
    if config.reference == "bipolar":
        exclude = drop | (still_bad if config.bad_channels == "zero" else set())
        pairs = bipolar_pairs(names, exclude=sorted(exclude))
        if not pairs:
            raise RecordingError(
                f"{rec._where()}: no neighbouring contacts (e.g. 'A1','A2') for a bipolar "
                "reference; use reference='average' or 'none'"
            )
        ref = np.zeros((len(pairs), n))
        out_names, out_regions, out_coords, out_bad = [], [], [], []
        for k, (a, b) in enumerate(pairs):
            ia, ib = names.index(a), names.index(b)
            ref[k, ia], ref[k, ib] = 1.0, -1.0
            out_names.append(a if config.bipolar_naming == "first" else f"{a}-{b}")
            if regions is not None:
                out_regions.append(regions[ia])
            if coords is not None:
                out_coords.append((coords[ia] + coords[ib]) / 2)
            if a in still_bad or b in still_bad:
                out_bad.append(out_names[-1])
        notes["bipolar_pairs"] = [f"{a}-{b}" for a, b in pairs]
        ch_regions = out_regions if regions is not None else None
        ch_coords = np.array(out_coords) if coords is not None else None
    else:
        keep = [i for i, name in enumerate(names) if name not in drop]
        if not keep:
            raise RecordingError(f"{rec._where()}: every channel is bad")
        ref = np.eye(n)[keep]
        if config.reference == "average":
            good = [i for i in keep if names[i] not in still_bad]
            if not good:
                raise RecordingError(f"{rec._where()}: no good channel for a common average")
            ref = ref.copy()
            ref[:, good] -= 1.0 / len(good)
            if config.bad_channels == "zero":
                for row, i in enumerate(keep):
                    if names[i] in still_bad:
                        ref[row] = 0.0
        out_names = [names[i] for i in keep]
        out_bad = [names[i] for i in keep if names[i] in still_bad]
        ch_regions = [regions[i] for i in keep] if regions is not None else None
        ch_coords = coords[keep] if coords is not None else None
    weights = ref @ fix  # (n_out, n)
    used = [int(i) for i in np.flatnonzero(np.abs(weights).sum(axis=0) > 0)]
    if not used:
        raise RecordingError(f"{rec._where()}: preprocessing leaves no channel with data")
    return _SpatialPlan(
        weights=weights[:, used],
        used=used,
        ch_names=out_names,
        ch_regions=ch_regions,
        ch_coords=ch_coords,
        bad_channels=out_bad if config.bad_channels != "drop" else [],
        notes=notes,
    )


# -------------------------------------------------------------------------------------- filters
def design_filter(config: PreprocessConfig, sfreq: float) -> np.ndarray | None:
    """Second-order sections of the band-pass and notch cascade (``None`` if no filtering).

    Parameters
    ----------
    config : PreprocessConfig
        Filter settings.
    sfreq : float
        Input sampling rate in Hz.

    Returns
    -------
    numpy.ndarray or None
        ``(n_sections, 6)`` float64.
    """
    sections = []
    if config.l_freq is not None and config.h_freq is not None:
        sections.append(
            sps.butter(
                config.filter_order,
                [config.l_freq, config.h_freq],
                "bandpass",
                fs=sfreq,
                output="sos",
            )
        )
    elif config.l_freq is not None:
        sections.append(
            sps.butter(config.filter_order, config.l_freq, "highpass", fs=sfreq, output="sos")
        )
    elif config.h_freq is not None:
        sections.append(
            sps.butter(config.filter_order, config.h_freq, "lowpass", fs=sfreq, output="sos")
        )
    if config.line_freq is not None:
        limit = min(sfreq, config.sfreq or sfreq) / 2
        k = 1
        while k * config.line_freq < limit and (
            config.notch_harmonics is None or k <= config.notch_harmonics
        ):
            b, a = sps.iirnotch(k * config.line_freq, config.notch_q, fs=sfreq)
            sections.append(sps.tf2sos(b, a))
            k += 1
    return np.vstack(sections) if sections else None


def resample_factors(sfreq_in: float, sfreq_out: float) -> tuple[int, int]:
    """``(up, down)`` of the polyphase resampling from ``sfreq_in`` to ``sfreq_out`` Hz."""
    ratio = Fraction(sfreq_out / sfreq_in).limit_denominator(1000)
    if abs(float(ratio) * sfreq_in - sfreq_out) > 1e-6 * sfreq_out:
        raise ValueError(
            f"PreprocessConfig.sfreq: cannot resample {sfreq_in:g} Hz to {sfreq_out:g} Hz with "
            "a rational factor of small terms"
        )
    return ratio.numerator, ratio.denominator


def resample_margin(up: int, down: int) -> int:
    """Input samples (a multiple of ``down``) that a resampled chunk needs beyond each end.

    ``resample_poly``'s filter spans ``10 * max(up, down)`` upsampled samples on each side, so
    a segment that starts on a multiple of ``down`` and reaches this far past the outputs it
    keeps computes them exactly as the one-shot call would.
    """
    half = -(-10 * max(up, down) // up) + 2
    return -(-half // down) * down


def _read_block(array: NpyBlockWriter | np.ndarray, start: int, stop: int) -> np.ndarray:
    if isinstance(array, NpyBlockWriter):
        return array.read(start, stop)
    return array[:, start:stop]


def _filter(
    bf: BlockFilter,
    read: Callable[[int, int], np.ndarray],
    store: NpyBlockWriter | np.ndarray,
    n_times: int,
    chunk: int,
) -> None:
    """Filter ``read``'s signal block by block into ``store`` (zero-phase: then backwards in place).

    The backward pass walks the forward output from the last block to the first, carrying
    its state, and overwrites each block with the final samples after reading it.
    """
    starts = range(0, n_times, chunk)
    for start in starts:
        stop = min(start + chunk, n_times)
        store[:, start:stop] = bf.forward(read(start, stop))
    if not bf.zero_phase:
        return
    state = bf.end_state(read(n_times - bf.n_start, n_times))
    for start in reversed(starts):
        stop = min(start + chunk, n_times)
        block, state = bf.backward(_read_block(store, start, stop), state)
        store[:, start:stop] = block


def preprocess(
    recording: Recording,
    config: PreprocessConfig | None = None,
    out_path: str | PathLike[str] | None = None,
    *,
    chunk_samples: int = 1 << 16,
) -> Recording:
    """Filter, notch, resample and re-reference a recording in bounded memory.

    Parameters
    ----------
    recording : Recording
        Input, typically 2000 Hz monopolar contacts in volts (may be memory-mapped).
    config : PreprocessConfig, optional
        Settings; default the paper's (0.5-200 Hz, 50 Hz notch + harmonics, 1000 Hz, bipolar).
    out_path : path-like, optional
        ``.npy`` file for the output (float32 ``(n_channels, n_times)``, written to a temporary
        name and renamed when complete, by plain block writes); the returned recording
        memory-maps it read-only, and the filtered intermediate lives in a scratch file
        beside it (removed at the end). Without it, everything is kept in memory.
    chunk_samples : int
        Input samples processed at once (memory is ``O(n_channels * chunk_samples)``).

    Returns
    -------
    Recording
        Same subject, events (seconds) and entities; new channels (e.g. ``"SM8-SM9"``), rate,
        bad channels, regions/coordinates (bipolar: region of the first contact, midpoint
        coordinates); ``provenance["preprocess"]`` holds the settings and fingerprint.

    Raises
    ------
    ValueError
        Invalid settings for this recording.
    RecordingError
        Too short for the filter, no bipolar pairs, every channel bad.
    """
    config = config or PreprocessConfig()
    config.validate(recording.sfreq)
    if chunk_samples < 64:
        raise ValueError(f"chunk_samples must be at least 64, got {chunk_samples}")
    plan = spatial_map(recording, config)
    rows = plan.used
    n_times, sfreq_in = recording.n_times, recording.sfreq
    sfreq_out = config.sfreq or sfreq_in
    up, down = resample_factors(sfreq_in, sfreq_out)
    chunk = max(down, chunk_samples - chunk_samples % down)
    out_dir = Path(out_path).resolve().parent if out_path is not None else None

    src = recording.signals

    def read(start: int, stop: int) -> np.ndarray:
        block = np.asarray(src[rows, start:stop], dtype=np.float64)  # fancy indexing: a copy
        release_pages(src)  # the input's pages must not accumulate in RSS
        return block

    sos = design_filter(config, sfreq_in)
    bf = None if sos is None else BlockFilter(sos, zero_phase=config.phase == "zero")
    if bf is not None:
        if n_times < bf.n_start:
            raise RecordingError(
                f"recording has {n_times} samples, the zero-phase filter needs more than "
                f"{bf.padlen}"
            )
        # the forward pass's first block is where the odd extension comes from
        chunk = max(chunk, -(-bf.n_start // down) * down)
    n_out = -(-n_times * up // down)
    out_shape = (len(plan.ch_names), n_out)
    filtered: NpyBlockWriter | np.ndarray | None = None
    out: NpyBlockWriter | np.ndarray | None = None
    try:
        if bf is not None:
            # scratch for the filtered input: on disk beside the output, written and read back
            # with plain file I/O, so memory holds one block whatever the recording's length
            shape = (len(rows), n_times)
            filtered = (
                np.empty(shape, dtype=np.float32)
                if out_path is None
                else NpyBlockWriter(out_dir / f".{Path(out_path).name}.filtered", shape)
            )
            _filter(bf, read, filtered, n_times, chunk)

        def read_filtered(start: int, stop: int) -> np.ndarray:
            if filtered is None:
                return read(start, stop)
            return np.asarray(_read_block(filtered, start, stop), dtype=np.float64)

        out = (
            np.empty(out_shape, dtype=np.float32)
            if out_path is None
            else NpyBlockWriter(out_path, out_shape)
        )
        if up == down:
            for start in range(0, n_times, chunk):
                stop = min(start + chunk, n_times)
                out[:, start:stop] = plan.weights @ read_filtered(start, stop)
        else:
            margin = resample_margin(up, down)
            for start in range(0, n_times, chunk):
                stop = min(start + chunk, n_times)
                seg_start, seg_stop = max(0, start - margin), min(n_times, stop + margin)
                seg = sps.resample_poly(read_filtered(seg_start, seg_stop), up, down, axis=-1)
                first = seg_start * up // down
                out_start = start * up // down
                out_stop = n_out if stop == n_times else stop * up // down
                block = seg[:, out_start - first : out_stop - first]
                out[:, out_start:out_stop] = plan.weights @ block
        if isinstance(out, NpyBlockWriter):
            out = out.finish()
    finally:
        # an unfinished writer removes its temporary file; the scratch file always goes
        for writer in (filtered, out):
            if isinstance(writer, NpyBlockWriter):
                writer.discard()

    provenance = dict(recording.provenance)
    provenance["preprocess"] = {
        "config": config.to_dict(),
        "fingerprint": config.fingerprint(),
        "input_sfreq": sfreq_in,
        "input_channels": len(recording.ch_names),
        **plan.notes,
    }
    if out_path is not None:
        provenance["signals_path"] = str(out_path)
    events = [ev for ev in recording.events if ev.onset + ev.duration <= n_out / sfreq_out + 1e-9]
    return recording.replace(
        signals=out,
        sfreq=float(sfreq_out),
        ch_names=plan.ch_names,
        ch_regions=plan.ch_regions,
        ch_coords=plan.ch_coords,
        bad_channels=plan.bad_channels,
        events=events,
        provenance=provenance,
    )
