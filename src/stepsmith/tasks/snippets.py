"""Compiling and running the Python pieces of a task (``global``, fn bodies, reference snippets).

Errors are mapped back to the file: a syntax error or an exception inside a snippet is reported
at the snippet's own line in the YAML file, through the ``Locator``.
"""

from __future__ import annotations

import ast
import textwrap
import traceback
from collections.abc import Callable
from typing import Any

from .errors import TaskFormatError, TaskReferenceError
from .yamlsrc import Locator, Path, format_path


def parse_code(src: str, path: Path, loc: Locator, *, as_body: bool = False,
               what: str = "Python code") -> ast.Module:
    """Parse a snippet (or a function body when ``as_body``), mapping syntax errors to the file."""
    text = "def __body__(input, state):\n" + textwrap.indent(src, "    ") if as_body else src
    try:
        return ast.parse(text, filename=format_path(path))
    except SyntaxError as exc:
        offset = (exc.lineno or 1) - (1 if as_body else 0)
        raise loc.error(path, f"{what} has a syntax error: {exc.msg} "
                              f"(line {max(offset, 1)} of the field: {(exc.text or '').strip()!r})",
                        offset=max(offset, 1)) from None


def split_expression(src: str, path: Path, loc: Locator) -> tuple[str, str]:
    """Split a data_transform snippet into setup statements and its final expression."""
    tree = parse_code(src, path, loc, what="data_transform snippet")
    if not tree.body or not isinstance(tree.body[-1], ast.Expr):
        line = tree.body[-1].lineno if tree.body else 1
        raise loc.error(path, "the last statement of a data_transform snippet must be an "
                              "expression (its value is the reference output)", offset=line)
    last = tree.body[-1]
    lines = src.splitlines()
    setup = "\n".join(lines[: last.lineno - 1])
    expr = ast.get_source_segment(src, last.value) or ast.unparse(last.value)
    pad = "\n" * (last.lineno - 1)  # keep line numbers of the expression for error mapping
    return setup, pad + expr


def _error_line(exc: BaseException, filename: str) -> int | None:
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == filename:
            line = frame.lineno
    return line


def run_guarded(action: Callable[[], Any], path: Path, loc: Locator, filename: str,
                what: str) -> Any:
    """Run ``action``; an exception becomes a ``TaskReferenceError`` at the failing snippet line."""
    try:
        return action()
    except TaskFormatError:
        raise
    except Exception as exc:
        line = _error_line(exc, filename)
        raise loc.error(path, f"{what} raised {type(exc).__name__}: {exc}", offset=line,
                        cls=TaskReferenceError) from exc


def exec_code(src: str, ns: dict[str, Any], path: Path, loc: Locator, what: str) -> None:
    """Execute statements (e.g. ``global``) in ``ns`` with file-mapped errors."""
    filename = f"<task {format_path(path)}>"
    code = compile(src, filename, "exec")
    run_guarded(lambda: exec(code, ns), path, loc, filename, what)


def eval_snippet(src: str, ns: dict[str, Any], path: Path, loc: Locator) -> Any:
    """Evaluate a data_transform snippet: run the setup lines, return the last expression."""
    setup, expr = split_expression(src, path, loc)
    filename = f"<task {format_path(path)}>"
    setup_code = compile(setup, filename, "exec")
    expr_code = compile(expr, filename, "eval")

    def action() -> Any:
        exec(setup_code, ns)
        return eval(expr_code, ns)

    return run_guarded(action, path, loc, filename, "data_transform snippet")


def assigned_names(tree: ast.AST) -> set[str]:
    """Names bound anywhere in ``tree`` (assignments, loop/comprehension targets, defs, imports)."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            out.add(node.id)
        elif isinstance(node, ast.ClassDef):
            out.add(node.name)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            out.add(node.name)
            out.update(a.arg for a in node.args.args + node.args.kwonlyargs)
        elif isinstance(node, ast.Lambda):
            out.update(a.arg for a in node.args.args)
        elif isinstance(node, ast.alias):
            out.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.arg):
            out.add(node.arg)
    return out
