"""The `stepsmith` command line: each pipeline package registers its own sub-commands."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    help="stepsmith — LLM agents writing STeP operators, verified and self-improving.",
    no_args_is_help=True,
    add_completion=False,
)

# Packages that contribute commands through `register(app)` in `<package>/cli.py`.
_COMMAND_MODULES = (
    "stepsmith.step.cli",
    "stepsmith.tasks.cli",
    "stepsmith.verify.cli",
    "stepsmith.llm.cli",
    "stepsmith.agents.cli",
    "stepsmith.evaluate.cli",
)

for _module_name in _COMMAND_MODULES:
    importlib.import_module(_module_name).register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
