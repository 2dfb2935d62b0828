"""Does multi-subject (poms) pretraining scale linearly in the number of subjects?

One training epoch of the pooled VQ-VAE (forward, backward, AdamW step over every pretraining
window of every subject, batches mixing subjects, channels padded to the widest subject) is timed
for 1, 2, 4, ... simulated subjects with the same non-task hours each, so the epoch holds N times
the windows of one subject. Linear scaling means a constant time per window; the report gives
``epoch_s / (N * epoch_s[1 subject])`` (1.0 = linear; the issue's target is within 10 %).

Run: ``python benchmarks/pooled_scaling.py [--subjects 1 2 4 8] [--quick] [--device cuda]``;
writes ``benchmarks/results/pooled_scaling.json``. ``--quick`` is a seconds-long smoke run (tiny
model, few windows); its timings mean nothing. Measure on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from duin.data.simulate import SimulationConfig
from duin.models.config import VQVAEConfig
from duin.models.duin import DuINVQVAE
from duin.training.stages import DataConfig
from duin.workflows.pooled import pooled_pretrain_sets
from duin.workflows.prepare import prepare_data

RESULTS = Path(__file__).resolve().parent / "results" / "pooled_scaling.json"
QUICK_MODEL = {"n_blocks": 1, "n_heads": 2, "d_head": 16, "d_ff": 32, "n_decoder_blocks": 1}
QUICK_MODEL |= {"tokenizer_filters": [16, 16, 8], "decoder_filters": [16, 16, 16, 16, 8]}
QUICK_MODEL |= {"quantizer": {"n_codes": 16, "d_code": 8}}


def epoch_seconds(
    n_subjects: int, data: DataConfig, cache: Path, model: dict, batch_size: int, device: str
) -> dict[str, float]:
    """Wall time of one pooled VQ-VAE epoch over the first ``n_subjects`` subjects."""
    prepared = prepare_data(data, cache, quiet=True)
    subjects = prepared.subjects[:n_subjects]
    loaded = dataclasses.replace(
        prepared.loaded, recordings={s: prepared.loaded.recordings[s] for s in subjects}
    )
    view = dataclasses.replace(prepared, loaded=loaded)
    channels = {s: view.ch_names(s) for s in subjects}
    cfg = VQVAEConfig.from_dict({**model, "n_times": 4000})
    train, _, _ = pooled_pretrain_sets(
        view, data, channels, n_times=cfg.n_times, seed=0, protocol="clean"
    )
    cfg = dataclasses.replace(
        cfg,
        n_channels=train.n_channels,
        n_subjects=n_subjects,
        subject_channels=train.subject_channels,
    )
    torch.manual_seed(0)
    net = DuINVQVAE(cfg).to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    loader = DataLoader(train, batch_size=batch_size, shuffle=True, drop_last=False)

    def one_epoch() -> float:
        start = time.perf_counter()
        for batch in loader:
            out = net(batch["x"].to(device), batch["subject"].to(device))
            optimizer.zero_grad(set_to_none=True)
            out["loss"].backward()
            optimizer.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    one_epoch()  # warm-up: k-means codex init, allocator, kernels
    seconds = one_epoch()
    return {"n_subjects": n_subjects, "n_windows": len(train), "epoch_s": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--hours", type=float, default=0.25, help="non-task hours per subject")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    args = parser.parse_args()
    counts = sorted(set(args.subjects)) if not args.quick else [1, 2]
    hours = 0.01 if args.quick else args.hours
    simulation = SimulationConfig(
        seed=0, n_subjects=max(counts), n_words=4, trials_per_word=4, blocks_per_run=1,
        pretrain_hours=hours, compute_baseline=False, oracle_trials_per_word=2,
    )  # fmt: skip
    data = DataConfig(n_channels=None, pretrain_data="rest", simulation=simulation)
    model = QUICK_MODEL if args.quick else {}
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for n in counts:
            rows.append(epoch_seconds(n, data, Path(cache), model, args.batch_size, args.device))
            base = rows[0]["epoch_s"] / rows[0]["n_subjects"]
            rows[-1]["vs_linear"] = rows[-1]["epoch_s"] / (n * base)
            print(
                f"{n} subject(s): {rows[-1]['n_windows']} windows, "
                f"{rows[-1]['epoch_s']:.2f} s/epoch, {rows[-1]['vs_linear']:.3f} x linear"
            )
    if args.quick:
        return  # smoke run: timings mean nothing, nothing is written
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "rows": rows,
                "hours_per_subject": hours,
                "batch_size": args.batch_size,
                "device": args.device,
                "torch_threads": torch.get_num_threads(),
                "machine": platform.platform(),
            },
            indent=2,
        )
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
