"""The top-level ``duin`` namespace: every public name resolves lazily and is listed."""

from __future__ import annotations

import pytest

import duin


def test_all_public_names_resolve() -> None:
    public = set(duin.__all__) - {"__version__"}
    assert public == set(duin._LAZY)
    for name in sorted(public):
        assert callable(getattr(duin, name)), name


def test_unknown_attribute_raises() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        duin.nope  # noqa: B018
