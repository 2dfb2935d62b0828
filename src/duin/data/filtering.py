"""IIR filtering block by block with carried state, equal to one-shot scipy filtering.

:class:`BlockFilter` is the one implementation of chunked filtering in duin: offline
preprocessing (:func:`duin.data.preprocess.preprocess`) runs it over blocks of a file, online
decoding (``duin stream``) over chunks as they arrive. Both must start and end exactly as the
one-shot calls do, so that chunked and one-shot results agree to float rounding:

- ``phase="causal"`` equals :func:`scipy.signal.sosfilt` started in steady state on the first
  sample (``zi = sosfilt_zi(sos) * x[0]``): one forward pass;
- ``phase="zero"`` equals :func:`scipy.signal.sosfiltfilt` (``padtype="odd"``): the forward pass
  starts on an odd extension of the first samples, and the backward pass, which runs from the
  end of the signal to its start, starts on an odd extension of the last samples continued from
  the forward pass's final state (:meth:`BlockFilter.end_state`).
"""

from __future__ import annotations

import numpy as np
from scipy import signal as sps

__all__ = ["BlockFilter", "filter_padlen"]


def filter_padlen(sos: np.ndarray) -> int:
    """Samples of odd extension at each end of a zero-phase pass (``sosfiltfilt``'s default)."""
    n_taps = 2 * len(sos) + 1 - min(int((sos[:, 2] == 0).sum()), int((sos[:, 5] == 0).sum()))
    return 3 * n_taps


class BlockFilter:
    """A second-order-section cascade run over consecutive blocks of ``(n_channels, n)`` samples.

    Parameters
    ----------
    sos : numpy.ndarray
        ``(n_sections, 6)`` second-order sections.
    zero_phase : bool
        Start the forward pass like ``sosfiltfilt`` (odd extension) rather than like a causal
        ``sosfilt`` (steady state on the first sample).
    """

    def __init__(self, sos: np.ndarray, zero_phase: bool) -> None:
        self.sos = np.asarray(sos, dtype=np.float64)
        self.zero_phase = bool(zero_phase)
        self.padlen = filter_padlen(self.sos) if self.zero_phase else 0
        self.zi = sps.sosfilt_zi(self.sos)  # (n_sections, 2): unit-step steady state
        self.state: np.ndarray | None = None  # forward state (n_sections, n_channels, 2)

    @property
    def n_start(self) -> int:
        """Samples the first :meth:`forward` block must hold (the odd extension's source)."""
        return self.padlen + 1

    @property
    def started(self) -> bool:
        """Whether the forward pass has started."""
        return self.state is not None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Forward pass over the next block, continuing from the previous one.

        Parameters
        ----------
        x : numpy.ndarray
            ``(n_channels, n)`` samples; the first block needs at least :attr:`n_start`.

        Returns
        -------
        numpy.ndarray
            ``(n_channels, n)`` float64 forward-filtered samples.
        """
        x = np.asarray(x, dtype=np.float64)
        if self.state is None:
            if x.shape[1] < self.n_start:
                raise ValueError(
                    f"the first block has {x.shape[1]} samples; the filter needs {self.n_start}"
                )
            zi = self.zi[:, None, :]
            if self.zero_phase:
                head = 2 * x[:, :1] - x[:, self.padlen : 0 : -1]  # odd extension before x[0]
                _, self.state = sps.sosfilt(self.sos, head, axis=-1, zi=zi * head[None, :, :1])
            else:
                self.state = zi * x[None, :, :1]
        y, self.state = sps.sosfilt(self.sos, x, axis=-1, zi=self.state)
        return y

    def end_state(self, tail: np.ndarray) -> np.ndarray:
        """Backward-pass state at the signal's last sample, as ``sosfiltfilt`` has it there.

        Parameters
        ----------
        tail : numpy.ndarray
            ``(n_channels, >= n_start)``: the last input samples, after the whole signal has
            gone through :meth:`forward`.

        Returns
        -------
        numpy.ndarray
            ``(n_sections, n_channels, 2)`` initial state for :meth:`backward`.
        """
        if self.state is None:
            raise ValueError("end_state() needs the forward pass over the whole signal first")
        tail = np.asarray(tail, dtype=np.float64)
        ext = 2 * tail[:, -1:] - tail[:, -2 : -self.n_start - 1 : -1]  # odd extension after it
        ext_out, _ = sps.sosfilt(self.sos, ext, axis=-1, zi=self.state)
        zi = self.zi[:, None, :] * ext_out[None, :, -1:]  # steady state on the extension's end
        _, state = sps.sosfilt(self.sos, ext_out[:, ::-1], axis=-1, zi=zi)
        return state

    def steady_state(self, y_last: np.ndarray) -> np.ndarray:
        """Backward-pass state in steady state on ``y_last`` ``(n_channels,)`` (no extension)."""
        return self.zi[:, None, :] * np.asarray(y_last, dtype=np.float64)[None, :, None]

    def backward(self, y: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Backward pass over a block of forward output, the block after it done before.

        Parameters
        ----------
        y : numpy.ndarray
            ``(n_channels, n)`` forward-filtered samples, in time order.
        state : numpy.ndarray
            ``(n_sections, n_channels, 2)``: from :meth:`end_state`, :meth:`steady_state` or the
            previous (later) block's call.

        Returns
        -------
        tuple of numpy.ndarray
            The zero-phase samples ``(n_channels, n)`` in time order, and the state to continue
            with on the block before.
        """
        out, state = sps.sosfilt(
            self.sos, np.asarray(y, dtype=np.float64)[:, ::-1], axis=-1, zi=state
        )
        return out[:, ::-1], state
