"""Hypothesis fuzzing of every reader and parser of untrusted input.

Each parser gets structured-but-wrong inputs (plausible files with random cells, mutated valid
files) and raw bytes. Any input must either parse or raise a duin error: a ``ValueError`` /
``OSError`` whose message names the file (or the config key), never a raw numpy/pandas/torch/
json/csv/yaml exception. Each test prints how many inputs it tried.

``DUIN_FUZZ_EXAMPLES`` sets the number of inputs per parser (default 300; e.g. 10000 for a
long run).
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from duin.config import ConfigError, load_config
from duin.data.readers.bids import read_channel_sidecars, read_events_tsv, read_tsv
from duin.data.readers.released import load_pickle
from duin.models.registry import create_model, load_model, save_model
from duin.utils.integrity import write_manifest

N_EXAMPLES = int(os.environ.get("DUIN_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=N_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def _check_error(err: BaseException, needle: str) -> None:
    """A duin error: ValueError/OSError naming ``needle`` (a file or key), one line."""
    assert isinstance(err, (ValueError, OSError)), f"foreign {type(err).__name__}: {err}"
    message = str(err)
    assert needle in message, f"{type(err).__name__} does not name {needle!r}: {message}"


class _Counter:
    def __init__(self, name: str) -> None:
        self.name, self.tried, self.errors = name, 0, 0

    def report(self) -> None:
        print(
            f"fuzz {self.name}: {self.tried} inputs tried, {self.errors} refused with a duin error"
        )
        assert self.tried >= min(N_EXAMPLES, 50)


def _run(counter: _Counter, parse, needle: str) -> None:
    counter.tried += 1
    try:
        parse()
    except (ValueError, OSError) as err:
        counter.errors += 1
        _check_error(err, needle)


# --------------------------------------------------------------------------- strategies
_CELL = st.one_of(
    st.sampled_from(["n/a", "", "nan", "1.5", "-3e2", "inf", "1e999", "0x10", "word", "A1"]),
    st.text(max_size=12),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
_COLUMNS = ["onset", "duration", "trial_type", "value", "name", "x", "y", "z", "region", "type"]


@st.composite
def tsv_bytes(draw) -> bytes:
    """A TSV that is mostly well-formed (some rows ragged), or random bytes."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=400))
    header = draw(st.lists(st.sampled_from(_COLUMNS) | st.text(max_size=6), max_size=6))
    rows = draw(
        st.lists(
            st.lists(_CELL, min_size=max(0, len(header) - 1), max_size=len(header) + 1),
            max_size=6,
        )
    )
    text = "\n".join("\t".join(cells) for cells in [header, *rows])
    data = text.encode("utf-8", errors="surrogatepass")
    if draw(st.booleans()):  # a BOM, a NUL or a stray invalid byte
        data = draw(st.sampled_from([b"\xef\xbb\xbf", b"\x00", b"\xff", b""])) + data
    return data


def _json_values():
    return st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=12,
    )


# --------------------------------------------------------------------------- BIDS sidecars
def test_fuzz_bids_tsv_and_events(capsys):
    counter = _Counter("bids tsv/events.tsv")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sub-01_task-x_events.tsv"

        @FUZZ
        @given(tsv_bytes(), st.sampled_from([None, "trial_type", "value", "nope"]))
        def check(data: bytes, label_column: str | None) -> None:
            path.write_bytes(data)
            _run(counter, lambda: read_tsv(path), path.name)
            _run(counter, lambda: read_events_tsv(path, label_column), path.name)

        check()
    with capsys.disabled():
        counter.report()


def test_fuzz_bids_channels_electrodes_coordsystem(capsys):
    counter = _Counter("bids channels.tsv/electrodes.tsv/coordsystem.json")
    names = ["A1", "A2", "B1"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        fpath = root / "sub-01_task-x_ieeg.vhdr"
        channels = root / "sub-01_task-x_channels.tsv"
        electrodes = root / "sub-01_electrodes.tsv"
        coordsystem = root / "sub-01_coordsystem.json"

        @st.composite
        def electrodes_tsv(draw) -> bytes:
            if draw(st.booleans()):
                return draw(tsv_bytes())
            rows = [["name", "x", "y", "z", "region"]]
            for name in draw(st.lists(st.sampled_from([*names, "Z9", ""]), max_size=5)):
                rows.append([name, *(draw(_CELL) for _ in range(3)), draw(_CELL)])
            return "\n".join("\t".join(r) for r in rows).encode("utf-8", "surrogatepass")

        coord_json = st.one_of(
            st.binary(max_size=100),
            _json_values().map(lambda v: json.dumps(v).encode()),
            st.sampled_from(["mm", "m", "cm", "km", None, 3]).map(
                lambda u: json.dumps({"iEEGCoordinateUnits": u}).encode()
            ),
        )

        @FUZZ
        @given(
            st.none() | tsv_bytes(),
            st.none() | electrodes_tsv(),
            st.none() | coord_json,
            st.sampled_from(["auto", "region", None]),
        )
        def check(chan, elec, coord, region_column) -> None:
            for path, data in ((channels, chan), (electrodes, elec), (coordsystem, coord)):
                path.unlink(missing_ok=True)
                if data is not None:
                    path.write_bytes(data)
            counter.tried += 1
            try:
                regions, xyz, _ = read_channel_sidecars(
                    fpath, names, "01", region_column=region_column
                )
            except (ValueError, OSError) as err:
                counter.errors += 1
                assert isinstance(err, (ValueError, OSError)), type(err)
                assert any(p.name in str(err) for p in (channels, electrodes, coordsystem)), err
                return
            assert regions is None or len(regions) == len(names)
            assert xyz is None or xyz.shape == (len(names), 3)

        check()
    with capsys.disabled():
        counter.report()


# --------------------------------------------------------------------------- released pickles
def _valid_record() -> bytes:
    record = {
        "data": np.zeros((3, 4), dtype=np.float32),
        "label": "w1",
        "info": {"ch_names": ["A1", "A2", "A3"], "sfreq": 1000.0},
    }
    return pickle.dumps([record], protocol=4)


def test_fuzz_released_pickles(capsys):
    counter = _Counter("released pickle (restricted unpickler)")
    valid = _valid_record()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data"

        @st.composite
        def pickle_bytes(draw) -> bytes:
            kind = draw(st.integers(0, 3))
            if kind == 0:
                return draw(st.binary(max_size=300))
            if kind == 1:  # a valid pickle with bytes flipped, cut or inserted
                data = bytearray(valid)
                for _ in range(draw(st.integers(1, 6))):
                    i = draw(st.integers(0, len(data) - 1))
                    data[i] = draw(st.integers(0, 255))
                return bytes(data[: draw(st.integers(1, len(data)))])
            if kind == 2:
                return pickle.dumps(draw(_json_values()), protocol=draw(st.integers(0, 5)))
            return b"\x80\x04" + draw(st.binary(max_size=200)) + b"."

        @FUZZ
        @given(pickle_bytes())
        def check(data: bytes) -> None:
            path.write_bytes(data)
            _run(counter, lambda: load_pickle(path), str(path))

        check()
    with capsys.disabled():
        counter.report()


# --------------------------------------------------------------------------- config and --set
_KEYS = [
    "seed",
    "optim",
    "optim.lr",
    "optim.epochs",
    "trainer",
    "trainer.on_nonfinite",
    "model",
    "model.n_blocks",
    "data",
    "cls",
    "vqvae.optim.lr",
    "x",
    "optim.lr.x",
    "",
]


def test_fuzz_config_yaml(capsys):
    counter = _Counter("config YAML")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"

        @st.composite
        def yaml_text(draw) -> bytes:
            kind = draw(st.integers(0, 2))
            if kind == 0:
                return draw(st.binary(max_size=200))
            if kind == 1:
                return draw(st.text(max_size=200)).encode("utf-8", "surrogatepass")
            lines = []
            for _ in range(draw(st.integers(0, 6))):
                key = draw(st.sampled_from(_KEYS))
                parts = key.split(".") if key else [""]
                value = draw(
                    _CELL | st.sampled_from(["[1, 2]", "{a: 1}", "null", "true", "&a 1", "*a"])
                )
                for depth, part in enumerate(parts[:-1]):
                    lines.append("  " * depth + f"{part}:")
                lines.append("  " * (len(parts) - 1) + f"{parts[-1]}: {value}")
            return "\n".join(lines).encode("utf-8", "surrogatepass")

        @FUZZ
        @given(yaml_text(), st.sampled_from([None, "cls", "vqvae"]))
        def check(data: bytes, section: str | None) -> None:
            path.write_bytes(data)
            _run(counter, lambda: load_config(path, section=section), path.name)

        check()
    with capsys.disabled():
        counter.report()


def test_fuzz_set_overrides(capsys):
    counter = _Counter("--set overrides")

    @st.composite
    def override(draw) -> str:
        if draw(st.integers(0, 3)) == 0:
            return draw(st.text(max_size=30))
        key = draw(st.sampled_from(_KEYS) | st.text(max_size=10))
        value = draw(
            _CELL
            | st.sampled_from(
                ["[1, 2]", "{a: 1}", "null", "true", "[", "{", "!!python/name:os.system"]
            )
        )
        return f"{key}={value}"

    @FUZZ
    @given(st.lists(override(), min_size=1, max_size=4))
    def check(items: list[str]) -> None:
        counter.tried += 1
        try:
            load_config(None, items)
        except (ValueError, OSError) as err:
            counter.errors += 1
            assert isinstance(err, ConfigError), f"{type(err).__name__}: {err}"
            assert str(err)

    check()
    with capsys.disabled():
        counter.report()


# --------------------------------------------------------------------------- safetensors
def test_fuzz_safetensors_headers(capsys):
    counter = _Counter("safetensors header (load_model)")
    model = create_model(
        "duin_cls", n_channels=2, n_subjects=1, n_classes=2, n_times=200, n_blocks=1
    )
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_model(model, Path(tmp) / "ckpt")
        weights = ckpt / "model.safetensors"
        valid = weights.read_bytes()
        (header_len,) = struct.unpack("<Q", valid[:8])
        header = json.loads(valid[8 : 8 + header_len])
        payload = valid[8 + header_len :]
        names = [k for k in header if k != "__metadata__"]

        # Strategies return (head, tail name), not whole files: hypothesis keeps every drawn
        # value, and the 2 MB payload per example would add up to gigabytes.
        tails = {"none": b"", "payload": payload, "after-length": valid[8:]}

        @st.composite
        def safetensors_bytes(draw) -> tuple[bytes, str]:
            kind = draw(st.integers(0, 3))
            if kind == 0:
                return draw(st.binary(max_size=200)), "none"
            if kind == 1:  # a header with one entry's fields replaced by junk
                edited = json.loads(json.dumps(header))
                name = draw(st.sampled_from(names))
                field = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
                edited[name][field] = draw(_json_values())
                body = json.dumps(edited).encode()
                return struct.pack("<Q", len(body)) + body, "payload"
            if kind == 2:  # a lying header length
                length = draw(st.integers(0, 2**64 - 1))
                return struct.pack("<Q", length), "after-length"
            data = bytearray(valid[: 8 + header_len])  # bytes of the header mutated
            for _ in range(draw(st.integers(1, 4))):
                i = draw(st.integers(8, len(data) - 1))
                data[i] = draw(st.integers(0, 255))
            return bytes(data), "payload"

        @FUZZ
        @given(safetensors_bytes())
        def check(drawn: tuple[bytes, str]) -> None:
            head, tail = drawn
            weights.write_bytes(head + tails[tail])
            write_manifest(ckpt)  # past the integrity check: the header parser itself is fuzzed
            _run(counter, lambda: load_model(ckpt), weights.name)

        check()
    with capsys.disabled():
        counter.report()
