"""Throughput and latency of the Du-IN models on CPU, compared with the paper code's timings.

Measures, with ``torch.set_num_threads(2)`` and the paper's configuration (10 channels, 1 subject):

- training steps (forward + backward + AdamW) at the paper's batch sizes: VQ-VAE 32 x 4000
  samples, MAE 64 x 4000 (both views, frozen VQ-VAE targets), classifier 32 x 3000;
- classifier inference latency at batch 1 (median and p99 over >= 200 calls) and batch 64.

Prints a table with the ratio to the reference timings (``shared/reference/timing.md``, measured
on the same machine class) and writes ``benchmarks/results/models.json``. Run on an idle
machine: two torch processes on 2 cores slow each other down several times.

Usage::

    python benchmarks/models.py            # full measurement
    python benchmarks/models.py --quick    # a few iterations (smoke test)
    python benchmarks/models.py --compile  # also try torch.compile (falls back to eager)
"""

from __future__ import annotations

import argparse
import ctypes
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from duin.models.duin import DuINClassifier, DuINMAE, DuINVQVAE

# The paper code on this machine class (shared/reference/timing.md), 2 threads.
REFERENCE = {
    "vqvae_train_samples_per_s": 46.7,
    "mae_train_samples_per_s": 38.7,
    "cls_train_samples_per_s": 104.2,
    "cls_infer_b1_median_ms": 10.0,
    "cls_infer_b64_ms": 153.6,
}
HIGHER_IS_BETTER = {k: k.endswith("per_s") for k in REFERENCE}


def tune_glibc_malloc() -> bool:
    """Keep freed large blocks in the process (glibc ``mallopt``) instead of returning them to the
    OS, so that big activation buffers are not page-faulted in again at every step.

    Returns
    -------
    bool
        True when the settings were applied (glibc only).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_mmap_threshold, 1 << 30) == 1
        return ok and libc.mallopt(m_trim_threshold, (1 << 31) - 1) == 1
    except OSError:
        return False


def _maybe_compile(model: torch.nn.Module, enabled: bool) -> Callable[..., Any]:
    # The models compile their tensor computation only (input checks stay eager) and fall
    # back to eager execution, with a warning, if compilation fails.
    return model.enable_compile() if enabled else model


def _train_throughput(
    model: torch.nn.Module,
    make_batch: Callable[[], tuple[tuple, dict]],
    batch: int,
    steps: int,
    warmup: int,
    compile_model: bool,
) -> float:
    model.train()
    optimizer = torch.optim.AdamW(model.param_groups(0.05), lr=1e-4)
    runner = _maybe_compile(model, compile_model)
    args, kwargs = make_batch()
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = runner(*args, **kwargs)["loss"]
        loss.backward()
        optimizer.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def _latencies(fn: Callable[[], Any], calls: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1e3)
    return out


def run(quick: bool, compile_model: bool) -> dict[str, Any]:
    """Run every measurement; returns the results dict."""
    torch.set_num_threads(2)
    torch.manual_seed(0)
    steps, warmup = (2, 1) if quick else (10, 2)
    n_calls = 20 if quick else 200
    results: dict[str, Any] = {}

    vqvae = DuINVQVAE()
    x4 = torch.randn(64, 10, 4000)
    s = torch.zeros(64, dtype=torch.int64)
    results["vqvae_train_samples_per_s"] = _train_throughput(
        vqvae, lambda: ((x4[:32], s[:32]), {}), 32, steps, warmup, compile_model
    )

    mae = DuINMAE()
    tokenizer = DuINVQVAE()
    tokenizer.quantizer.initted.fill_(True)
    mae.set_target_tokenizer(tokenizer)
    results["mae_train_samples_per_s"] = _train_throughput(
        mae, lambda: ((x4, s), {}), 64, steps, warmup, compile_model
    )

    cls = DuINClassifier()
    x3 = torch.randn(64, 10, 3000)
    labels = torch.randint(0, 61, (64,))
    results["cls_train_samples_per_s"] = _train_throughput(
        cls, lambda: ((x3[:32], s[:32]), {"labels": labels[:32]}), 32, steps, warmup, compile_model
    )

    cls.eval()
    runner = _maybe_compile(cls, compile_model)
    with torch.inference_mode():
        b1 = _latencies(lambda: runner(x3[:1], s[:1]), n_calls, 10)
        b64 = _latencies(lambda: runner(x3, s), max(3, n_calls // 20), 2)
    b1_sorted = sorted(b1)
    results["cls_infer_b1_median_ms"] = statistics.median(b1)
    results["cls_infer_b1_p99_ms"] = b1_sorted[min(len(b1) - 1, int(0.99 * len(b1)))]
    results["cls_infer_b64_ms"] = statistics.median(b64)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few iterations (smoke test)")
    parser.add_argument("--compile", action="store_true", help="use torch.compile (eager fallback)")
    parser.add_argument(
        "--tune-malloc",
        action="store_true",
        help="keep large freed blocks in the process (glibc mallopt); off = like the paper timing",
    )
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "results" / "models.json"
    )
    args = parser.parse_args(argv)
    malloc_tuned = tune_glibc_malloc() if args.tune_malloc else False
    results = run(args.quick, args.compile)
    ratios = {}
    print(f"{'measure':32s} {'duin':>10s} {'paper code':>11s} {'ratio':>7s}")
    for key, value in results.items():
        ref = REFERENCE.get(key)
        if ref is None:
            print(f"{key:32s} {value:10.2f} {'-':>11s} {'-':>7s}")
            continue
        ratio = value / ref if HIGHER_IS_BETTER[key] else ref / value
        ratios[key] = ratio
        print(f"{key:32s} {value:10.2f} {ref:11.2f} {ratio:6.2f}x")
    payload = {
        "results": results,
        "reference": REFERENCE,
        "speedup_vs_reference": ratios,
        "quick": args.quick,
        "compile": args.compile,
        "malloc_tuned": malloc_tuned,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "note": "ratios > 1 mean duin is faster; run on an idle machine for final numbers",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    tmp.replace(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
