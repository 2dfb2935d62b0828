"""Training: the generic trainer, the three stages, channel selection."""
