"""Readers: one module per source format; every reader returns :class:`duin.data.recording.Recording`."""
