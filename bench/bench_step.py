"""STeP simulator speed: fast (batched) executor vs the per-element oracle vs plain PyTorch.

Run: python bench/bench_step.py [--repeats 7] [--oracle-large] [--threads 1]

Programs (shared with `stepsmith demo` and the tests, `stepsmith.step.examples`): batched
matmul in three dataflow orders, online-softmax attention (M batches x K queries over N keys,
V stashed over the queries), LayerNorm from small fns, NeoX RoPE
with a position Scan, a 3-expert MoE (Partition -> Map -> Merge). Sizes: the paper binding
(M=5, N=7, K=9, D=16), M=N=K=32 D=64, M=N=K=64 D=128 (oracle skipped there by default: it
takes minutes). Every run's output is checked against PyTorch.

Targets: at 32/32/32/64 fast >= 50x faster than oracle and every program <= 50 ms; at the
paper binding <= 5 ms median.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from stepsmith.step.examples import CASES, PAPER_BINDING, prepare

SIZES = [
    ("paper 5/7/9/16", PAPER_BINDING),
    ("32/32/32/64", {"M": 32, "N": 32, "K": 32, "D": 64}),
    ("64/64/64/128", {"M": 64, "N": 64, "K": 64, "D": 128}),
]


def median_ms(fn: Callable[[], object], repeats: int, budget_s: float = 60.0) -> float:
    """Median wall time (ms) over `repeats` calls after one warm-up (fewer if over budget)."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    n = max(1, min(repeats, int(budget_s / max(first, 1e-9))))
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--oracle-large", action="store_true",
                    help="also run the oracle at 64/64/64/128 (minutes)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    header = (f"{'size':<14} {'program':<26} {'fast ms':>9} {'oracle ms':>10} {'torch ms':>9} "
              f"{'oracle/fast':>11} {'fast/torch':>10}  ok")
    print(header)
    print("-" * len(header))
    summary: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {}
    problems: list[str] = []
    for label, binding in SIZES:
        large = binding["M"] >= 64
        for name, case in CASES.items():
            fast = prepare(case, binding, "fast")
            ref = fast.torch_run()
            ok = torch.allclose(fast.run(), ref, atol=1e-3, rtol=1e-3)
            f_ms = median_ms(fast.run, args.repeats)
            t_ms = median_ms(fast.torch_run, args.repeats)
            if large and not args.oracle_large:
                o_txt, r_txt = "skipped", "-"
            else:
                oracle = prepare(case, binding, "oracle")
                ok = ok and torch.allclose(oracle.run(), ref, atol=1e-3, rtol=1e-3)
                o_ms = median_ms(oracle.run, max(1, args.repeats // 3), budget_s=30.0)
                o_txt, r_txt = f"{o_ms:.1f}", f"{o_ms / f_ms:.0f}x"
                ratios.setdefault(label, []).append(o_ms / f_ms)
            summary.setdefault(label, []).append(f_ms)
            if not ok:
                problems.append(f"{label} {name}: output differs from PyTorch")
            if label.startswith("32") and f_ms > 50:
                problems.append(f"{label} {name}: fast {f_ms:.1f} ms > 50 ms target")
            print(f"{label:<14} {name:<26} {f_ms:>9.2f} {o_txt:>10} {t_ms:>9.3f} {r_txt:>11} "
                  f"{f_ms / t_ms:>9.0f}x  {'yes' if ok else 'NO'}", flush=True)
    print()
    for label, times in summary.items():
        line = f"{label:<14} fast median {statistics.median(times):.2f} ms, max {max(times):.2f} ms"
        if label in ratios:
            line += (f"; oracle/fast median {statistics.median(ratios[label]):.0f}x, "
                     f"min {min(ratios[label]):.0f}x")
        else:
            line += "; oracle skipped at this size (per-element execution takes minutes)"
        print(line)
    paper = summary[SIZES[0][0]]
    if statistics.median(paper) > 5:
        problems.append(f"paper binding median {statistics.median(paper):.2f} ms > 5 ms target")
    mid = ratios.get(SIZES[1][0], [])
    if mid and min(mid) < 50:
        problems.append(f"32/32/32/64 oracle/fast min {min(mid):.0f}x < 50x target")
    print("\ntargets: " + ("all met" if not problems else "; ".join(problems)))


if __name__ == "__main__":
    main()
