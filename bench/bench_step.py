"""STeP simulator speed: the fast (batched) executor vs the per-element oracle.

Run: python bench/bench_step.py [--repeats 7] [--oracle-large] [--threads 1]

Programs: the reference `impl`s of seven benchmark tasks (`stepsmith.tasks.suite`, the ones
`stepsmith demo` shows first): batched matmul in three dataflow orders (bmm_outer_product,
bmm_mnk_mkd, bmm_mnk_mdk), online-softmax attention (attn_online_softmax), LayerNorm from small
fns (norm_layernorm), NeoX RoPE with a position Scan (rope_neox_rows) and a 3-expert MoE,
Partition -> Map -> Merge (expert_linear_sum). Each runs through the verifier's one executor
(`stepsmith.verify.execute.run_compiled`: compiled once, the task's data and references prepared
and cached before timing) in float32 at the paper binding (M=5, N=7, K=9, D=16), at M=N=K=32
D=64 and at M=N=K=64 D=128 (oracle skipped there by default: it takes minutes). Every run's
outputs are checked as the verifier checks them (`check_outputs`, the instance's tolerance).
Packaged task files only, run in this process like bench_verify.py's suite compute (a task file
is code: `stepsmith verify` and `stepsmith demo` run it in the sandboxed worker).

Targets: at 32/32/32/64 fast >= 50x faster than oracle and every program <= 50 ms; at the
paper binding <= 5 ms median.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from types import CodeType

import torch

from stepsmith.step.session import PAPER_BINDING, Executor
from stepsmith.tasks import Binding, Task
from stepsmith.tasks.suite import get_task
from stepsmith.verify.checking import check_outputs
from stepsmith.verify.execute import ProgramRun, compile_candidate, normalise_source, run_compiled

TASKS = ("bmm_outer_product", "bmm_mnk_mkd", "bmm_mnk_mdk", "attn_online_softmax",
         "norm_layernorm", "rope_neox_rows", "expert_linear_sum")
SIZES = [
    ("paper 5/7/9/16", dict(PAPER_BINDING)),
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


def binding_at(task: Task, label: str, sizes: dict[str, int]) -> Binding:
    """The task's paper binding (its own symbols, e.g. E, and seed) with M, N, K, D replaced."""
    paper = task.bindings()[0]
    return Binding(label, {**paper.values, **sizes}, paper.seed)


def runner(task: Task, compiled: CodeType, binding: Binding,
           executor: Executor) -> Callable[[], ProgramRun]:
    return lambda: run_compiled(task, compiled, binding, executor=executor, dtype=torch.float32)


def problem_of(run: ProgramRun) -> str | None:
    """Why a run does not pass the verifier's check, or None."""
    if run.error is not None or run.instance is None:
        return f"{type(run.error).__name__}: {run.error}"
    tol = run.instance.tolerance
    bad, _, _ = check_outputs(run.result, run.instance.expected, tol.rtol, tol.atol,
                              str(run.binding))
    return None if bad is None else bad.message.splitlines()[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--oracle-large", action="store_true",
                    help="also run the oracle at 64/64/64/128 (minutes)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    tasks = [get_task(name) for name in TASKS]
    header = (f"{'size':<14} {'task':<20} {'fast ms':>9} {'oracle ms':>10} "
              f"{'oracle/fast':>11}  ok")
    print(header)
    print("-" * len(header))
    summary: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {}
    problems: list[str] = []
    for label, sizes in SIZES:
        large = sizes["M"] >= 64
        for task in tasks:
            compiled = compile_candidate(normalise_source(task.impl or ""), task.input_names)
            assert isinstance(compiled, CodeType), f"{task.name}: {compiled}"
            binding = binding_at(task, label, sizes)
            fast = runner(task, compiled, binding, "fast")
            bad = problem_of(fast())  # also prepares (and caches) the data and references
            f_ms = median_ms(fast, args.repeats)
            if large and not args.oracle_large:
                o_txt, r_txt = "skipped", "-"
            else:
                oracle = runner(task, compiled, binding, "oracle")
                bad = bad or problem_of(oracle())
                o_ms = median_ms(oracle, max(1, args.repeats // 3), budget_s=30.0)
                o_txt, r_txt = f"{o_ms:.1f}", f"{o_ms / f_ms:.0f}x"
                ratios.setdefault(label, []).append(o_ms / f_ms)
            summary.setdefault(label, []).append(f_ms)
            if bad:
                problems.append(f"{label} {task.name}: {bad}")
            if label.startswith("32") and f_ms > 50:
                problems.append(f"{label} {task.name}: fast {f_ms:.1f} ms > 50 ms target")
            print(f"{label:<14} {task.name:<20} {f_ms:>9.2f} {o_txt:>10} {r_txt:>11}  "
                  f"{'NO' if bad else 'yes'}", flush=True)
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
