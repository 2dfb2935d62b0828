"""read_bids on a real BIDS iEEG recording: the small ECoG/LFP file shipped in py-neuromodulation.

Only the package's ``data/`` folder is read (the package itself is never imported): sub-testsub,
ses-EphysMedOff, task-gripforce, run-0, BrainVision, 10 channels at 1 kHz, no events.tsv.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import re
from pathlib import Path

import mne
import numpy as np
import pytest

from duin.data.readers.bids import read_bids, read_bids_run

ENTITIES = "sub-testsub_ses-EphysMedOff_task-gripforce_run-0"


@pytest.fixture(scope="module")
def bids_root() -> Path:
    spec = importlib.util.find_spec("py_neuromodulation")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("py-neuromodulation is not installed (make setup-dev installs it, no deps)")
    root = Path(next(iter(spec.submodule_search_locations))) / "data"
    if not (root / "sub-testsub").is_dir():
        pytest.skip(f"{root}: the py-neuromodulation test recording is missing")
    return root


def ieeg_dir(root: Path) -> Path:
    return root / "sub-testsub" / "ses-EphysMedOff" / "ieeg"


def tsv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def test_channels_rate_and_bads_match_sidecars(bids_root):
    recs = read_bids(bids_root, "testsub", "gripforce")
    assert len(recs) == 1
    rec = recs[0]
    assert (rec.subject, rec.session, rec.task, rec.run) == (
        "testsub",
        "EphysMedOff",
        "gripforce",
        "0",
    )
    channels = tsv(ieeg_dir(bids_root) / f"{ENTITIES}_channels.tsv")
    sidecar = json.loads((ieeg_dir(bids_root) / f"{ENTITIES}_ieeg.json").read_text())
    assert rec.sfreq == sidecar["SamplingFrequency"] == float(channels[0]["sampling_frequency"])
    # By default the intracranial channels (DBS, ECOG) are kept, the MISC one is not.
    expected = [row["name"] for row in channels if row["type"] in ("DBS", "ECOG", "SEEG")]
    assert rec.ch_names == expected and len(expected) == 9
    assert rec.bad_channels == [row["name"] for row in channels if row["status"] == "bad"]
    assert abs(rec.duration - sidecar["RecordingDuration"]) < 2 / rec.sfreq
    everything = read_bids_run(bids_root, "testsub", "gripforce", picks="all")
    assert everything.ch_names == [row["name"] for row in channels]


def test_signals_are_the_brainvision_samples_in_volts(bids_root):
    rec = read_bids_run(bids_root, "testsub", "gripforce", session="EphysMedOff", run=0)
    vhdr = ieeg_dir(bids_root) / f"{ENTITIES}_ieeg.vhdr"
    header = vhdr.read_text(encoding="utf-8")
    n_channels = int(re.search(r"NumberOfChannels=(\d+)", header).group(1))
    assert "IEEE_FLOAT_32" in header and "MULTIPLEXED" in header
    # Ch<i>=<name>,<ref>,<resolution>,<unit>
    resolution = [
        float(m.group(1)) for m in re.finditer(r"^Ch\d+=[^,]*,[^,]*,([^,]*),µV", header, re.M)
    ]
    raw = np.fromfile(vhdr.with_suffix(".eeg"), dtype="<f4").reshape(-1, n_channels).T
    volts = raw * np.array(resolution)[:, None] * 1e-6
    np.testing.assert_allclose(rec.signals, volts[:9], rtol=1e-6)
    assert rec.n_times == raw.shape[1]


def test_events_come_from_the_vmrk_markers_when_there_is_no_events_tsv(bids_root):
    assert not list(ieeg_dir(bids_root).glob("*_events.tsv"))
    rec = read_bids_run(bids_root, "testsub", "gripforce")
    vmrk = (ieeg_dir(bids_root) / f"{ENTITIES}_ieeg.vmrk").read_text(encoding="utf-8")
    markers = [line for line in vmrk.splitlines() if re.match(r"Mk\d+=", line)]
    non_segment = [m for m in markers if "New Segment" not in m]
    assert len(rec.events) == len(non_segment)
    assert rec.provenance["events"].endswith("vmrk") or "markers" in rec.provenance["events"]
    with pytest.raises(FileNotFoundError, match=r"events\.tsv"):
        read_bids(bids_root, "testsub", "gripforce", require_events=True)
    # MNE sees the same (no) annotations.
    raw = mne.io.read_raw_brainvision(
        ieeg_dir(bids_root) / f"{ENTITIES}_ieeg.vhdr", verbose="error"
    )
    assert len([a for a in raw.annotations if "New Segment" not in a["description"]]) == 0


def test_coordinates_from_electrodes_tsv(bids_root):
    rec = read_bids_run(bids_root, "testsub", "gripforce", picks="all")
    rows = {row["name"]: row for row in tsv(next(ieeg_dir(bids_root).glob("*_electrodes.tsv")))}
    system = json.loads(next(ieeg_dir(bids_root).glob("*_coordsystem.json")).read_text())
    assert system["iEEGCoordinateUnits"] == "m" and rec.provenance["coordinate_units"] == "m"
    for name, xyz in zip(rec.ch_names, rec.ch_coords, strict=True):
        row = rows[name]
        if row["x"] == "n/a":
            assert np.isnan(xyz).all()
        else:
            np.testing.assert_allclose(xyz, [float(row[c]) for c in "xyz"], rtol=1e-12)
    # The file has no region column: no regions are invented, unless a column is named.
    assert rec.ch_regions is None
    assert read_bids_run(bids_root, "testsub", region_column="size").ch_regions is None
