"""Online decoding (`duin stream`): equal to offline `duin predict`, over a real LSL stream.

A tiny simulated corpus and a tiny classifier are trained once per module (through the CLI);
the recordings are then replayed through real LSL outlets on this machine (liblsl from
mne-lsl) at many times real time and decoded live.
"""

from __future__ import annotations

import _thread
import csv
import io
import json
import logging
import signal
import threading
import time

import numpy as np
import pytest
import typer
import yaml
from typer.testing import CliRunner

from duin.cli import register

pytest.importorskip("mne_lsl", reason="duin stream needs mne-lsl (pip install 'duin[stream]')")

from duin.data.preprocess import PreprocessConfig, preprocess
from duin.data.splits import recording_key
from duin.training.stages import DataConfig
from duin.workflows.prepare import load_recordings
from duin.workflows.stream import STREAM_COLUMNS, Classifier, StreamDecoder, replay
from duin.workflows.stream.lsl import Replayer
from duin.workflows.stream.session import _Status, replay_recordings

TINY = """
seed: 3
protocol: clean
optim: {batch_size: 8}
trainer: {device: cpu, log_every: 0, progress: false}
model: {n_blocks: 1, n_heads: 2, d_head: 16, d_ff: 32, tokenizer_filters: [16, 16, 8]}
data:
  n_channels: 4
  selection_epochs: 1
  simulation: {seed: 3, n_words: 6, trials_per_word: 10, blocks_per_run: 1, n_shafts: 2,
               contacts_per_shaft: [6, 7], pretrain_hours: 0.02, oracle_trials_per_word: 4,
               compute_baseline: false}
cls:
  variant: scratch
  optim: {epochs: 4, warmup_epochs: 1, lr: 3.0e-3, lr_min: 1.0e-4}
  trainer: {selection_metric: val/top1, selection_mode: max}
  model: {n_times: 1000, head_hidden: [16]}
"""
RUNS = ["sub-01_task-wordreading_run-1", "sub-01_task-wordreading_run-2"]


def make_app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        pass

    register(app)
    return app


def invoke(app: typer.Typer, *args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(app, data dir, classifier run dir, offline top-1 per (recording, event))."""
    root = tmp_path_factory.mktemp("stream")
    app = make_app()
    cfg = root / "tiny.yaml"
    cfg.write_text(TINY)
    data = root / "data"
    for args in (
        ["simulate", "--out", data, "--format", "npz", "--config", cfg],
        ["finetune", "--out", root / "cls", "--config", cfg, "--data", data,
         "--cache", root / "cache", "--quiet"],
        ["predict", root / "cls/sub-01/seed-3", "--data", data, "--top-k", 3,
         "--out", root / "offline.csv"],
    ):  # fmt: skip
        result = invoke(app, *args)
        assert result.exit_code == 0, (args, result.output, result.exception)
    offline = {
        (r["recording"], int(r["event"])): r
        for r in csv.DictReader(io.StringIO((root / "offline.csv").read_text()))
        if r["rank"] == "1"
    }
    return app, data, root / "cls/sub-01/seed-3", offline


def read_rows(path):
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert all(len(r) == len(STREAM_COLUMNS) and None not in r.values() for r in rows)
    return rows


def top1(rows):
    return {(r["recording"], int(r["event"])): r for r in rows if r["rank"] in ("1", "")}


def recordings(data):
    loaded = load_recordings(DataConfig(source=str(data), subjects=["01"]), quiet=True)
    return {recording_key(r): r for r in loaded.recordings["01"] if r.events}


# --------------------------------------------------------------------- the decoder, no LSL
class _Capture(Classifier):
    """A classifier stand-in that keeps the normalised windows it is given."""

    def probabilities(self, x):
        self.windows.append(x.copy())
        return np.full(len(self.labels), 1 / len(self.labels))


@pytest.mark.parametrize(
    "config",
    [
        PreprocessConfig(),
        PreprocessConfig(phase="causal", reference="average", bad_channels="zero"),
        PreprocessConfig(sfreq=None, reference="none", line_freq=None),
    ],
    ids=["zero-bipolar", "causal-average", "no-resampling"],
)
def test_chunked_online_windows_equal_offline_preprocessing(trained, config):
    """Random chunk sizes through the decoder give the offline preprocessed windows."""
    _, data, _, _ = trained
    rec = recordings(data)[RUNS[0]]
    rec = rec.replace(bad_channels=[rec.ch_names[3]])
    offline = preprocess(rec, config)
    channels = [offline.ch_names[i] for i in (0, 2, 5)]
    rows = [offline.ch_names.index(c) for c in channels]
    n_times = int(offline.sfreq)
    clf = _Capture(
        model=None, subject="01", channels=channels, labels=["a", "b"], tmin=0.0,
        n_times=n_times, sfreq=offline.sfreq, preprocess=config,
        mean=np.zeros(3), std=np.full(3, 1e-5),
    )  # fmt: skip
    clf.windows = []
    dec = StreamDecoder(clf, rec.ch_names, rec.sfreq, bad_channels=rec.bad_channels)
    x, t0 = np.asarray(rec.signals), 100.0
    for ev in rec.events:
        dec.mark(t0 + ev.onset, ev.label)
    rng, i = np.random.default_rng(0), 0
    while i < x.shape[1]:
        k = int(rng.integers(1, 700))
        dec.push(x[:, i : i + k].T, t0 + np.arange(i, min(i + k, x.shape[1])) / rec.sfreq)
        i += k
    dec.finish()
    assert len(clf.windows) == len(rec.events)
    for ev, got in zip(rec.events, clf.windows, strict=True):
        start = round(ev.onset * offline.sfreq)
        want = np.asarray(offline.signals[rows, start : start + n_times]) / 1e-5
        scale = np.abs(want).max()
        np.testing.assert_allclose(got, want, atol=2e-5 * scale)


def test_continuous_windows_equal_marker_windows(trained):
    """--continuous HOP: a window starting at a cue equals that cue's decision."""
    _, data, run, _ = trained
    rec = recordings(data)[RUNS[0]]
    clf = Classifier.load(run)
    x, ts = np.asarray(rec.signals).T, 50.0 + np.arange(rec.n_times) / rec.sfreq

    def decode(**kw):
        dec = StreamDecoder(clf, rec.ch_names, rec.sfreq, top_k=2, **kw)
        if "continuous_hop_s" not in kw:
            for ev in rec.events:
                dec.mark(50.0 + ev.onset, ev.label)
        out = []
        for i in range(0, rec.n_times, 997):
            out += dec.push(x[i : i + 997], ts[i : i + 997])
        return out + dec.finish()

    cues = {round(d.onset, 3): d for d in decode()}
    windows = decode(continuous_hop_s=1.0)
    n_full = int(rec.duration - clf.n_times / clf.sfreq) + 1
    assert [d.onset for d in windows if not d.skipped] == [float(k) for k in range(n_full)]
    matched = [w for w in windows if round(w.onset, 3) in cues]
    assert len(matched) == len(cues) == len(rec.events)
    for w in matched:
        c = cues[round(w.onset, 3)]
        assert w.words == c.words and w.true_label == "" and c.true_label
        np.testing.assert_allclose(w.probabilities, c.probabilities, rtol=1e-5)


def test_status_line_on_a_terminal(trained, monkeypatch):
    _, data, run, _ = trained
    rec = recordings(data)[RUNS[0]]
    dec = StreamDecoder(Classifier.load(run), rec.ch_names, rec.sfreq)
    dec.latencies_ms.append(3.25)
    dec.n_decisions = 1

    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stderr", Tty())
    status = _Status(True)
    status.update("run-1", dec)
    status.close()
    line = __import__("sys").stderr.getvalue()
    assert line.startswith("\rrun-1: buffer") and "1 decisions" in line and "3.2 ms" in line
    monkeypatch.setattr("sys.stderr", io.StringIO())  # not a terminal: no status line
    assert not _Status(True).enabled


# ------------------------------------------------------------------ over a real LSL stream
def test_replay_over_lsl_equals_offline_predict(trained, tmp_path):
    """`duin stream RUN --replay DATA --speed 40`: the top-1 word of every event as offline."""
    app, data, run, offline = trained
    out = tmp_path / "online.csv"
    result = invoke(app, "stream", run, "--replay", data, "--speed", 40, "--top-k", 3, "-o", out)
    assert result.exit_code == 0, (result.output, result.exception)
    assert "60 decision(s), 0 skipped" in result.output
    rows = read_rows(out)
    assert len(rows) == 3 * len(offline)
    online = top1(rows)
    assert set(online) == set(offline)
    same = [online[k]["word"] == offline[k]["word"] for k in offline]
    assert sum(same) >= 0.98 * len(same)
    assert all(same), "chunked preprocessing and the default look-ahead should equal offline"
    for k, r in online.items():
        assert r["onset"] == offline[k]["onset"] and r["true_label"] == offline[k]["true_label"]
        assert abs(float(r["probability"]) - float(offline[k]["probability"])) < 1e-4
        assert float(r["latency_ms"]) >= 0 and float(r["lookahead_ms"]) > 0


def test_words_outlet_and_permuted_channels(trained, tmp_path):
    """Channels in another order give the same decisions; each goes out on `duin-words`."""
    from mne_lsl.lsl import StreamInlet, resolve_streams

    _, data, run, offline = trained
    rec = recordings(data)[RUNS[0]]
    received, ready = [], threading.Event()

    def listen():
        import os

        found = resolve_streams(timeout=10, source_id=f"duin-words-replay-{os.getpid()}")
        inlet = StreamInlet(found[0])
        inlet.open_stream(timeout=5)
        ready.set()
        deadline = time.perf_counter() + 30
        while len(received) < len(rec.events) and time.perf_counter() < deadline:
            sample, stamp = inlet.pull_sample(timeout=0.1)
            if stamp is not None:
                received.append(json.loads(sample[0]))
        inlet.close_stream()

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    res = replay(
        run, data, tmp_path / "perm.csv", speed=40, top_k=2, recordings=[RUNS[0]],
        channels=rec.ch_names[::-1], quiet=True,
    )  # fmt: skip
    listener.join(timeout=30)
    assert res.n_decisions == len(rec.events) and res.n_skipped == 0
    online = top1(read_rows(tmp_path / "perm.csv"))
    for k, r in online.items():
        assert r["word"] == offline[k]["word"]
        assert abs(float(r["probability"]) - float(offline[k]["probability"])) < 1e-4
    assert ready.is_set() and received, "no decision arrived on the duin-words outlet"
    for msg in received:
        r = online[(RUNS[0], msg["event"])]
        assert msg["words"][0] == r["word"] and len(msg["words"]) == 2
        assert abs(msg["probabilities"][0] - float(r["probability"])) < 1e-5


def test_gap_skips_the_affected_trial(trained, tmp_path):
    """Missing samples: the trial that needs them is skipped and the CSV says why."""
    _, data, run, offline = trained
    rec = recordings(data)[RUNS[1]]
    target = rec.events[5]
    res = replay(
        run, data, tmp_path / "gap.csv", speed=40, top_k=1, recordings=[RUNS[1]],
        drop=(target.onset + 0.5, 0.02), quiet=True,
    )  # fmt: skip
    assert res.n_missing == 40 and res.n_skipped == 1
    rows = read_rows(tmp_path / "gap.csv")
    skipped = [r for r in rows if r["skipped"]]
    assert [int(r["event"]) for r in skipped] == [5]
    assert skipped[0]["skipped"].startswith("gap in the stream: 40 sample(s) missing at ")
    assert skipped[0]["word"] == "" and skipped[0]["onset"] == f"{target.onset:.3f}"
    decided = [r for r in rows if not r["skipped"]]
    assert len(decided) == len(rec.events) - 1
    gap_start = target.onset + 0.5
    # windows whose look-ahead ends before the gap never saw it: exactly offline
    clean = [
        r for r in decided if float(r["onset"]) + 1.0 + float(r["lookahead_ms"]) / 1e3 < gap_start
    ]
    assert clean
    for r in clean:
        assert r["word"] == offline[(RUNS[1], int(r["event"]))]["word"]


def test_dropout_reconnects_reports_the_gap_and_decodes_on(trained, tmp_path, caplog):
    """The signal outlet disappears for a while and comes back (same source id): no crash, a
    warning, the trials that needed the lost samples are skipped with the gap in the CSV, and
    decisions continue after liblsl has reconnected."""
    _, data, run, offline = trained
    clf = Classifier.load(run)
    rec = recordings(data)[RUNS[0]]
    speed, window = 4.0, clf.n_times / clf.sfreq
    hit = rec.events[2]
    start = hit.onset + clf.tmin + window / 2  # inside event 2's window
    length = 2.5 * speed  # 2.5 s of wall time without samples: longer than the idle warning
    with caplog.at_level(logging.WARNING, logger="duin"):
        res = replay_recordings(
            clf, [rec], tmp_path / "dropout.csv", speed=speed, top_k=1,
            outage=(start, length), quiet=True,
        )  # fmt: skip
    n_lost = round(length * rec.sfreq)
    gap_at = round(start * rec.sfreq) / rec.sfreq
    assert res.n_missing == n_lost
    messages = [r.getMessage() for r in caplog.records]
    assert any("no samples for" in m and "waiting" in m for m in messages), messages
    assert any("samples are arriving again" in m for m in messages), messages

    rows = read_rows(tmp_path / "dropout.csv")
    assert [int(r["event"]) for r in rows] == list(range(len(rec.events)))  # every event once
    end = start + length
    for ev, r in zip(rec.events, rows, strict=True):
        first, last = ev.onset + clf.tmin, ev.onset + clf.tmin + window
        if last > start and first < end:  # the window needs lost samples
            assert r["skipped"] == (
                f"gap in the stream: {n_lost} sample(s) missing at {gap_at:.3f} s"
            ), r
        elif last + float(r["lookahead_ms"] or 0) / 1e3 < start:  # all before the drop-out
            assert not r["skipped"]
            assert r["word"] == offline[(RUNS[0], int(r["event"]))]["word"]
    skipped = [r for r in rows if r["skipped"]]
    assert hit.onset in {float(r["onset"]) for r in skipped}
    after = [r for r in rows if float(r["onset"]) + clf.tmin > end + 1.0 and not r["skipped"]]
    assert after, "no decision after the stream came back"
    assert all(r["word"] in clf.labels for r in after)
    assert res.n_decisions + res.n_skipped == len(rec.events)


def test_stream_missing_a_channel_fails_with_one_line(trained, tmp_path):
    """A live stream without a training channel: `duin: error: ...` naming it, exit 1."""
    app, data, run, _ = trained
    rec = recordings(data)[RUNS[0]]
    needed = Classifier.load(run).channels[0].split("-")[1]
    player = Replayer(
        rec, f"duin-test-missing-{id(rec)}", channels=[c for c in rec.ch_names if c != needed]
    )
    player.start()
    try:
        player.ready.wait(10)
        result = invoke(
            app, "stream", run, "--lsl", player.stream_name, "--markers",
            f"{player.stream_name}-markers", "--duration", 1, "-o", tmp_path / "x.csv",
        )  # fmt: skip
    finally:
        player.stop.set()
        player.join(5)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("duin: error: stream ")
    assert f"lacks channel(s) {needed} " in lines[0]


def test_ctrl_c_leaves_a_complete_csv(trained, tmp_path):
    """Ctrl-C during a live stream: decided windows are written, pending ones marked, exit 130."""
    app, data, run, _ = trained
    rec = recordings(data)[RUNS[0]]
    player = Replayer(rec, f"duin-test-ctrlc-{id(rec)}", speed=20, autostart=True)
    player.start()
    player.ready.wait(10)
    out = tmp_path / "c.csv"

    def interrupt():  # Ctrl-C once the first decisions are written
        # Count bytes, not text: the CSV holds Chinese words and may be read in the middle of a
        # multi-byte character while it is appended; and send the Ctrl-C whatever happens.
        try:
            deadline = time.perf_counter() + 60
            while time.perf_counter() < deadline:
                if out.is_file() and out.read_bytes().count(b"\n") > 2:
                    break
                time.sleep(0.05)
        finally:
            _thread.interrupt_main()

    # interrupt_main() does nothing while SIGINT is ignored, as it is in a process started in
    # the background by a non-interactive shell (a CI job launched with `&` hung here): install
    # Python's KeyboardInterrupt handler for this test and put back whatever was there.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=interrupt, daemon=True).start()
    try:
        result = invoke(
            app, "stream", run, "--lsl", player.stream_name, "--markers",
            f"{player.stream_name}-markers", "--top-k", 2, "-o", out,
            "--duration", 180,  # a lost Ctrl-C fails the exit-code check instead of hanging
        )  # fmt: skip
    finally:
        signal.signal(signal.SIGINT, previous)
        player.stop.set()
        player.join(5)
    assert player.error is None
    assert result.exit_code == 130, (result.output, result.exception)
    rows = read_rows(out)
    decided = [r for r in rows if not r["skipped"]]
    assert decided and len(decided) % 2 == 0
    assert all("interrupted" in r["skipped"] for r in rows if r["skipped"])


def test_online_config_is_quick_with_causal_filtering():
    from duin.config import builtin_config_path

    quick = yaml.safe_load(builtin_config_path("quick").read_text())
    online = yaml.safe_load(builtin_config_path("online").read_text())
    assert online["data"].pop("preprocess") == {"phase": "causal"}
    assert online == quick
