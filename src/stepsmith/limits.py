"""Bounds on untrusted text: one place that says how big and how deep hostile input may be.

Model answers, generated programs and the messages they provoke are untrusted. A 1 KB answer
of nested brackets can overflow a recursive parser, and a 61-character program can raise an
error whose message is 200 MB. Every stage therefore parses untrusted text through
`parse_untrusted` (size and depth checked, every parser failure a `SyntaxError`) and bounds
every message that can carry program-controlled text with `clip` (a fixed cap and a visible
`… (N more characters)` marker).
"""

from __future__ import annotations

import ast
import warnings

__all__ = [
    "MAX_AST_DEPTH",
    "CpuTimeExceeded",
    "MAX_MESSAGE_CHARS",
    "MAX_PROGRAM_CHARS",
    "MAX_PROGRAM_LINES",
    "ProgramTooComplex",
    "ast_depth",
    "clip",
    "nesting_depth",
    "parse_untrusted",
]

#: Longest message (feedback, error value, repr) kept anywhere; the LLM and the database see this.
MAX_MESSAGE_CHARS = 4000
#: Largest program text parsed at all (reference programs are < 2 KB, < 40 lines).
MAX_PROGRAM_CHARS = 20_000
MAX_PROGRAM_LINES = 500
#: Deepest syntax tree accepted (reference programs reach 11); keeps recursive visitors
#: (allow-list, affine check, `ast.dump`, `compile`) far from Python's recursion limit.
MAX_AST_DEPTH = 100


class CpuTimeExceeded(BaseException):  # noqa: N818 - BaseException: code under a limit can't swallow it
    """Raised by a sandboxed worker's CPU-time alarm inside whatever code is running: a
    candidate program, or a task file's own code while its data is prepared. Defined here, below
    `tasks` and `verify`, so both can tell it apart from the errors of the code they run."""


def clip(text: object, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text` cut to `limit` characters, with a visible marker saying how much was dropped."""
    if not isinstance(text, str):
        try:
            text = str(text)
        except Exception as exc:  # noqa: BLE001 - a hostile __str__ must not escape
            text = f"<unprintable {type(text).__name__}: {type(exc).__name__}>"
    if len(text) <= limit:
        return text
    marker = f"… ({len(text) - limit} more characters)"
    return text[:limit] + marker


class ProgramTooComplex(SyntaxError):
    """Untrusted text too large or too deeply nested to parse safely (a `SyntaxError`, so every
    caller that handles bad syntax handles this too)."""

    def __init__(self, msg: str, lineno: int | None = None) -> None:
        super().__init__(msg)
        self.msg = msg
        self.lineno = lineno


def ast_depth(tree: ast.AST, stop_at: int | None = None) -> int:
    """Depth of a syntax tree, computed without recursion (the tree may be hostile)."""
    best = 0
    stack: list[tuple[ast.AST, int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > best:
            best = depth
            if stop_at is not None and best > stop_at:
                return best
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return best


def nesting_depth(text: str) -> int:
    """Deepest bracket nesting (`([{`) of `text`, ignoring quoting: a cheap pre-parse bound."""
    depth = best = 0
    for ch in text:
        if ch in "([{":
            depth += 1
            if depth > best:
                best = depth
        elif ch in ")]}" and depth:
            depth -= 1
    return best


def parse_untrusted(
    src: str,
    filename: str = "<program>",
    *,
    max_chars: int = MAX_PROGRAM_CHARS,
    max_lines: int = MAX_PROGRAM_LINES,
    max_depth: int = MAX_AST_DEPTH,
) -> ast.Module:
    """`ast.parse` that only ever raises `SyntaxError` (including `ProgramTooComplex`).

    Checks size before parsing and depth after (the C parser survives depth the Python-level
    visitors do not); `RecursionError`, `MemoryError` and `ValueError` (NUL bytes) become
    `ProgramTooComplex` / `SyntaxError` with a reason. SyntaxWarnings (`1if x`) stay quiet.
    """
    if len(src) > max_chars:
        raise ProgramTooComplex(
            f"the program is {len(src)} characters long; at most {max_chars} are accepted"
        )
    n_lines = src.count("\n") + 1
    if n_lines > max_lines:
        raise ProgramTooComplex(
            f"the program has {n_lines} lines; at most {max_lines} are accepted"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(src, filename=filename)
    except (RecursionError, MemoryError):
        raise ProgramTooComplex(
            "the program is nested too deeply to parse; write it as a sequence of assignments"
        ) from None
    except ValueError as exc:  # NUL bytes, invalid surrogates
        raise SyntaxError(f"the program cannot be parsed: {clip(exc, 200)}") from None
    if ast_depth(tree, stop_at=max_depth) > max_depth:
        raise ProgramTooComplex(
            f"the program is nested more than {max_depth} levels deep; write it as a sequence "
            "of assignments"
        )
    return tree
