"""The restricted unpickler for the released Du-IN pickles: allows data, refuses code."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from duin.data.readers.released import UnsafePickleError, load_pickle, read_released
from duin.data.recording import RecordingError

# A stand-in for the paper's utils/DotDict.py, written to a temp package when pickling. Importing
# it leaves a marker file, so the tests can prove the unpickler never imports what it names.
DOTDICT_SOURCE = """
import pathlib, os
pathlib.Path(os.environ["DUIN_TEST_IMPORT_MARKER"]).touch()

if os.environ.get("DUIN_TEST_ALIAS"):
    class DotDict(dict):  # attribute access by aliasing __dict__ to the dict itself
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.__dict__ = self
else:
    class DotDict(dict):
        __getattr__ = dict.get
        __setattr__ = dict.__setitem__
"""


def _make_dotdict_pickle(tmp_path, alias: bool, protocol: int) -> bytes:
    """Pickle [DotDict(name, data_s)] in a subprocess that has a real ``utils.DotDict`` module."""
    package = tmp_path / "pkg" / "utils"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / "DotDict.py").write_text(DOTDICT_SOURCE)
    out = tmp_path / f"{alias}-{protocol}.pkl"
    script = textwrap.dedent(
        f"""
        import pickle, numpy as np
        from utils.DotDict import DotDict as C
        recs = [C(name="吃", data_s=np.arange(6, dtype=np.float64).reshape(2, 3))]
        info = C(ch_names=["A1", "A2"])
        with open({str(out)!r}, "wb") as f:
            pickle.dump([recs, info], f, protocol={protocol})
        """
    )
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "pkg"))
    env["DUIN_TEST_IMPORT_MARKER"] = str(tmp_path / "pickling-import-marker")
    if alias:
        env["DUIN_TEST_ALIAS"] = "1"
    subprocess.run([sys.executable, "-c", script], check=True, env=env)
    return out.read_bytes()


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
@pytest.mark.parametrize("alias", [False, True])
def test_dotdict_records_load_as_plain_dicts_without_importing(
    tmp_path, monkeypatch, alias, protocol
):
    payload = _make_dotdict_pickle(tmp_path, alias, protocol)
    assert b"DotDict" in payload
    marker = tmp_path / "load-import-marker"
    monkeypatch.setenv("DUIN_TEST_IMPORT_MARKER", str(marker))
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))  # importable, yet must not be imported
    path = tmp_path / "data"
    path.write_bytes(payload)
    sys.modules.pop("utils.DotDict", None)
    records, info = load_pickle(path)
    assert not marker.exists()
    assert "utils.DotDict" not in sys.modules
    assert type(records[0]) is dict and type(info) is dict
    assert records[0]["name"] == "吃"
    np.testing.assert_array_equal(records[0]["data_s"], np.arange(6.0).reshape(2, 3))
    assert info == {"ch_names": ["A1", "A2"]}


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_arrays_scalars_and_containers(tmp_path, protocol):
    obj = {
        "a": np.arange(12, dtype=np.float32).reshape(3, 4).T,  # non-contiguous
        "s": np.float64(2.5),
        "t": (1, 2.0, "x", b"y", None, True),
        "l": [{1, 2}, frozenset({3})],
    }
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    loaded = load_pickle(path)
    np.testing.assert_array_equal(loaded["a"], obj["a"])
    assert loaded["s"] == 2.5 and loaded["t"] == obj["t"] and loaded["l"] == obj["l"]


class _RunsShell:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_os_system_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "data"
    path.write_bytes(pickle.dumps([_RunsShell(f"touch {marker}")]))
    with pytest.raises(UnsafePickleError) as info:
        load_pickle(path)
    message = str(info.value)
    assert str(path) in message
    assert "os.system" in message or "posix.system" in message
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        b"cbuiltins\neval\n(S'1+1'\ntR.",
        b"cbuiltins\ngetattr\n(cbuiltins\ndict\nS'keys'\ntR.",
        b"csubprocess\nPopen\n(S'true'\ntR.",
        b"cnumpy.testing._private.utils\nrunstring\n(S'1'\n(dtR.",
        b"c__main__\nanything\n.",
        b"cutils.DotDict\nSomethingElse\n.",
    ],
)
def test_other_globals_are_refused(tmp_path, payload):
    path = tmp_path / "evil.pkl"
    path.write_bytes(payload)
    module, name = payload[1:].split(b"\n")[:2]
    with pytest.raises(UnsafePickleError, match=rf"{module.decode()}\.{name.decode()}"):
        load_pickle(path)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        load_pickle(tmp_path / "nope")
    bad = tmp_path / "bad"
    bad.write_bytes(b"not a pickle at all")
    with pytest.raises(RecordingError, match=str(bad)):
        load_pickle(bad)


def test_read_released_refuses_a_malicious_data_file(tmp_path):
    run = tmp_path / "data/seeg.he2023xuanwu/001/word-recitation/run1"
    run = run / "dataset.bipolar.default.unaligned"
    run.mkdir(parents=True)
    (run / "info").write_bytes(pickle.dumps({"ch_names": ["A1"]}))
    marker = tmp_path / "pwned"
    (run / "data").write_bytes(pickle.dumps([_RunsShell(f"touch {marker}")]))
    with pytest.raises(UnsafePickleError, match="data"):
        read_released(tmp_path, "001")
    assert not marker.exists()


def test_copyreg_reconstructor_only_builds_containers(tmp_path):
    # copy_reg._reconstructor(numpy.ndarray, builtins.dict, None): a non-container class.
    payload = b"ccopy_reg\n_reconstructor\n(cnumpy\nndarray\ncbuiltins\ndict\nNtR."
    path = tmp_path / "odd.pkl"
    path.write_bytes(payload)
    with pytest.raises(UnsafePickleError, match=r"odd\.pkl: copyreg\._reconstructor refused"):
        load_pickle(path)
