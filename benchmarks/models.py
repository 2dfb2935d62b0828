"""duin's models side by side with the paper's code: same weights, same process, same threads.

Times, interleaved (the contestants take turns, the order alternating every round) and as
medians, so that a machine getting faster or slower during the run affects both sides alike:

- training steps (forward + backward + AdamW): VQ-VAE 32 x 4 s, MAE 64 x 4 s (targets from the
  frozen VQ-VAE included), classifier 32 x 3 s; duin in fp32 and in bf16 autocast, the paper's
  code in fp32 (as it ships);
- classifier inference at batch 1 (median and p99 over >= 200 calls) and batch 64: duin eager,
  the paper's code, duin through onnxruntime (when installed) and ``torch.compile`` (``--compile``).

Every figure is also given as a fraction of the machine's fp32 (bf16) GEMM peak measured in the
same run with the same thread count (FLOPs per step counted with
:class:`torch.utils.flop_counter.FlopCounterMode`). The paper's code is imported from
``$DUIN_REFERENCE_CODE`` or ``../shared/reference/du-in-code``; without it only duin is timed
and the comparison is reported as skipped. Prints a table and writes
``benchmarks/results/models.json``. Run on an otherwise idle machine.

Usage::

    python benchmarks/models.py                 # full side-by-side measurement
    python benchmarks/models.py --quick         # smoke run (a few iterations)
    python benchmarks/models.py --compile       # also torch.compile at batch 1
    python benchmarks/models.py --profile cls_train   # op breakdown of one step, then exit
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from duin.models.duin import DuINClassifier, DuINMAE, DuINModel, DuINVQVAE
from duin.training.optim import build_adamw
from duin.training.precision import autocast
from paper_code import PaperCode, find_reference_code

STAGES = ("vqvae_train", "mae_train", "cls_train")
OURS, PAPER = "duin", "paper"


# ---------------------------------------------------------------------------- measuring tools
def gemm_peak_gflops(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    """Best GFLOP/s of an ``n x n`` matmul in ``dtype`` with the current thread count."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best / 1e9


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of ``fn`` (matmuls, convolutions, attention; forward and backward).

    ``fn`` runs once before counting, so one-off work (e.g. building the folded front end on the
    first eval call) is not counted as per-call cost.
    """
    fn()
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def interleave(
    contestants: dict[str, Callable[[], Any]], rounds: int, calls: int, warmup: int
) -> dict[str, list[float]]:
    """Time ``contestants`` in turns; returns each one's per-call times in ms.

    Every round runs ``calls`` timed calls of each contestant in turn, the order rotating by one
    each round (two contestants alternate A-B, B-A). ``warmup`` untimed calls each come first.
    """
    names = list(contestants)
    for name in names:
        for _ in range(warmup):
            contestants[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            fn = contestants[name]
            for _ in range(calls):
                start = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - start) * 1e3)
    return times


def percentile(values: list[float], q: float) -> float:
    """The ``q``-quantile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---------------------------------------------------------------------------- contestants
@dataclass
class Contestant:
    """One timed function with its FLOPs per call and the peak it is measured against."""

    step: Callable[[], Any]
    flops: int
    peak_key: str = "fp32"
    notes: list[str] = field(default_factory=list)


def _onehot_subject(batch: int) -> torch.Tensor:
    return torch.ones(batch, 1)


def _train_step(optimizer: torch.optim.Optimizer, loss_fn: Callable[[], torch.Tensor]):
    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn().backward()
        optimizer.step()

    return step


def make_training(
    stage: str, paper: PaperCode | None, precisions: list[str]
) -> dict[str, Contestant]:
    """Contestants for one training stage: duin in each precision and the paper's code (fp32)."""
    torch.manual_seed(0)
    n_channels = 10
    out: dict[str, Contestant] = {}
    subject_ids: torch.Tensor
    if stage == "vqvae_train":
        batch, n_times = 32, 4000
        ours: DuINModel = DuINVQVAE()
        ours.quantizer.initted.fill_(True)  # a run past its k-means start
    elif stage == "mae_train":
        batch, n_times = 64, 4000
        tokenizer = DuINVQVAE()
        tokenizer.quantizer.initted.fill_(True)
        ours = DuINMAE(tokenizer=tokenizer)
    else:
        batch, n_times = 32, 3000
        ours = DuINClassifier()
    x = torch.randn(batch, n_channels, n_times)
    subject_ids = torch.zeros(batch, dtype=torch.int64)
    labels = torch.randint(0, 61, (batch,))
    ours.train()

    def our_loss() -> torch.Tensor:
        if stage == "cls_train":
            return ours(x, subject_ids, labels=labels)["loss"]
        return ours(x, subject_ids)["loss"]

    for precision in precisions:
        name = OURS if precision == "fp32" else f"{OURS}_{precision}"
        model = ours if precision == "fp32" else _clone(ours, stage)

        def loss_fn(model: DuINModel = model, precision: str = precision) -> torch.Tensor:
            with autocast(precision, "cpu"):
                if stage == "cls_train":
                    return model(x, subject_ids, labels=labels)["loss"]
                return model(x, subject_ids)["loss"]

        # The optimizer duin's trainer builds.
        step = _train_step(
            build_adamw(model.param_groups(0.05), lr=1e-4, weight_decay=0.05), loss_fn
        )
        flops = count_flops(lambda loss_fn=loss_fn: loss_fn().backward())
        model.zero_grad(set_to_none=True)
        out[name] = Contestant(step, flops, peak_key=precision)

    if paper is not None:
        kind = stage.split("_")[0]
        ref = paper.build(kind, ours).train()
        x_ref = x.transpose(1, 2).contiguous()  # the paper's layout (batch, n_times, n_channels)
        subj = _onehot_subject(batch)
        if stage == "vqvae_train":
            mask = torch.ones(batch, n_channels, dtype=torch.bool)

            def ref_loss() -> torch.Tensor:
                return ref((x_ref, subj, mask))[1]["total"]

        elif stage == "mae_train":
            assert isinstance(ours, DuINMAE) and ours.target_tokenizer is not None
            vqkd = paper.build("vqvae", ours.target_tokenizer).eval()

            def ref_loss() -> torch.Tensor:
                with torch.no_grad():  # as the paper's run_mae.py
                    c_true = vqkd.quantize((x_ref, subj))[-1]
                return ref((x_ref, c_true, subj))[1]["total"]

        else:
            y_true = F.one_hot(labels, 61).float()

            def ref_loss() -> torch.Tensor:
                return ref((x_ref, y_true, subj))[1]["total"]

        step = _train_step(paper.optimizer(ref), ref_loss)  # the paper scripts' own AdamW
        flops = count_flops(lambda: ref_loss().backward())
        ref.zero_grad(set_to_none=True)
        out[PAPER] = Contestant(step, flops)
    return out


def _clone(model: DuINModel, stage: str) -> DuINModel:
    clone = type(model)(model.config)
    clone.load_state_dict(model.state_dict())
    if stage == "mae_train":
        assert isinstance(model, DuINMAE) and isinstance(clone, DuINMAE)
        clone.set_target_tokenizer(model.target_tokenizer)  # type: ignore[arg-type]
    return clone.train()


def make_inference(
    batch: int, paper: PaperCode | None, onnx: bool, compile_model: bool
) -> dict[str, Contestant]:
    """Classifier inference contestants at ``batch``."""
    torch.manual_seed(0)
    ours = DuINClassifier().eval()
    x = torch.randn(batch, 10, 3000)
    subject_ids = torch.zeros(batch, dtype=torch.int64)
    out: dict[str, Contestant] = {}

    def our_call(model: DuINModel = ours) -> torch.Tensor:
        with torch.inference_mode():
            return model(x, subject_ids)["logits"]

    out[OURS] = Contestant(our_call, count_flops(our_call))
    if paper is not None:
        ref = paper.build("cls", ours).eval()
        x_ref, subj = x.transpose(1, 2).contiguous(), _onehot_subject(batch)
        y_true = torch.zeros(batch, 61)

        def ref_call() -> torch.Tensor:
            with torch.no_grad():  # the paper's own evaluation forward (run_cls.py)
                return ref((x_ref, y_true, subj))[0]

        out[PAPER] = Contestant(ref_call, count_flops(ref_call))
    if onnx:
        session = _onnx_session(ours)
        if session is not None:
            feeds = {"x": x.numpy(), "subject": subject_ids.numpy()}
            out[f"{OURS}_onnxruntime"] = Contestant(
                lambda: session.run(["logits"], feeds), out[OURS].flops
            )
    if compile_model:
        compiled = DuINClassifier(ours.config).eval()
        compiled.load_state_dict(ours.state_dict())
        compiled.enable_compile()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            our_call(compiled)  # compiles (or falls back to eager with a warning)
        notes = [str(w.message) for w in caught]
        out[f"{OURS}_compiled"] = Contestant(
            lambda: our_call(compiled), out[OURS].flops, notes=notes
        )
    return out


def _onnx_session(model: DuINClassifier) -> Any:
    try:
        import onnxruntime as ort

        from duin.workflows.export import export_onnx
    except ImportError:
        return None
    path = Path(tempfile.mkdtemp(prefix="duin_bench_")) / "cls.onnx"
    export_onnx(model, path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------------------- profiling
def profile(stage: str, paper: PaperCode | None, rows: int) -> None:
    """Print the op breakdown (self CPU time) of duin's and the paper's step for ``stage``."""
    if stage in STAGES:
        contestants = make_training(stage, paper, ["fp32"])
    else:
        contestants = make_inference(1 if stage == "cls_infer_b1" else 64, paper, False, False)
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for name, contestant in contestants.items():
        for _ in range(3):
            contestant.step()
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                contestant.step()
        print(f"\n=== {stage}: {name} (3 calls) ===")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


# ---------------------------------------------------------------------------- main run
def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run every measurement; returns the JSON payload."""
    torch.set_num_threads(args.threads)
    ref_path = None if args.no_paper else find_reference_code()
    paper: PaperCode | None = None
    skipped = None
    if args.no_paper:
        skipped = "--no-paper given"
    elif ref_path is None:
        skipped = "the paper's code was not found (set DUIN_REFERENCE_CODE)"
    else:
        try:
            paper = PaperCode(ref_path)
        except ImportError as err:
            skipped = f"the paper's code could not be imported: {err}"
    peaks = {"fp32": gemm_peak_gflops(torch.float32)}
    if "bf16" in args.precisions:
        peaks["bf16"] = gemm_peak_gflops(torch.bfloat16)

    rounds, warmup = (2, 1) if args.quick else (args.rounds, 2)
    rows: list[dict[str, Any]] = []
    for stage in STAGES:
        contestants = make_training(stage, paper, args.precisions)
        times = interleave({k: c.step for k, c in contestants.items()}, rounds, 1, warmup)
        batch = {"vqvae_train": 32, "mae_train": 64, "cls_train": 32}[stage]
        rows.append(_row(stage, batch, contestants, times, peaks))
        del contestants

    calls = 20 if args.quick else args.calls
    b1 = make_inference(1, paper, not args.no_onnx, args.compile)
    times = interleave({k: c.step for k, c in b1.items()}, 10, max(1, calls // 10), 10)
    rows.append(_row("cls_infer_b1", 1, b1, times, peaks))
    del b1
    b64 = make_inference(64, paper, False, False)
    times = interleave({k: c.step for k, c in b64.items()}, 2 if args.quick else 6, 1, 1)
    rows.append(_row("cls_infer_b64", 64, b64, times, peaks))
    # A second peak measurement: the machine's speed may drift during the run.
    peaks["fp32"] = max(peaks["fp32"], gemm_peak_gflops(torch.float32))
    for row in rows:
        _fractions(row, peaks)
    return {
        "rows": rows,
        "peak_gflops": peaks,
        "comparison": "side by side" if paper is not None else f"skipped: {skipped}",
        "reference_code": str(ref_path) if paper is not None else None,
        "quick": args.quick,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "method": (
            "one process; contestants take turns, order alternating every round; medians; "
            "speedup = paper median / duin median (> 1: duin faster); fraction of peak = "
            "FLOPs per call / time / GEMM peak of the same dtype"
        ),
    }


def _row(
    name: str,
    batch: int,
    contestants: dict[str, Contestant],
    times: dict[str, list[float]],
    peaks: dict[str, float],
) -> dict[str, Any]:
    row: dict[str, Any] = {"measure": name, "batch": batch, "contestants": {}}
    for key, contestant in contestants.items():
        values = times[key]
        entry: dict[str, Any] = {
            "median_ms": statistics.median(values),
            "n_calls": len(values),
            "samples_per_s": batch / statistics.median(values) * 1e3,
            "flops_per_call": contestant.flops,
            "peak_key": contestant.peak_key,
        }
        if name.startswith("cls_infer"):
            entry["p99_ms"] = percentile(values, 0.99)
        if contestant.notes:
            entry["notes"] = contestant.notes
        row["contestants"][key] = entry
    paper = row["contestants"].get(PAPER)
    if paper is not None:
        row["speedup_vs_paper"] = {
            key: paper["median_ms"] / entry["median_ms"]
            for key, entry in row["contestants"].items()
            if key != PAPER
        }
    return row


def _fractions(row: dict[str, Any], peaks: dict[str, float]) -> None:
    for entry in row["contestants"].values():
        gflops = entry["flops_per_call"] / (entry["median_ms"] * 1e-3) / 1e9
        entry["achieved_gflops"] = gflops
        entry["fraction_of_peak"] = gflops / peaks[entry["peak_key"]]


def print_table(payload: dict[str, Any]) -> None:
    """Human-readable summary of ``payload``."""
    peaks = ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in payload["peak_gflops"].items())
    print(f"threads {payload['threads']}, GEMM peak: {peaks}; comparison: {payload['comparison']}")
    header = f"{'measure':14s} {'who':18s} {'median':>10s} {'p99':>9s} {'GFLOP':>7s} "
    print(header + f"{'of peak':>8s} {'vs paper':>9s}")
    for row in payload["rows"]:
        speedups = row.get("speedup_vs_paper", {})
        for key, entry in row["contestants"].items():
            p99 = f"{entry['p99_ms']:8.2f}" if "p99_ms" in entry else f"{'-':>8s}"
            ratio = f"{speedups[key]:8.2f}x" if key in speedups else f"{'-':>9s}"
            print(
                f"{row['measure']:14s} {key:18s} {entry['median_ms']:8.2f}ms {p99}ms "
                f"{entry['flops_per_call'] / 1e9:7.2f} {entry['fraction_of_peak']:7.0%} {ratio}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few iterations (smoke test)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--rounds", type=int, default=12, help="timed steps per training model")
    parser.add_argument("--calls", type=int, default=300, help="timed batch-1 calls per model")
    parser.add_argument(
        "--precisions",
        type=lambda s: [p.strip() for p in s.split(",") if p.strip()],
        default=["fp32", "bf16"],
        help="duin training precisions, comma-separated (default fp32,bf16)",
    )
    parser.add_argument("--compile", action="store_true", help="also torch.compile at batch 1")
    parser.add_argument("--no-onnx", action="store_true", help="skip onnxruntime")
    parser.add_argument("--no-paper", action="store_true", help="time duin only")
    parser.add_argument(
        "--profile",
        choices=[*STAGES, "cls_infer_b1", "cls_infer_b64"],
        help="print the op breakdown of one measure and exit",
    )
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "results" / "models.json"
    )
    args = parser.parse_args(argv)
    if "fp32" not in args.precisions:
        parser.error("--precisions must include fp32")
    if args.profile:
        torch.set_num_threads(args.threads)
        path = None if args.no_paper else find_reference_code()
        profile(args.profile, PaperCode(path) if path else None, 25)
        return 0
    payload = run(args)
    print_table(payload)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    tmp.replace(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
