"""Discovery of the shared folders (parity fixtures, the paper's code): fail, don't skip, when a
location is given or expected but wrong; skip only in a clone without ../shared."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.shared_fixtures import PARITY, REFERENCE_CODE, SharedFixture, SharedFixtureError


@pytest.fixture(params=[PARITY, REFERENCE_CODE], ids=lambda f: f.env_var)
def fixture(request) -> SharedFixture:
    return request.param


def _populate(path: Path, fixture: SharedFixture) -> Path:
    marker = path / fixture.marker
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_bytes(b"")
    return path


def test_explicit_missing_path_fails_with_a_clear_message(tmp_path, fixture):
    repo = tmp_path / "repo"  # no ../shared: without the variable this would skip
    repo.mkdir()
    wrong = tmp_path / "nowhere"
    with pytest.raises(SharedFixtureError, match=rf"{fixture.env_var}=.*nowhere.*not found"):
        fixture.locate({fixture.env_var: str(wrong)}, repo_root=repo)
    wrong.mkdir()  # exists, but without the expected content
    with pytest.raises(SharedFixtureError, match=fixture.env_var):
        fixture.locate({fixture.env_var: str(wrong)}, repo_root=repo)


def test_explicit_path_wins_over_the_default(tmp_path, fixture):
    repo = tmp_path / "repo"
    repo.mkdir()
    _populate(tmp_path / "shared" / Path(fixture.default).relative_to("../shared"), fixture)
    given = _populate(tmp_path / "elsewhere", fixture)
    assert fixture.locate({fixture.env_var: str(given)}, repo_root=repo) == given


def test_unset_variable_uses_the_default_in_shared(tmp_path, fixture):
    repo = tmp_path / "repo"
    repo.mkdir()
    default = _populate(
        tmp_path / "shared" / Path(fixture.default).relative_to("../shared"), fixture
    )
    assert fixture.locate({}, repo_root=repo) == default.resolve()
    assert fixture.locate({fixture.env_var: ""}, repo_root=repo) == default.resolve()


def test_shared_without_the_default_folder_fails(tmp_path, fixture):
    repo = tmp_path / "repo"
    repo.mkdir()
    (tmp_path / "shared").mkdir()
    with pytest.raises(SharedFixtureError, match=rf"shared exists.*{fixture.env_var}"):
        fixture.locate({}, repo_root=repo)


def test_a_clone_without_shared_skips(tmp_path, fixture):
    repo = tmp_path / "repo"
    repo.mkdir()
    assert fixture.locate({}, repo_root=repo) is None


def test_a_wrong_variable_fails_the_tests_that_need_the_folder(pytester, monkeypatch, tmp_path):
    tests = Path(__file__).resolve().parent
    pytester.makeconftest(
        f"""
import importlib.util
import sys

sys.path.insert(0, {str(tests)!r})
spec = importlib.util.spec_from_file_location("duin_conftest", {str(tests / "conftest.py")!r})
duin_conftest = importlib.util.module_from_spec(spec)
spec.loader.exec_module(duin_conftest)
parity_dir = duin_conftest.parity_dir
"""
    )
    pytester.makepyfile("def test_needs_fixtures(parity_dir):\n    assert parity_dir\n")
    monkeypatch.setenv("DUIN_PARITY_DIR", str(tmp_path / "missing"))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*DUIN_PARITY_DIR=*missing*not found*"])
