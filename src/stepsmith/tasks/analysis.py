"""Static facts about a program (for ``stepsmith tasks list`` and for suite statistics)."""

from __future__ import annotations

import ast
from dataclasses import dataclass

PRIMITIVES = ("Map", "Zip", "Accum", "Scan", "Promote", "Flatten", "Reshape", "Bufferize",
              "Streamify", "Repeat", "RepeatRef", "Copy", "Identity", "Partition", "Merge")
SHAPE_PRIMITIVES = ("Promote", "Flatten", "Reshape", "Bufferize", "Streamify", "Repeat", "RepeatRef")


def primitive_calls(src: str) -> list[str]:
    """Names of the ``step.<Primitive>(...)`` constructor calls in ``src``, in source order."""
    tree = ast.parse(src)
    calls = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "step"
                and node.func.attr in PRIMITIVES):
            calls.append((node.lineno, node.col_offset, node.func.attr))
    return [name for _, _, name in sorted(calls)]


@dataclass(frozen=True)
class ProgramStats:
    """Primitive count and the two mix properties the benchmark balances."""

    n_primitives: int
    uses_copy: bool
    shape_primitives: tuple[str, ...]

    @property
    def needs_shape(self) -> bool:
        return bool(self.shape_primitives)


def program_stats(src: str) -> ProgramStats:
    calls = primitive_calls(src)
    shape = tuple(dict.fromkeys(c for c in calls if c in SHAPE_PRIMITIVES))
    return ProgramStats(len(calls), "Copy" in calls, shape)
