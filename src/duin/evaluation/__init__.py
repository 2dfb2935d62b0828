"""Evaluation: metrics, reports, tables and plots."""
