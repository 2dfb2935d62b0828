"""Online decoding over the Lab Streaming Layer (``duin stream``), live or replayed."""
