"""Online decoding over the Lab Streaming Layer (``duin stream``), live or replayed.

- :mod:`~duin.workflows.stream.buffer`: ring buffer addressed by sample index, gap detection
- :mod:`~duin.workflows.stream.online`: preprocessing with carried state and the decoder that
  equals offline ``duin predict``
- :mod:`~duin.workflows.stream.lsl`: LSL inlets/outlets (mne-lsl) and the recording replayer
- :mod:`~duin.workflows.stream.session`: the decoding loop, CSV and ``duin-words`` output
"""

from duin.workflows.stream.online import STREAM_COLUMNS, Classifier, StreamDecoder
from duin.workflows.stream.session import StreamResult, replay, replay_recordings, stream

__all__ = [
    "STREAM_COLUMNS",
    "Classifier",
    "StreamDecoder",
    "StreamResult",
    "replay",
    "replay_recordings",
    "stream",
]
