"""`stepsmith tasks list|show|check`: browse the packaged benchmark and demonstration tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

tasks_app = typer.Typer(help="Benchmark and demonstration tasks (the structural IR).",
                        no_args_is_help=True)


def _selected(demos: bool, group: str | None) -> list:
    from stepsmith.tasks.suite import benchmark_tasks, demo_tasks

    tasks = demo_tasks() if demos else benchmark_tasks()
    return [t for t in tasks if group is None or t.group == group]


@tasks_app.command("list")
def list_tasks(
    demos: bool = typer.Option(False, "--demos", help="list the demonstration tasks instead"),
    group: str | None = typer.Option(None, "--group", "-g", help="only this group"),
) -> None:
    """Table of tasks: group, primitives in the reference, Copy needed, shape primitives."""
    from rich.console import Console
    from rich.table import Table

    from stepsmith.tasks.analysis import program_stats

    tasks = _selected(demos, group)
    table = Table(title=f"stepsmith {'demonstration' if demos else 'benchmark'} tasks "
                        f"({len(tasks)})")
    table.add_column("name", no_wrap=True)
    table.add_column("group", no_wrap=True)
    table.add_column("#prims", justify="right", no_wrap=True, min_width=6)
    table.add_column("Copy?", no_wrap=True, min_width=5)
    table.add_column("shape primitives", overflow="fold")
    for t in tasks:
        stats = program_stats(t.impl or "")
        table.add_row(t.name, t.group, str(stats.n_primitives), "yes" if stats.uses_copy else "no",
                      ", ".join(stats.shape_primitives) or "-")
    console = Console()
    if not console.is_terminal:  # piped output: don't squeeze the table to 80 columns
        console = Console(width=max(console.width, 130))
    console.print(table)


@tasks_app.command("show")
def show(name: str = typer.Argument(..., help="task name (or a path to a YAML file)"),
         no_impl: bool = typer.Option(False, "--no-impl", help="hide the reference impl")) -> None:
    """Print a task's YAML file."""
    from stepsmith.tasks.errors import TaskFormatError, TaskNotFoundError
    from stepsmith.tasks.suite import get_task

    try:
        task = get_task(name)
    except (TaskNotFoundError, TaskFormatError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None
    text = task.text
    if no_impl and "\nimpl:" in text:
        text = text[: text.index("\nimpl:")] + "\n"
    typer.echo(f"# {task.source_path}" if task.source_path else "# <text>")
    typer.echo(text.rstrip("\n"))


@tasks_app.command("check")
def check(
    names: Annotated[list[str] | None, typer.Argument(
        help="task names or paths (default: every benchmark task)")] = None,
    demos: bool = typer.Option(False, "--demos", help="check the demonstration tasks"),
    executor: str = typer.Option("fast", help="fast or oracle"),
) -> None:
    """PASS/FAIL per task: the file is valid, the reference evaluates at every binding and the
    task's own impl (when it has one) reproduces it. Exit 1 if any task fails."""
    from stepsmith.tasks.preflight import duplicate_names
    from stepsmith.tasks.suite import task_files
    from stepsmith.verify import VerifierPool
    from stepsmith.verify.taskcheck import check_ref

    if executor not in ("fast", "oracle"):
        typer.echo(f"error: --executor must be fast or oracle, found {executor!r}", err=True)
        raise typer.Exit(code=2)
    refs = names or [str(p) for p in task_files(demos=demos)]
    checks, loaded = [], []
    with VerifierPool(workers=min(2, max(len(refs), 1))) as pool:  # task code runs sandboxed
        for ref in refs:
            task, result = check_ref(ref, pool=pool,
                                     executor="oracle" if executor == "oracle" else "fast")
            checks.append(result)
            if task is not None:
                loaded.append(task)
    for c in checks:
        detail = f"{c.bindings} bindings" + (f"; {c.note}" if c.note else "")
        typer.echo(f"{'PASS' if c.passed else 'FAIL'} {c.name or c.ref} "
                   f"({detail if c.name else c.source})")
        for p in c.problems:
            typer.echo(f"     {p}")
    duplicates = duplicate_names(loaded)
    for problem in duplicates:
        typer.echo(f"FAIL {problem}")
    passed = sum(c.passed for c in checks)
    typer.echo(f"{passed}/{len(checks)} tasks passed")
    if duplicates or passed < len(checks):
        raise typer.Exit(code=1)


@tasks_app.command("new")
def new(
    name: str = typer.Argument(..., help="test_name of the new task (also the file name)"),
    directory: Annotated[Path, typer.Option("--dir", help="where to write NAME.yaml")] = Path("."),
    force: bool = typer.Option(False, "--force", help="overwrite an existing file"),
) -> None:
    """Write a commented, working task file to start from (it passes `tasks check`)."""
    from stepsmith.tasks.scaffold import ScaffoldError, write_scaffold

    try:
        path = write_scaffold(name, directory, force=force)
    except ScaffoldError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(f"wrote {path}\nedit it (field reference: docs/task-format.md), then: "
               f"stepsmith tasks check {path}")


def register(app: typer.Typer) -> None:
    """Add the ``tasks`` sub-command group to the stepsmith CLI."""
    app.add_typer(tasks_app, name="tasks")
