"""Static facts about a program (for ``stepsmith tasks list`` and for suite statistics).

Which names are primitives, and which of them reshape streams, is the registry's to say.
"""

from __future__ import annotations

from dataclasses import dataclass

from stepsmith.step.affine.source import primitive_calls as _calls
from stepsmith.step.registry import REGISTRY


def primitive_calls(src: str) -> list[str]:
    """Names of the ``step.<Primitive>(...)`` constructor calls in ``src``, in source order."""
    return [name for name in _calls(src) if name in REGISTRY]


#: The primitives that change a stream's shape without computing (category ``shape``).
SHAPE_PRIMITIVES = tuple(name for name, d in REGISTRY.items() if d.category == "shape")
#: The primitives that split one stream into several identical ones (``Copy``).
COPY_PRIMITIVES = tuple(n for n, d in REGISTRY.items() if d.category == "copy" and d.outputs != 1)


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
    return ProgramStats(len(calls), any(c in COPY_PRIMITIVES for c in calls), shape)
