"""Helper scripts run by the tests in subprocesses (not collected as tests)."""
