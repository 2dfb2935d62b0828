"""Where the tests find data that lives outside the repository, in ``../shared`` beside it.

Two inputs are shared with the project rather than shipped in it: the parity fixtures (tensors
made by the paper's code) and the paper's code itself. The rule, for each:

- the environment variable is set: it must name a usable folder, otherwise the test fails (CI
  sets ``DUIN_PARITY_DIR``; a wrong path must not turn the parity tests into silent skips);
- the variable is unset: the default path inside ``../shared`` is used; if ``../shared``
  exists but the default path is missing or incomplete, that is a broken checkout and fails too;
- the variable is unset and there is no ``../shared`` (a user's own clone): the test is skipped.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


class SharedFixtureError(RuntimeError):
    """A shared fixture folder was asked for (or expected) but is missing or incomplete."""


@dataclass(frozen=True)
class SharedFixture:
    """A folder of shared test inputs.

    Parameters
    ----------
    env_var : str
        Environment variable that overrides the location.
    default : str
        Location relative to the repository root when the variable is unset.
    marker : str
        Path, relative to the folder, that must exist for it to be usable.
    what : str
        Human-readable name for messages.
    """

    env_var: str
    default: str
    marker: str
    what: str

    def locate(
        self, environ: Mapping[str, str] | None = None, repo_root: Path = REPO_ROOT
    ) -> Path | None:
        """The folder, or None when the tests should skip (variable unset, no ``../shared``).

        Parameters
        ----------
        environ : mapping, optional
            Environment to read (default ``os.environ``).
        repo_root : pathlib.Path
            Repository root that ``default`` is relative to.

        Returns
        -------
        pathlib.Path or None
            The usable folder, or None when neither the variable nor ``../shared`` exist.

        Raises
        ------
        SharedFixtureError
            The variable names a missing or incomplete folder, or ``../shared`` exists without
            a usable default folder.
        """
        environ = os.environ if environ is None else environ
        value = environ.get(self.env_var, "")
        if value:
            path = Path(value)
            if not (path / self.marker).exists():
                raise SharedFixtureError(
                    f"{self.env_var}={value!r}: {self.what} not found there (expected "
                    f"{path / self.marker}); fix the path or unset {self.env_var}"
                )
            return path
        path = (repo_root / self.default).resolve()
        if (path / self.marker).exists():
            return path
        shared = (repo_root / os.pardir / "shared").resolve()
        if shared.is_dir():
            raise SharedFixtureError(
                f"{shared} exists but {self.what} is not at {path} (expected {self.marker} "
                f"there); set {self.env_var} to its location"
            )
        return None


PARITY = SharedFixture(
    env_var="DUIN_PARITY_DIR",
    default="../shared/parity",
    marker="vqvae_state.npz",
    what="the parity fixtures",
)
REFERENCE_CODE = SharedFixture(
    env_var="DUIN_REFERENCE_CODE",
    default="../shared/reference/du-in-code",
    marker="train/duin/run_cls.py",
    what="the paper's code",
)
