"""User-facing STeP reference, generated from the primitive registry (used in LLM prompts)."""

from __future__ import annotations

from stepsmith.step.registry import REGISTRY, Example, PrimitiveDef

# Teaching order: element-wise, reductions, shape, copy, routing.
ORDER = ("Map", "Zip", "Accum", "Scan", "Promote", "Flatten", "Reshape", "Bufferize",
         "Streamify", "Repeat", "RepeatRef", "Copy", "Identity", "Partition", "Merge")

PREAMBLE = """\
# STeP primitive reference

- A stream `Strm<T, r, S>` has rank r and shape S = [D0, ..., Dr] listed **innermost first**.
  Element types T: `fp32`, `Buffer(fp32, [B0, ...])` (on-chip buffer, innermost first),
  `Multihot(fp32, E)` (routing selector), or a flat tuple of these (from Zip / Map on a tuple).
- Data layout: a tensor of shape reversed(S) + reversed(buffer shape) (+ (E,) for Multihot).
- Fns are the task's specialized functions, referred to by their func_name: stateless fns
  (`apply(input)`) for Map, stateful fns (with `init`, `apply(state, input)`) for Accum, Scan and
  Merge. A fn's declared input type must equal the stream's element type.
- Affine rule: every stream may be consumed by at most ONE primitive. To use a stream twice,
  `a, b = step.Copy().apply(s)`. Returning a stream does not consume it.
- Idioms: *dimension placeholder* — Promote a size-1 outer dim so Accum/Bufferize can take all
  real dims, then Flatten it away. *Stashing a dimension* — Bufferize the inner dims,
  Repeat/RepeatRef to add a dim outside them, Streamify back.
"""


def _dtype_yaml(d: str | list[str]) -> str:
    """A list dtype (tuple) stays a YAML list, as in the task files."""
    if isinstance(d, str):
        return f'"{d}"' if "(" in d else d
    return "[" + ", ".join(_dtype_yaml(x) for x in d) + "]"


def _example_md(ex: Example) -> str:
    lines = ["```yaml", "inputs:"]
    for name, dtype, dims in ex.inputs:
        lines.append(f"  - {{name: {name}, dtype: {_dtype_yaml(dtype)}, dims: [{', '.join(dims)}]}}")
    if ex.fns:
        lines.append("fns:")
        for f in ex.fns:
            lines.append(f"  - func_name: {f.func_name}")
            lines.append(f"    input_dtype: {_dtype_yaml(f.input_dtype)}")
            lines.append(f"    output_dtype: {_dtype_yaml(f.output_dtype)}")
            if f.init is not None:
                lines.append(f"    init: [{', '.join(str(v) for v in f.init)}]")
            if "\n" in f.apply:
                lines.append("    apply: |-")
                lines.extend("      " + ln for ln in f.apply.splitlines())
            else:
                lines.append(f"    apply: {f.apply}")
    lines.append("impl: |-")
    lines.extend("  " + ln for ln in ex.program.splitlines())
    lines.append("```")
    return "\n".join(lines)


def primitive_section(d: PrimitiveDef) -> str:
    """Markdown for one primitive: signature, description, worked example."""
    return (f"## {d.name}\n\n`{d.signature}`\n\n{d.description}\n\n"
            f"Example — {d.example.explanation}:\n\n{_example_md(d.example)}\n")


def primitive_reference(names: list[str] | None = None, preamble: bool = True) -> str:
    """Markdown reference of the primitives (all, in teaching order, by default)."""
    order = [n for n in ORDER if n in REGISTRY] + sorted(set(REGISTRY) - set(ORDER))
    chosen = [n for n in order if names is None or n in names]
    parts = [PREAMBLE] if preamble else []
    parts.extend(primitive_section(REGISTRY[n]) for n in chosen)
    return "\n".join(parts)
