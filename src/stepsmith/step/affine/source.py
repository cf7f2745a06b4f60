"""Reading STeP program text: an impl body (plain, indented, or wrapped in a `def`), quietly,
and the one recogniser of primitive calls (`step.P(...)`, `step.P(...).apply(...)`).

Shared by the affine check and repair, the verifier's allow-list, the mutant generator and the
suite statistics, so every stage sees the same statements at the same line numbers and agrees
on what a primitive call is.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from dataclasses import dataclass

from stepsmith.limits import parse_untrusted

__all__ = [
    "AffineParseError", "ParsedProgram", "PrimitiveApply", "apply_receiver", "char_col",
    "is_indented", "parse_body", "parse_program", "primitive_applies", "primitive_calls",
    "primitive_of", "split_lines", "step_attr",
]

_LINE_RE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")


class AffineParseError(SyntaxError):
    """The program could not be parsed, so the affine rule could not be checked."""


@dataclass
class ParsedProgram:
    """A parsed program body with positions relative to the source text as given."""

    body: list[ast.stmt]
    params: list[str] | None
    header_line: int  # line of the `def` when the source was a wrapped function, else 0


def is_indented(src: str) -> bool:
    """The first code line is indented: the text is a body copied from inside a `def`."""
    for line in src.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            return line[:1] in (" ", "\t")
    return False


def parse_body(src: str) -> ast.Module:
    """Parse an impl body, plain or uniformly indented (copied from inside a `def`), with
    positions relative to the body. Raises the `SyntaxError` naming the real line (for an
    indented body the wrapped parse's, shifted back) or `ValueError` (NUL bytes). Parsing is
    bounded and quiet (`stepsmith.limits.parse_untrusted`): too large or deep text is a
    `SyntaxError`, never `RecursionError`, and no SyntaxWarning reaches stderr."""
    try:
        return parse_untrusted(src)
    except SyntaxError as first:
        try:
            wrapped = parse_untrusted("if 1:\n" + src)
        except (SyntaxError, ValueError) as second:
            if is_indented(src) and isinstance(second, SyntaxError) and second.lineno:
                second.lineno -= 1
                raise second from None
            raise first from None
    wrapper = wrapped.body[0]
    if not isinstance(wrapper, ast.If):  # pragma: no cover - "if 1:" parses as an If
        raise TypeError("unexpected wrapper statement")
    for stmt in wrapper.body:
        ast.increment_lineno(stmt, -1)
    return ast.Module(body=wrapper.body, type_ignores=[])


def parse_program(src: str) -> ParsedProgram:
    """Parse an impl body (plain, uniformly indented, or wrapped in a single `def`).

    Raises `AffineParseError` naming the offending line when the text is not Python.
    """
    if not isinstance(src, str):
        raise AffineParseError(
            f"the program must be Python source text, found {type(src).__name__}"
        )
    try:
        mod = parse_body(src)
    except ValueError as exc:  # NUL bytes
        raise AffineParseError(f"the program cannot be parsed: {exc}") from None
    except SyntaxError as err:
        text = " ".join((err.text or "").split())
        text = text if len(text) <= 80 else text[:77] + "..."
        where = f"line {err.lineno}: " if err.lineno else ""
        raise AffineParseError(f"{where}{err.msg}" + (f": `{text}`" if text else "")) from None
    if len(mod.body) == 1 and isinstance(mod.body[0], ast.FunctionDef):
        fn = mod.body[0]
        params = [a.arg for a in fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs]
        return ParsedProgram(body=fn.body, params=params, header_line=fn.lineno)
    return ParsedProgram(body=mod.body, params=None, header_line=0)


def split_lines(src: str) -> list[str]:
    """Lines with their own line endings kept (so edits give byte-identical untouched lines)."""
    return _LINE_RE.findall(src)


def char_col(line: str, byte_col: int) -> int:
    """`ast` column offsets count UTF-8 bytes; string slicing counts characters."""
    return len(line.encode("utf-8")[:byte_col].decode("utf-8", errors="replace"))


# --------------------------------------------------------------------------- primitive calls


def step_attr(node: ast.AST | None) -> str | None:
    """`step.X` -> "X" (how a program names a primitive), else None."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return node.attr if node.value.id == "step" else None
    return None


def primitive_of(node: ast.AST | None) -> str | None:
    """`step.P(...)` (a constructor call) -> "P", else None."""
    return step_attr(node.func) if isinstance(node, ast.Call) else None


def apply_receiver(node: ast.AST | None) -> ast.expr | None:
    """`R.apply(...)` -> R (a constructor call, or a name bound to one), else None."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return node.func.value if node.func.attr == "apply" else None
    return None


@dataclass(frozen=True)
class PrimitiveApply:
    """One `step.P(...).apply(...)`: the whole call, the constructor call and P."""

    call: ast.Call
    ctor: ast.Call
    name: str


def primitive_applies(nodes: Iterable[ast.AST]) -> list[PrimitiveApply]:
    """Every `step.P(...).apply(...)` under `nodes`, in source order."""
    found = []
    for root in nodes:
        for node in ast.walk(root):
            recv = apply_receiver(node)
            name = primitive_of(recv)
            if name is not None and isinstance(node, ast.Call) and isinstance(recv, ast.Call):
                found.append(PrimitiveApply(node, recv, name))
    return sorted(found, key=lambda a: (a.call.lineno, a.call.col_offset))


def primitive_calls(src: str) -> list[str]:
    """Names of the `step.P(...)` constructor calls in `src`, in source order (raises
    `AffineParseError` when `src` is not a program)."""
    calls = [
        (node.lineno, node.col_offset, name)
        for stmt in parse_program(src).body
        for node in ast.walk(stmt)
        if isinstance(node, ast.Call) and (name := primitive_of(node)) is not None
    ]
    return [name for _, _, name in sorted(calls)]
