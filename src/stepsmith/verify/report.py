"""Human rendering of a `Verdict` (rich), used by the CLI."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from stepsmith.verify.verdict import Verdict


def render_verdict(verdict: Verdict, console: Console) -> None:
    """Summary line, one row per binding, then the feedback an LLM would get."""
    status = "[bold green]PASSED[/bold green]" if verdict.passed else (
        f"[bold red]FAILED[/bold red] ({verdict.kind})"
    )
    console.print(
        f"{verdict.task or 'task'}: {status} in {verdict.seconds * 1000:.1f} ms "
        f"(verifier {verdict.verifier_version})"
    )
    if verdict.bindings:
        table = Table(show_header=True, header_style="bold")
        for col in ("binding", "sizes", "seed", "result", "ms", "max rel err"):
            table.add_column(col)
        for b in verdict.bindings:
            sizes = ", ".join(f"{k}={v}" for k, v in b.values.items())
            result = "[green]ok[/green]" if b.passed else f"[red]{b.kind}[/red]"
            rel = "" if b.max_rel_error is None else f"{b.max_rel_error:.2e}"
            table.add_row(
                b.label, sizes, str(b.seed), result, f"{b.seconds * 1000:.1f}", rel
            )
        console.print(table)
    for w in verdict.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}", markup=True, highlight=False)
    if not verdict.passed and verdict.feedback:
        console.print("[bold]feedback:[/bold]")
        console.print(verdict.feedback, markup=False, highlight=False)
