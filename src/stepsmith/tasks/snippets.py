"""Compiling and running the Python pieces of a task (``global``, fn bodies, reference snippets).

Errors are mapped back to the file: a syntax error or an exception inside a snippet is reported
at the snippet's own line in the YAML file, through the ``Locator``.
"""

from __future__ import annotations

import ast
import os
import signal
import textwrap
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from stepsmith.limits import CpuTimeExceeded, clip

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
    if last.col_offset == 0 and last.end_lineno is not None:
        # whole lines: a multi-line expression keeps its continuation lines' own indentation
        expr = "\n".join(lines[last.lineno - 1 : last.end_lineno])
    else:  # `a = 1; a + b`: the expression starts mid-line
        expr = ast.get_source_segment(src, last.value) or ast.unparse(last.value)
    pad = "\n" * (last.lineno - 1)  # keep line numbers of the expression for error mapping
    return setup, pad + expr


def error_line(exc: BaseException, filename: str) -> int | None:
    """The deepest line of ``filename`` in the exception's traceback."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == filename:
            line = frame.lineno
    return line


#: Wall-clock limit on one piece of task code run in the caller's thread (``global`` while
#: loading): a hanging task file must be an error naming the file, not a hung command.
TASK_CODE_LIMIT_S = 60.0


class _TaskCodeTimeout(BaseException):  # noqa: N818 - BaseException: task code can't swallow it
    """Raised by the alarm inside task code that ran too long."""


@contextmanager
def _time_limit(seconds: float) -> Iterator[bool]:
    """Interrupt Python-level task code after ``seconds`` (SIGALRM), where that is safe: in the
    main thread and only if nobody else uses the real-time timer. Yields whether it is armed."""
    usable = (hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
              and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
              and signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, signal.SIG_IGN, None))
    if not usable:
        yield False
        return

    def _expire(_signum: int, _frame: Any) -> None:
        raise _TaskCodeTimeout()

    previous = signal.signal(signal.SIGALRM, _expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield True
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class _TaskCodeExit(BaseException):  # noqa: N818 - BaseException: task code can't swallow it
    """Raised instead of ending the process when task code calls `os._exit` / `os.abort`."""

    def __init__(self, call: str) -> None:
        super().__init__(call)
        self.call = call


@contextmanager
def _no_process_exit() -> Iterator[None]:
    """While task code runs, `os._exit(n)` and `os.abort()` raise instead of ending the process.

    `os._exit(0)` in a `global` used to end `stepsmith verify` with status 0 — a false success.
    Task files are trusted code (README), so this guards against carelessness, not attacks.
    """
    saved = os._exit, os.abort

    def refuse_exit(code: int = 0) -> None:
        raise _TaskCodeExit(f"os._exit({code!r})")

    def refuse_abort() -> None:
        raise _TaskCodeExit("os.abort()")

    os._exit, os.abort = refuse_exit, refuse_abort  # type: ignore[assignment]
    try:
        yield
    finally:
        os._exit, os.abort = saved


def run_guarded(action: Callable[[], Any], path: Path, loc: Locator, filename: str,
                what: str) -> Any:
    """Run ``action``; an exception becomes a ``TaskReferenceError`` at the failing snippet line.

    Task files are code (README, "Trust model"), but a careless one must not end or hang the
    command that reads it: ``SystemExit`` (``exit()``, ``sys.exit``) and running longer than
    ``TASK_CODE_LIMIT_S`` are errors naming the file too.
    """
    try:
        with _time_limit(TASK_CODE_LIMIT_S), _no_process_exit():
            return action()
    except TaskFormatError:
        raise
    except (_TaskCodeExit, _TaskCodeTimeout, CpuTimeExceeded, SystemExit, Exception) as exc:
        cause = None
        if isinstance(exc, _TaskCodeExit):
            why = f"tried to end the process ({exc.call}); task code must not exit"
        elif isinstance(exc, _TaskCodeTimeout):
            why = (f"did not finish within {TASK_CODE_LIMIT_S:g} s (an endless loop?); task code "
                   "must compute its values quickly")
        elif isinstance(exc, CpuTimeExceeded):  # a sandboxed worker's (the candidates') limit
            why = (f"did not finish within the verifier's CPU-time limit ({exc}; an endless "
                   "loop?); task code must compute its values quickly")
        elif isinstance(exc, SystemExit):
            why = (f"tried to exit the program (SystemExit({exc.code!r})); task code must not "
                   "call exit()")
        else:
            why, cause = f"raised {type(exc).__name__}: {clip(exc, 1000)}", exc
        raise loc.error(path, f"{what} {why}", offset=error_line(exc, filename),
                        cls=TaskReferenceError) from cause


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
