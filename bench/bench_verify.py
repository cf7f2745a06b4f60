"""Verifier throughput: warm sandboxed pool vs. the paper's fresh process per candidate.

Run: python bench/bench_verify.py [--rounds 5] [--fresh-sample 5] [--workers 2]

1. Every benchmark reference verified at all its bindings through a warm `VerifierPool`:
   total time, median per candidate (parent-side round trip), candidates/s.
2. The paper's way for a sample of candidates: a fresh `python -c` per candidate that imports
   torch + stepsmith, loads the task and runs the same check. Ratio of medians.
3. The whole suite's compute at M=N=K=32, D=64 (fast executor, in process, data prepared
   beforehand; only the program run is timed).
Targets: <= 20 ms median per candidate, >= 100 candidates/s, >= 100x faster than a fresh
process, whole suite at 32/32/32/64 <= 1 s of compute.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from typing import Any

FRESH_SCRIPT = """
import sys
import torch
torch.set_num_threads(1)
from stepsmith.tasks.suite import get_task
from stepsmith.verify.runner import check_candidate
task = get_task(sys.argv[1])
v = check_candidate(task, task.impl)
sys.exit(0 if v.passed else 1)
"""


def binding_at(task: Any, sizes: dict[str, int], label: str, seed: int) -> Any:
    """A binding of `task` with M/N/K/D overridden and derived symbols recomputed."""
    from stepsmith.tasks.bindings import Binding

    base = dict(task.bindings()[0].values)
    base.update(sizes)
    try:
        _env, values = task._env_for(dict(sizes), {})  # derived sizes (e.g. H = D // 2)
        base.update(values)
    except Exception:  # noqa: BLE001 - fall back to plain overrides
        pass
    return Binding(label=label, values=base, seed=seed)


def run_suite_compute(tasks: list[Any], sizes: dict[str, int]) -> tuple[float, list[str]]:
    """Seconds of program execution for every task at `sizes`; (total, problems)."""
    import torch

    from stepsmith import step
    from stepsmith.verify.execute import (
        SAFE_BUILTINS,
        compile_candidate,
        normalise_source,
    )

    torch.set_num_threads(1)
    total = 0.0
    problems = []
    for task in tasks:
        b = binding_at(task, sizes, "big", 1)
        try:
            inst = task.instantiate(b, dtype=torch.float32)
            compiled = compile_candidate(normalise_source(task.impl), task.input_names)
            ns = dict(inst.namespace)
            ns["__builtins__"] = SAFE_BUILTINS
            exec(compiled, ns)
            best = float("inf")
            for _ in range(3):
                with step.Session(binding=dict(b.values), executor="fast", affine="strict"):
                    inputs = dict(inst.fresh_inputs())
                    t = time.perf_counter()
                    ns["impl"](**inputs)
                    best = min(best, time.perf_counter() - t)
            total += best
        except Exception as e:  # noqa: BLE001 - report and go on
            problems.append(f"{task.name}: {type(e).__name__}: {e}"[:200])
    return total, problems


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="passes over the suite (warm)")
    ap.add_argument("--fresh-sample", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    from stepsmith.tasks.suite import benchmark_tasks
    from stepsmith.verify import VerifierPool

    tasks = [t for t in benchmark_tasks() if t.impl]
    n_bindings = statistics.median(len(t.bindings()) for t in tasks)
    print(f"benchmark tasks with a reference impl: {len(tasks)} "
          f"(median {n_bindings:g} bindings per task)")

    t0 = time.perf_counter()
    with VerifierPool(workers=args.workers) as pool:
        pool.warm_up()
        t_start = time.perf_counter() - t0
        items = [(t, t.impl) for t in tasks]
        t1 = time.perf_counter()
        first = pool.verify_many(items)  # loads tasks + data into the workers' caches
        t_first = time.perf_counter() - t1
        failed = [v.task + f" ({v.kind})" for v in first if not v.passed]
        lat: list[float] = []
        t2 = time.perf_counter()
        for _ in range(args.rounds):
            vs = pool.verify_many(items)
            lat.extend(v.seconds for v in vs)
        wall = time.perf_counter() - t2
    n = len(items) * args.rounds
    med_warm = statistics.median(lat)
    print(f"pool start-up ({args.workers} workers): {t_start:.2f} s; first pass "
          f"(cold caches): {t_first:.2f} s")
    print(f"warm: {n} candidates in {wall:.2f} s -> {n / wall:.1f} candidates/s; "
          f"median {med_warm * 1000:.1f} ms per candidate, p90 "
          f"{sorted(lat)[int(0.9 * (len(lat) - 1))] * 1000:.1f} ms")
    if failed:
        print(f"references that did NOT pass: {len(failed)}: {', '.join(failed)}")

    # load-independent view: CPU seconds of the same check in this process (1 torch thread)
    import torch

    from stepsmith.verify.runner import check_candidate

    torch.set_num_threads(1)
    for t in tasks:  # instances are cached by task content: warm them once
        check_candidate(t, t.impl)
    cpu: list[float] = []
    for _ in range(args.rounds):
        for t in tasks:
            c0 = time.process_time()
            check_candidate(t, t.impl)
            cpu.append(time.process_time() - c0)
    med_cpu = statistics.median(cpu)
    print(f"CPU time per candidate (same check in process, load-independent): median "
          f"{med_cpu * 1000:.1f} ms -> {2 / med_cpu:.0f} candidates/s of CPU on 2 cores")

    sample = tasks[: args.fresh_sample]
    fresh: list[float] = []
    for t in sample:
        ts = time.perf_counter()
        r = subprocess.run([sys.executable, "-c", FRESH_SCRIPT, t.name], capture_output=True)
        fresh.append(time.perf_counter() - ts)
        if r.returncode != 0:
            print(f"  fresh-process check of {t.name} exited {r.returncode}: "
                  f"{r.stderr.decode()[-300:]}")
    med_fresh = statistics.median(fresh)
    print(f"fresh process per candidate (paper's way), {len(sample)} samples: median "
          f"{med_fresh * 1000:.0f} ms -> warm pool is {med_fresh / med_warm:.0f}x faster "
          f"per candidate")

    sizes = {"M": 32, "N": 32, "K": 32, "D": 64}
    total, problems = run_suite_compute(tasks, sizes)
    print(f"whole suite compute at M=N=K=32, D=64 (fast executor, best of 3): "
          f"{total:.3f} s over {len(tasks) - len(problems)} tasks")
    for p in problems:
        print(f"  skipped {p}")
    ok = [
        ("median <= 20 ms", med_warm <= 0.020),
        (">= 100 candidates/s", n / wall >= 100),
        (">= 100x vs fresh process", med_fresh / med_warm >= 100),
        ("suite at 32/32/32/64 <= 1 s", total <= 1.0),
    ]
    print("targets: " + "; ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in ok))


if __name__ == "__main__":
    main()
