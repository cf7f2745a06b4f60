"""`stepsmith verify TASK [--impl FILE] [--json] [--affine strict|warn]`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from stepsmith.verify.verdict import Verdict


# A fenced block, `impl: |` or `def impl(`: a model's answer rather than a bare program body.
_ANSWER_FORM = re.compile(r"^\s*(```|impl:\s*[|>]|def impl\()", re.M)


def verify_command(
    task: Annotated[str, typer.Argument(help="Task YAML file or benchmark task name.")],
    impl: Annotated[Path | None, typer.Option(
        "--impl", help="File with the program (impl body). Default: the task's impl.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON.")] = False,
    affine: Annotated[str, typer.Option(
        "--affine", help="strict (reject stream reuse) or warn.")] = "strict",
    timeout: Annotated[float, typer.Option("--timeout", help=(
        "CPU-time limit per candidate, seconds (CPU, not wall time, so a busy machine does not "
        "cause timeouts)."))] = 10.0,
) -> None:
    """Verify a STeP program against a task at all its bindings (sandboxed); exit 0 iff passed."""
    from rich.console import Console
    from rich.markup import escape

    from stepsmith.step.session import is_affine_mode
    from stepsmith.tasks import TaskFormatError, TaskNotFoundError
    from stepsmith.tasks.suite import get_task
    from stepsmith.verify import VerifierPool

    console = Console(stderr=False)
    if affine not in ("strict", "warn") or not is_affine_mode(affine):
        raise typer.BadParameter(f"--affine must be 'strict' or 'warn', got {affine!r}")
    try:  # loading runs none of the file's code: that happens in the sandboxed worker
        t = get_task(task)
    except TaskNotFoundError as e:
        raise typer.BadParameter(
            f"{task!r} is neither a task YAML file nor a benchmark/demo task name ({e})") from e
    except TaskFormatError as e:  # the message names file, line and field
        console.print(f"[red]cannot load task {escape(repr(task))}:[/red] {escape(str(e))}")
        raise typer.Exit(2) from None
    if impl is not None:
        try:
            src = impl.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            why = e.strerror if isinstance(e, OSError) else f"not UTF-8 text ({e.reason})"
            console.print(f"[red]cannot read --impl {impl}:[/red] {why}")
            raise typer.Exit(2) from None
        if _ANSWER_FORM.search(src):  # the format the model answers in: ```yaml impl: |- ...```
            from stepsmith.agents.extract import Unparsable, extract_impl

            try:
                src = extract_impl(src)
            except Unparsable as e:
                console.print(f"[red]--impl {impl}: no program found:[/red] {e.reason}")
                raise typer.Exit(2) from None
    else:
        src = t.impl or ""
        if not src.strip():
            console.print(f"[red]task {t.name!r} has no impl; pass --impl FILE[/red]")
            raise typer.Exit(2)
    try:
        with VerifierPool(workers=1, timeout_s=timeout) as pool:
            verdict = pool.verify(t, src, affine=affine)
    except TaskFormatError as e:  # the task's own code failed, hung or exited in the worker
        console.print(f"[red]task error (not the program's):[/red] {escape(str(e))}")
        raise typer.Exit(2) from None
    if as_json:
        print(verdict.model_dump_json(indent=2))
    else:
        render_verdict(verdict, console)
    raise typer.Exit(0 if verdict.passed else 1)


def render_verdict(verdict: Verdict, console: Console) -> None:
    """Summary line, one row per binding, then the feedback an LLM would get."""
    from rich.table import Table

    status = ("[bold green]PASSED[/bold green]" if verdict.passed
              else f"[bold red]FAILED[/bold red] ({verdict.kind})")
    console.print(f"{verdict.task or 'task'}: {status} in {verdict.seconds * 1000:.1f} ms "
                  f"(verifier {verdict.verifier_version})")
    if verdict.bindings:
        table = Table(show_header=True, header_style="bold")
        for col in ("binding", "sizes", "seed", "result", "ms", "max rel err"):
            table.add_column(col)
        for b in verdict.bindings:
            sizes = ", ".join(f"{k}={v}" for k, v in b.values.items())
            result = "[green]ok[/green]" if b.passed else f"[red]{b.kind}[/red]"
            rel = "" if b.max_rel_error is None else f"{b.max_rel_error:.2e}"
            table.add_row(b.label, sizes, str(b.seed), result, f"{b.seconds * 1000:.1f}", rel)
        console.print(table)
    for w in verdict.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}", markup=True, highlight=False)
    if not verdict.passed and verdict.feedback:
        console.print("[bold]feedback:[/bold]")
        console.print(verdict.feedback, markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    """Add the `verify` command to the stepsmith CLI."""
    app.command("verify")(verify_command)
