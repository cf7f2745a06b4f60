"""The STeP language reference: the language's prose, kept once, and the primitives' own
documentation from the registry, rendered for people (Markdown) and for the proposer (YAML).

`primitive_reference()` renders both: `stepsmith reference --markdown` prints the Markdown,
and the proposer's system message (`agents.prompts.base_prompt`, `stepsmith reference`) takes
its language notes, primitive list, idioms and affine rule from here, adding only the worked
examples it chooses from the demonstration tasks.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from stepsmith.step.registry import REGISTRY, Example, PrimitiveDef

LANGUAGE = """\
- You write the BODY of a Python function whose parameters are the task's input streams. It
  wires STeP primitives (`step.<Name>(args).apply(stream)`, or `.apply((s1, s2))` for several
  inputs) and returns the output stream, or a tuple of streams in the order of `outputs`.
- Shapes list dims innermost first: `dims: [K, N, M]` is a rank-2 stream (rank = len(dims) - 1)
  whose innermost dim is K and outermost is M. Shapes are symbolic (M, N, K, D, E are
  `step.Dim` values; M_value, N_value, ... are their integers).
- Element types: fp32 (one number); Buffer(fp32, [B0, ...]) (an on-chip tile, innermost first);
  Multihot(fp32, E) (a 0/1 selector of E experts); flat tuples of these (from Zip or a Map over
  several streams).
- Data layout: a stream's values form one tensor of shape reversed(dims) + reversed(buffer
  shape) (+ (E,) for Multihot). The task's `data_transform` computes the expected outputs in
  exactly this layout, so read it to learn which dim is which.
- Specialized functions (`fns`) come with the task; pass them by `func_name` (fn=fn_sum). A fn
  without `init` is stateless (for Map); with `init` it is stateful (for Accum, Scan, Merge).
  The stream's element type must equal the fn's `input_dtype`; its output type is the fn's
  `output_dtype`. Use only the task's inputs, fns, size symbols and the primitives below; no
  imports, no torch calls, no loops over data."""

#: The affine rule as a heading (verifier feedback); `AFFINE_RULE` is the rule in full, which
#: the proposer's reference and the guardian's prompt both quote.
AFFINE_RULE_BRIEF = "a stream can be consumed by only one primitive"

AFFINE_RULE = """\
Every stream may be consumed by at most ONE primitive (a FIFO is drained by its reader). To use
a stream twice, first split it with `s_a, s_b = step.Copy().apply(s)` and give each consumer
its own copy; for three uses chain two Copies (Copy one of the two copies again); in general
k uses need k-1 chained Copies. Uses are counted over the whole program, including list
comprehensions. Returning a stream does not consume it; an unused stream is fine. Partition and
Merge both read the selector, so the selector stream must be Copied."""

#: The idioms the references teach, by key (the proposer's reference adds a worked example).
IDIOMS: dict[str, str] = {
    "placeholder": """\
Accum, Scan and Bufferize can take at most `rank` dims: the outermost dim can never be reduced.
To reduce or buffer every real dim, first Promote a size-1 dim outside them (the placeholder),
apply the primitive over all real dims, then remove the size-1 dim with Flatten when it is in
the way.""",
    "stashing": """\
To repeat data along a dim that is not innermost (e.g. reuse one row for every n), Bufferize the
inner dims into one element, add the new dim with Repeat(n=...) or RepeatRef, then Streamify the
buffer back into stream dims.""",
}
IDIOM_TITLES: dict[str, str] = {
    "placeholder": "dimension placeholder", "stashing": "stashing a dimension",
}

_NOTATION = """\
Notation in the descriptions below: `Strm<T, r, S>` is a stream of element type T, rank r and
shape S = [D0, ..., Dr] (innermost first)."""


def primitives(names: Iterable[str] | None = None) -> list[PrimitiveDef]:
    """The registry's primitives (all, or those named) in the order both references teach
    them: the order they are registered in."""
    wanted = None if names is None else set(names)
    return [d for n, d in REGISTRY.items() if wanted is None or n in wanted]


# ------------------------------------------------------------------------------ YAML helpers


def yaml_indent(text: str, spaces: int) -> str:
    """Indent every line (blank lines stay empty, so the block is valid YAML)."""
    pad = " " * spaces
    return textwrap.indent(text, pad, lambda _line: True).replace(pad + "\n", "\n")


def yaml_block(key: str, text: str, spaces: int) -> str:
    """`key: |-` followed by the text indented one level deeper."""
    pad = " " * spaces
    return f"{pad}{key}: |-\n{yaml_indent(text.rstrip(), spaces + 2)}"


def yaml_inline(text: str) -> str:
    """A one-line YAML scalar, quoted when it contains YAML syntax."""
    text = " ".join(text.split())
    if re.search(r"[:#\[\]{},&*!|>'\"%@`]", text):
        return "'" + text.replace("'", "''") + "'"
    return text


# ------------------------------------------------------------------------------ rendering


def _dtype_yaml(d: str | list[str]) -> str:
    """A list dtype (tuple) stays a YAML list, as in the task files."""
    if isinstance(d, str):
        return f'"{d}"' if "(" in d else d
    return "[" + ", ".join(_dtype_yaml(x) for x in d) + "]"


def _example_md(ex: Example) -> str:
    lines = ["```yaml", "inputs:"]
    for name, dtype, dims in ex.inputs:
        lines.append(f"  - {{name: {name}, dtype: {_dtype_yaml(dtype)}, "
                     f"dims: [{', '.join(dims)}]}}")
    if ex.fns:
        lines.append("fns:")
        for f in ex.fns:
            lines.append(f"  - func_name: {f.func_name}")
            lines.append(f"    input_dtype: {_dtype_yaml(f.input_dtype)}")
            lines.append(f"    output_dtype: {_dtype_yaml(f.output_dtype)}")
            if f.init is not None:
                lines.append(f"    init: [{', '.join(str(v) for v in f.init)}]")
            multiline = "\n" in f.apply
            lines.append(yaml_block("apply", f.apply, 4) if multiline else f"    apply: {f.apply}")
    return "\n".join([*lines, yaml_block("impl", ex.program, 0), "```"])


def primitive_section(d: PrimitiveDef) -> str:
    """Markdown for one primitive: signature, description, worked example."""
    return (f"## {d.name}\n\n`{d.signature}`\n\n{d.description}\n\n"
            f"Example — {d.example.explanation}:\n\n{_example_md(d.example)}\n")


def primitive_entry(d: PrimitiveDef, example: Sequence[str] = ()) -> str:
    """The proposer's YAML entry for one primitive: name, usage, description, then the
    caller's worked-example lines."""
    lines = [f"  - name: {d.name}"]
    if d.signature.strip():
        lines.append(f"    usage: {yaml_inline(d.signature.strip())}")
    if d.description.strip():
        lines.append(yaml_block("description", d.description.strip(), 4))
    return "\n".join([*lines, *example])


def primitive_reference(names: list[str] | None = None, preamble: bool = True, *,
                        style: Literal["markdown", "prompt"] = "markdown",
                        examples: Mapping[str, Sequence[str]] | None = None) -> str:
    """The primitive reference (all primitives by default).

    `markdown`: the language notes, the affine rule, one section per primitive with its
    registry example, and the idioms. `prompt`: the proposer's `primitives:` YAML list, each
    entry followed by the lines `examples[name]` (the worked example the caller chose).
    """
    chosen = primitives(names)
    if style == "prompt":
        shown = examples or {}
        return "\n".join(primitive_entry(d, shown.get(d.name, ())) for d in chosen)
    parts = []
    if preamble:
        parts.append(f"# STeP primitive reference\n\n{LANGUAGE}\n\n{_NOTATION}\n\n"
                     f"Affine rule: {AFFINE_RULE}\n")
    parts.extend(primitive_section(d) for d in chosen)
    if preamble:
        parts.append("## Idioms\n\n" + "\n\n".join(
            f"**{IDIOM_TITLES[key]}** — {text}" for key, text in IDIOMS.items()) + "\n")
    return "\n".join(parts)
