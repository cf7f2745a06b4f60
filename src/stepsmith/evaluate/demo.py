"""`stepsmith demo`: the reference programs of a few benchmark tasks, verified against their
PyTorch references by the verifier (both executors), with timings at the paper binding.

Task files are code: their references and fns run only in the verifier's sandboxed worker, as
in `stepsmith verify` and `tasks check` (`VerifierPool.verify`, the one executor underneath).
"""

from __future__ import annotations

import statistics
import textwrap
from dataclasses import dataclass, field

import typer

from stepsmith.step.session import PAPER_BINDING, Executor
from stepsmith.tasks import Task
from stepsmith.verify import Verdict, VerifierPool

#: The default operators: batched matmul as outer products, online-softmax attention, MoE.
DEMO_TASKS = ("bmm_outer_product", "attn_online_softmax", "expert_linear_sum")
EXECUTORS: tuple[Executor, ...] = ("fast", "oracle")


@dataclass
class DemoRow:
    """One task's reference program, verified `repeats` times per executor."""

    task: Task
    verdicts: dict[Executor, list[Verdict]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(v and all(x.passed for x in v) for v in self.verdicts.values())

    def failure(self) -> str:
        """The first failed verdict's kind and feedback ('' when all passed)."""
        for executor, vs in self.verdicts.items():
            for v in vs:
                if not v.passed:
                    return f"{executor}: {v.kind}: {v.feedback}"
        return ""

    def paper_ms(self, executor: Executor) -> float | None:
        """Median wall time of the program at the paper binding (run + check, in the worker)."""
        times = [v.bindings[0].seconds for v in self.verdicts.get(executor, []) if v.bindings]
        return statistics.median(times) * 1000 if times else None

    def max_abs_error(self) -> float | None:
        """Largest |output - reference| at the paper binding over both executors."""
        errs = [v.bindings[0].max_abs_error for vs in self.verdicts.values() for v in vs
                if v.bindings and v.bindings[0].max_abs_error is not None]
        return max(errs) if errs else None


def run_demo(tasks: list[Task], pool: VerifierPool, repeats: int = 5) -> list[DemoRow]:
    """Verify each task's own impl with each executor (the oracle `repeats // 2` times), in a
    worker of `pool`; stops repeating an executor after a failure. A broken task raises
    `TaskReferenceError`, as `VerifierPool.verify` does."""
    rows = []
    for task in tasks:
        row = DemoRow(task)
        for executor in EXECUTORS:
            row.verdicts[executor] = []
            for _ in range(max(1, repeats if executor == "fast" else repeats // 2)):
                v = pool.verify(task, task.impl or "", executor=executor)
                row.verdicts[executor].append(v)
                if not v.passed:
                    break
        rows.append(row)
    return rows


def demo(
    all_tasks: bool = typer.Option(False, "--all",
                                   help="every benchmark task with a reference impl"),
    repeats: int = typer.Option(5, help="timed repetitions per program (oracle: half)"),
) -> None:
    """Verify the reference programs of benchmark tasks (bmm, online-softmax attention, MoE;
    --all: every one) with the fast and oracle executors, in the verifier's sandboxed worker,
    and show their timings at the paper binding (M=5, N=7, K=9, D=16)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from stepsmith.tasks import TaskFormatError
    from stepsmith.tasks.suite import benchmark_tasks, get_task

    console = Console()
    if not console.is_terminal:  # piped output: don't squeeze the table to 80 columns
        console = Console(width=max(console.width, 120))
    tasks = ([t for t in benchmark_tasks() if (t.impl or "").strip()] if all_tasks
             else [get_task(name) for name in DEMO_TASKS])
    try:
        with VerifierPool(workers=1) as pool:
            rows = run_demo(tasks, pool, repeats)
    except TaskFormatError as e:  # a task's own code failed in the worker: not a program fault
        console.print(f"[red]task error:[/red] {escape(str(e))}")
        raise typer.Exit(2) from None
    paper = ", ".join(f"{k}={v}" for k, v in PAPER_BINDING.items())
    table = Table(title="Benchmark reference programs, verified at every binding; times: "
                        f"medians at the paper binding {paper} (run + check)")
    for col in ("task", "result", "bindings", "max |err|", "fast ms", "oracle ms", "oracle/fast"):
        table.add_column(col, justify="left" if col in ("task", "result") else "right",
                         no_wrap=True, min_width=len(col))
    for r in rows:
        fast, oracle, err = r.paper_ms("fast"), r.paper_ms("oracle"), r.max_abs_error()
        if not r.passed:  # a failing program's time means nothing
            fast = oracle = None
        table.add_row(
            r.task.name, "[green]match[/]" if r.passed else "[red]FAILED[/]",
            str(len(r.verdicts["fast"][0].bindings)),
            "-" if err is None else f"{err:.1e}",
            "-" if fast is None else f"{fast:.2f}", "-" if oracle is None else f"{oracle:.2f}",
            f"{oracle / fast:.0f}x" if fast and oracle else "-")
    console.print(table)
    for r in rows:
        about = textwrap.shorten(r.task.description, 90, placeholder=" …")
        console.print(f"  [bold]{r.task.name}[/]: {escape(about)}", highlight=False)
    failed = [r for r in rows if not r.passed]
    for r in failed:
        console.print(f"[red]{r.task.name}[/] {escape(r.failure())}", highlight=False)
    if failed:
        console.print(f"[red]{len(failed)} reference program(s) failed verification[/]")
        raise typer.Exit(code=1)
    console.print(f"all {len(rows)} reference programs match their PyTorch references at every "
                  "binding (fast and oracle executors, verifier worker)")


def register(app: typer.Typer) -> None:
    """Add the `demo` command to the stepsmith CLI."""
    app.command("demo")(demo)
