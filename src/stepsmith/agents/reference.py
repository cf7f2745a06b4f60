"""Worked examples for the reference prompt: one per primitive and idiom, from the demonstration set.

Each registry primitive gets the demonstration-set task that declares it teaches that primitive
(group `demo-<primitive>`, a `primitive: X` tag) or else the most focused task using it; when no
unused task fits, the registry's own small example. The demonstration set is checked against
the benchmark: a benchmark task (same name or AST-isomorphic program) there is a `LeakageError`.
"""

from __future__ import annotations

import functools
import re
import textwrap
from dataclasses import dataclass

from stepsmith.agents.render import dtype_text
from stepsmith.demos import isomorphic, task_ir
from stepsmith.demos.view import dump_yaml
from stepsmith.step.affine.source import AffineParseError, primitive_calls
from stepsmith.step.docs import IDIOMS, primitives
from stepsmith.step.registry import PrimitiveDef
from stepsmith.tasks.task import Task

__all__ = ["LeakageError", "Example", "reference_examples", "IDIOMS"]


class LeakageError(ValueError):
    """A prompt would show a task its own solution (or a benchmark task as a worked example)."""


def _registry() -> dict[str, PrimitiveDef]:
    """The primitives in the order the reference teaches them (`step.docs.primitives`)."""
    return {d.name: d for d in primitives()}


def _demo_tasks() -> list[Task]:
    from stepsmith.tasks.suite import demo_tasks

    return list(demo_tasks())


def _benchmark_tasks() -> list[Task]:
    from stepsmith.tasks.suite import benchmark_tasks

    return list(benchmark_tasks())


@dataclass(frozen=True)
class Example:
    """A worked example in the reference: a demonstration-set task (or registry example text)."""

    topic: str  # primitive or idiom name
    task_name: str | None
    ir: str | None
    impl: str | None
    fallback: str | None = None  # registry example (YAML) when no demo task teaches the topic
    fallback_py: str | None = None  # the same example as Python, for the no-IR baseline


def _calls(impl: str | None) -> list[str]:
    """The primitives a demo program calls (the verifier's recogniser; none if unparsable)."""
    try:
        return primitive_calls(impl or "")
    except AffineParseError:
        return []


def _uses(impl: str | None, primitive: str) -> bool:
    return primitive in _calls(impl)


def _distinct_primitives(impl: str | None) -> int:
    return len(set(_calls(impl)))


def _teaches(task: Task, topic: str, *, loose: bool = False) -> bool:
    """Does a demo task declare that it teaches `topic` (group demo-<topic>, name, description)?

    `loose` (idioms) also accepts the topic anywhere in the group or name ("demo-idiom-stash").
    """
    t = topic.lower()
    group = (task.group or "").lower()
    name = task.name.lower()
    description = (task.description or "").lower()
    if loose and (t in group or t in name):
        return True
    return (
        group in (f"demo-{t}", f"demo_{t}", t)
        or name in (t, f"demo_{t}", f"demo-{t}")
        or name.startswith((f"demo_{t}_", f"{t}_"))
        or re.search(rf"primitive:\s*{re.escape(t)}\b", description) is not None
        or re.search(rf"idiom:\s*{re.escape(t)}\b", description) is not None
    )


_IDIOM_ALIASES = {"placeholder": ("placeholder",), "stashing": ("stash", "stashing")}


def _registry_example_text(definition: PrimitiveDef) -> str | None:
    """The registry's own small worked program, rendered like a task (used when no demo task fits)."""
    example = definition.example
    if not example.program.strip():
        return None
    document: dict[str, object] = {}
    if example.explanation:
        document["description"] = example.explanation.strip()
    if example.inputs:
        document["inputs"] = [
            {"name": name, "dtype": dtype, "dims": list(dims)} for name, dtype, dims in example.inputs
        ]
    fns = []
    for fn in example.fns:
        item: dict[str, object] = {"func_name": fn.func_name}
        if fn.init is not None:
            item["init"] = list(fn.init)
        item.update(input_dtype=fn.input_dtype, output_dtype=fn.output_dtype, apply=fn.apply)
        fns.append(item)
    if fns:
        document["fns"] = fns
    if example.reference:
        document["output_equals"] = example.reference.strip()
    document["impl"] = example.program.strip()
    return dump_yaml(document)


def _registry_example_python(definition: PrimitiveDef) -> str | None:
    """The registry example as a commented Python function (no structural IR)."""
    example = definition.example
    program = example.program
    if not program.strip():
        return None
    lines = []
    if example.explanation:
        lines.append(f"# {' '.join(example.explanation.split())}")
    names = []
    for name, dtype, dims in example.inputs:
        names.append(name)
        lines.append(
            f"# {name}: stream of {dtype}, shape [{', '.join(map(str, dims))}] (innermost first)"
        )
    for fn in example.fns:
        init = fn.init
        head = (
            f"def {fn.func_name}(state, input):"
            if init is not None
            else f"def {fn.func_name}(input):"
        )
        kind = f"stateful, init {list(init)}" if init is not None else "stateless"
        typing = f"input {dtype_text(fn.input_dtype)} -> output {dtype_text(fn.output_dtype)}"
        lines += [head, f"    # {kind}; {typing}"]
        lines.append(textwrap.indent(fn.apply.strip(), "    "))
    lines.append(f"def impl({', '.join(names)}):")
    lines.append(textwrap.indent(program.strip(), "    "))
    if example.reference:
        lines.append(f"# the output equals: {example.reference}")
    return "\n".join(lines)


def _guard_demo_set(demos: list[Task]) -> None:
    """The base prompt must never contain a benchmark task (by name or isomorphic program)."""
    bench = _benchmark_tasks()
    names = {t.name for t in bench}
    for demo in demos:
        if demo.name in names:
            raise LeakageError(
                f"demonstration-set task '{demo.name}' is also a benchmark task; the base prompt "
                "may only use tasks from the demonstration set"
            )
        for b in bench:
            if isomorphic(demo.impl, b.impl):
                raise LeakageError(
                    f"demonstration-set task '{demo.name}' has the same program (AST-isomorphic) as "
                    f"benchmark task '{b.name}'; it would leak that task's solution into every prompt"
                )


@functools.lru_cache(maxsize=32)
def reference_examples(exclude: tuple[str, ...] = ()) -> tuple[Example, ...]:
    """One worked example per primitive and per idiom, chosen from the demonstration set.

    Tasks named in `exclude` are skipped (a demo task being solved must not see itself).
    """
    demos = [t for t in _demo_tasks() if t.name not in exclude]
    _guard_demo_set(demos)
    used: set[str] = set()
    examples: list[Example] = []
    topics: list[tuple[str, PrimitiveDef | None]] = list(_registry().items())
    topics += [(idiom, None) for idiom in IDIOMS]
    for topic, definition in topics:
        aliases = _IDIOM_ALIASES.get(topic, (topic,))
        declared = [
            t for t in demos if any(_teaches(t, a, loose=definition is None) for a in aliases)
        ]
        using = sorted(
            (t for t in demos if definition is not None and _uses(t.impl, topic)),
            key=lambda t: (_distinct_primitives(t.impl), t.name),
        )
        chosen = next((t for t in declared + using if t.name not in used), None)
        fallback = _registry_example_text(definition) if definition is not None else None
        if chosen is None and declared and fallback is None:
            chosen = declared[0]  # a task declared for this topic, even if shown already
        if chosen is not None:
            used.add(chosen.name)
            examples.append(Example(topic, chosen.name, task_ir(chosen), chosen.impl))
        else:  # the registry's own small example is more focused than repeating a task
            python = _registry_example_python(definition) if definition is not None else None
            examples.append(Example(topic, None, None, None, fallback, python))
    return tuple(examples)
