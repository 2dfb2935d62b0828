"""Data side: recordings, readers, writers, preprocessing, simulator, datasets, splits."""
