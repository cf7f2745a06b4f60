"""The `stepsmith` command line: each pipeline package registers its own sub-commands."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    help="stepsmith — LLM agents writing STeP operators, verified and self-improving.",
    no_args_is_help=True,
    add_completion=False,
)

# Modules that contribute commands through `register(app)` (`<package>/cli.py`, `evaluate/demo.py`).
_COMMAND_MODULES = (
    "stepsmith.tasks.cli",
    "stepsmith.verify.cli",
    "stepsmith.llm.cli",
    "stepsmith.agents.cli",
    "stepsmith.evaluate.cli",
    "stepsmith.evaluate.demo",
)

for _module_name in _COMMAND_MODULES:
    importlib.import_module(_module_name).register(app)


def _print_version(value: bool) -> None:
    if value:
        from stepsmith import __version__

        typer.echo(f"stepsmith {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """stepsmith — LLM agents writing STeP operators, verified and self-improving."""


@app.command()
def reference(
    no_ir: bool = typer.Option(False, "--no-ir", help="the variant for the single-no-ir method "
                                                      "(programs as Python functions)"),
    markdown: bool = typer.Option(False, "--markdown", help="the primitive reference as Markdown "
                                                            "(from the registry) instead"),
    compact: bool = typer.Option(False, "--compact", help="the compact reference (no worked "
                                                          "examples; `bench --reference compact`)"),
) -> None:
    """Print the STeP language reference exactly as the model sees it (its system message)."""
    if markdown:
        from stepsmith.step.docs import primitive_reference

        typer.echo(primitive_reference().rstrip("\n"))
        return
    from stepsmith.agents.prompts import base_prompt

    style = "compact" if compact else "full"
    typer.echo(base_prompt(with_ir=not no_ir, style=style).rstrip("\n"))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
