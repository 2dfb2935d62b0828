"""Baselines from the Du-IN paper, built from the shared layers."""
