"""`stepsmith demo`: run a few STeP programs at the paper binding and check them against
plain PyTorch."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import typer


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def demo(
    all_cases: bool = typer.Option(False, "--all", help="run every example operator"),
    repeats: int = typer.Option(5, help="timed repetitions per program"),
) -> None:
    """Run STeP example programs (bmm, online-softmax attention, MoE) at the paper binding
    (M=5, N=7, K=9, D=16), verify them against PyTorch and show timings."""
    import torch
    from rich.console import Console
    from rich.table import Table

    from stepsmith.step.examples import CASES, DEMO_CASES, PAPER_BINDING, prepare

    torch.set_num_threads(1)  # tiny tensors: thread hand-offs would dominate the timings
    console = Console()
    names = list(CASES) if all_cases else list(DEMO_CASES)
    table = Table(title="STeP demo at the paper binding M=5, N=7, K=9, D=16")
    for col in ("program", "result", "max |err|", "fast ms", "oracle ms", "torch ms"):  # medians
        table.add_column(col, justify="right" if "ms" in col or "err" in col else "left",
                         no_wrap=True, min_width=len(col))
    failed = 0
    for name in names:
        case = CASES[name]
        fast = prepare(case, PAPER_BINDING, "fast")
        oracle = prepare(case, PAPER_BINDING, "oracle")
        out = fast.run()
        ref = fast.torch_run()
        out_o = oracle.run()
        err = float((out - ref).abs().max()) if out.numel() else 0.0
        ok = torch.allclose(out, ref, atol=1e-4, rtol=1e-4) and torch.allclose(
            out_o, ref, atol=1e-4, rtol=1e-4)
        failed += not ok
        table.add_row(
            name, "[green]match[/]" if ok else "[red]MISMATCH[/]",
            f"{err:.1e}", f"{_median_ms(fast.run, repeats):.2f}",
            f"{_median_ms(oracle.run, max(1, repeats // 2)):.2f}",
            f"{_median_ms(fast.torch_run, repeats):.3f}",
        )
    console.print(table)
    for name in names:
        console.print(f"  [bold]{name}[/]: {CASES[name].description}")
    if failed:
        console.print(f"[red]{failed} program(s) disagree with PyTorch[/]")
        raise typer.Exit(code=1)
    console.print("all programs match their PyTorch references (fast and oracle executors)")


def register(app: typer.Typer) -> None:
    """Add the `demo` command to the stepsmith CLI."""
    app.command("demo")(demo)
    if app.registered_callback is None:
        # With a single registered command Typer would collapse the app into that command;
        # a no-op group callback keeps `stepsmith demo` a sub-command.
        app.callback()(_group)


def _group() -> None:
    """stepsmith — LLM agents writing STeP operators, verified and self-improving."""
