"""`stepsmith prompt TASK`: print the exact messages the proposer would send for a task.

For people studying the agent (what does the model see?) and for debugging a task file: the
same composer as `stepsmith bench`, with the same leakage guard on demonstrations.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from stepsmith.demos import DemoRecord


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def register(app: typer.Typer) -> None:
    @app.command("prompt")
    def prompt_cmd(
        task: Annotated[str, typer.Argument(help="Benchmark task name or a task YAML file.")],
        demos: Annotated[Path | None, typer.Option(
            "--demos", help="Demonstration library (from export-demos) to show as solved tasks.")] = None,
        no_ir: Annotated[bool, typer.Option(
            "--no-ir", help="The single-no-ir baseline's prompt (Python scaffold, no structural IR).")] = False,
        as_json: Annotated[bool, typer.Option(
            "--json", help="Print the messages as a JSON list (role, content).")] = False,
        sibling: Annotated[bool, typer.Option(
            "--sibling", help="Also repeat the nearest solved sibling before the task (bench --sibling).")] = False,
    ) -> None:
        """Print the proposer's messages for TASK (system reference + demonstrations + task)."""
        from stepsmith.agents.prompts import compose_messages, estimate_tokens
        from stepsmith.agents.reference import LeakageError
        from stepsmith.tasks.errors import TaskFormatError, TaskNotFoundError
        from stepsmith.tasks.suite import get_task

        try:
            the_task = get_task(task)
        except (TaskNotFoundError, TaskFormatError) as exc:
            _fail(str(exc))
            return
        shown: list[DemoRecord] = []
        hidden = 0
        if demos is not None:
            from stepsmith.demos import DemoLibraryError, load_library, visible_demos

            try:
                library = load_library(demos)
            except DemoLibraryError as exc:
                _fail(str(exc))
                return
            shown = visible_demos(the_task, library)
            hidden = len(library) - len(shown)
        try:
            messages = compose_messages(the_task, shown, with_ir=not no_ir, sibling=sibling)
        except LeakageError as exc:
            _fail(str(exc))
            return
        if as_json:
            typer.echo(json.dumps(messages, indent=2))
            return
        for m in messages:
            typer.echo(f"===== {m['role']} (~{estimate_tokens(m['content']):,} tokens) =====")
            typer.echo(m["content"])
        total = sum(estimate_tokens(m["content"]) for m in messages)
        note = f"; {hidden} demonstration(s) withheld by the leakage guard" if hidden else ""
        typer.echo(f"===== ~{total:,} tokens (len/4 estimate), {len(shown)} demonstration(s){note} =====",
                   err=True)
