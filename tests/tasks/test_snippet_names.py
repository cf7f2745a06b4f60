"""`assigned_names`: what a `global` or `impl` binds (used to check names the program uses)."""

from __future__ import annotations

import ast

from stepsmith.tasks.snippets import assigned_names


def test_class_and_function_definitions_bind_their_names() -> None:
    """A class in `global` used to crash the loader (a ClassDef has no `args`; found by mypy)."""
    tree = ast.parse("class Router:\n    k = 2\ndef gate(x, *, t):\n    return x\n")
    assert assigned_names(tree) >= {"Router", "k", "gate", "x", "t"}
