"""Suite statistics (stepsmith.tasks.analysis) read primitive facts from the registry."""

from __future__ import annotations

from stepsmith.step import REGISTRY
from stepsmith.tasks.analysis import (
    COPY_PRIMITIVES,
    SHAPE_PRIMITIVES,
    primitive_calls,
    program_stats,
)

PROGRAM = """\
a, b = step.Copy().apply(x)
c = step.Bufferize(a=1).apply(a)   # step.Map(fn=f) in a comment is no call
d = step.Repeat(n=N).apply(c)
e = step.Streamify().apply(d)
f = step.Bufferize(a=1).apply(e)
g = step.Fancy().apply(f)
return step.Map(fn=fn_add).apply((b, g))
"""


def test_calls_are_registry_primitives_in_source_order() -> None:
    assert primitive_calls(PROGRAM) == [
        "Copy", "Bufferize", "Repeat", "Streamify", "Bufferize", "Map"]  # no Fancy


def test_stats_use_the_registry_categories() -> None:
    assert set(SHAPE_PRIMITIVES) == {n for n, d in REGISTRY.items() if d.category == "shape"}
    assert {"Bufferize", "Streamify", "Repeat", "Flatten"} <= set(SHAPE_PRIMITIVES)
    assert "Map" not in SHAPE_PRIMITIVES and COPY_PRIMITIVES == ("Copy",)
    stats = program_stats(PROGRAM)
    assert stats.n_primitives == 6 and stats.uses_copy and stats.needs_shape
    assert stats.shape_primitives == ("Bufferize", "Repeat", "Streamify")
    plain = program_stats("return step.Map(fn=f).apply(x)\n")
    assert (plain.n_primitives, plain.uses_copy, plain.needs_shape) == (1, False, False)


def test_an_indented_body_is_read_like_the_verifier_reads_it() -> None:
    assert primitive_calls("    y = step.Identity().apply(x)\n    return y\n") == ["Identity"]
