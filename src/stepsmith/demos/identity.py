"""Program identity: the one definition of "the same program" (σ filtering and the leakage guard).

Two impls are isomorphic when they have the same syntax tree after renaming the names the
program binds (assignment and comprehension targets) to v0, v1, ... in order of first
appearance. Free names — input streams, fns, size symbols, `step` — keep their identity because
they carry meaning; call keywords are order-insensitive; comments, bare strings and layout never
matter. Text that does not parse is its own whitespace-normalised self: it is the same program
only as the same text (so σ groups repeated garbage and the guard hides a verbatim copy).
σ (`stepsmith.improve.filtering`), the prompt composer's guard and the library's `leaks` all
use `canonical_form`, so a demonstration that survives σ can never trip the guard.
"""

from __future__ import annotations

import ast
import textwrap

__all__ = ["canonical_form", "isomorphic", "normalized_dump"]


def _bound_names(tree: ast.AST) -> list[str]:
    """Names the program binds, in source order of first appearance."""
    found: list[tuple[int, int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            found.append((node.lineno, node.col_offset, node.id))
        elif isinstance(node, ast.arg):
            found.append((node.lineno, node.col_offset, node.arg))
    order: list[str] = []
    for _, _, name in sorted(found):
        if name not in order:
            order.append(name)
    return order


class _Normaliser(ast.NodeTransformer):
    def __init__(self, mapping: dict[str, str]) -> None:
        self.mapping = mapping

    def visit_Name(self, node: ast.Name) -> ast.AST:
        new = self.mapping.get(node.id, node.id)
        return ast.copy_location(ast.Name(id=new, ctx=node.ctx), node)

    def visit_arg(self, node: ast.arg) -> ast.AST:
        node.arg = self.mapping.get(node.arg, node.arg)
        return node

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        node.keywords.sort(key=lambda k: k.arg or "")
        return node

    def visit_Expr(self, node: ast.Expr) -> ast.AST | None:
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return None  # a bare string is a comment in disguise
        return self.generic_visit(node)


def normalized_dump(src: str) -> str | None:
    """Canonical text of the program's AST with bound names normalised; None if it does not parse."""
    try:
        tree = ast.parse(textwrap.dedent(src))
    except (SyntaxError, ValueError):
        return None
    mapping = {name: f"v{i}" for i, name in enumerate(_bound_names(tree))}
    tree = _Normaliser(mapping).visit(tree)
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


def canonical_form(src: str) -> str:
    """A string equal for exactly the isomorphic programs; unparsable text stays itself."""
    dump = normalized_dump(src)
    return dump if dump is not None else "unparsable:" + " ".join(src.split())


def isomorphic(a: str | None, b: str | None) -> bool:
    """True if both are programs (non-empty) with one canonical form: they differ only in the
    names they bind, layout and comments — or, unparsable, only in whitespace."""
    if not a or not b:
        return False
    return canonical_form(a) == canonical_form(b)
