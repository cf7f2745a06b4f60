"""Render a task for a prompt: the structural IR (YAML) or, for the no-IR baseline, a Python scaffold.

What of a task a model may see (`task_ir`) is defined once in `stepsmith.demos.view`, shared
with the demonstrations the loop stores; this module adds the compact and scaffold renderings.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

import yaml

from stepsmith.demos.view import (
    HIDDEN_FIELDS,
    BlockDumper,
    dump_yaml,
    strip_fields,
    task_ir,
    task_text,
)

__all__ = [
    "HIDDEN_FIELDS",
    "task_ir",
    "task_text",
    "strip_fields",
    "ir_document",
    "python_scaffold",
    "input_names",
    "dump_yaml",
    "dtype_text",
    "compact_ir",
    "short_description",
]


def ir_document(ir: str) -> dict[str, Any]:
    """Parse IR YAML back into a dict (for rendering a demonstration as a Python scaffold)."""
    try:
        document = yaml.safe_load(ir)
    except yaml.YAMLError:
        return {}
    return document if isinstance(document, dict) else {}


class _CompactDumper(BlockDumper):
    """Like `BlockDumper`, plus one-line mappings for stream entries (`{name, dtype, dims}`)."""


def _dict_representer(dumper: yaml.SafeDumper, data: dict) -> yaml.MappingNode:
    flow = (
        "apply" not in data
        and "data_transform" not in data
        and all(
            isinstance(v, str | int | float)
            and "\n" not in str(v)
            or isinstance(v, list)
            and all(isinstance(x, str | int | float) for x in v)
            for v in data.values()
        )
    )
    return dumper.represent_mapping("tag:yaml.org,2002:map", data, flow_style=flow)


_CompactDumper.add_representer(dict, _dict_representer)

_DROPPED_IN_COMPACT = {"data_gen", "min", "max", "scale", "description"}


def short_description(text: str, limit: int = 200) -> str:
    """The first clause of a description, without a leading `primitive: X.` / `idiom: X.` tag."""
    text = " ".join(str(text).split())
    text = re.sub(r"^(primitive|idiom)\s*:\s*[^.]*\.\s*", "", text, flags=re.IGNORECASE)
    match = re.search(r"(?<=[a-z0-9\)\]])(\.\s|:\s|;\s)", text)
    if match is not None:
        text = text[: match.start()]
    return text[:limit].rstrip(" ,;:.")


def compact_ir(ir: str) -> str:
    """A shorter rendering of an IR for worked examples: no data generators, fn display names
    or per-stream descriptions, and one line per stream entry. Falls back to `ir` unchanged."""
    document = ir_document(ir)
    if not document:
        return ir
    out: dict[str, Any] = {}
    for key, value in document.items():
        if key in ("inputs", "parameters", "outputs", "fns") and isinstance(value, list):
            entries = []
            for entry in value:
                if not isinstance(entry, dict):
                    entries.append(entry)
                    continue
                drop = _DROPPED_IN_COMPACT | ({"name"} if key == "fns" else set())
                entries.append({k: v for k, v in entry.items() if k not in drop})
            out[key] = entries
        elif key == "description" and isinstance(value, str):
            out[key] = short_description(value)
        else:
            out[key] = value
    return yaml.dump(
        out, Dumper=_CompactDumper, sort_keys=False, allow_unicode=True, width=100
    ).rstrip()


# --------------------------------------------------------------------------------------------
# Python scaffold (the "without structural IR" baseline)
# --------------------------------------------------------------------------------------------

_BUFFER = re.compile(r"^\s*Buffer\(\s*(\w+)\s*,\s*\[(.*)\]\s*\)\s*$")
_MULTIHOT = re.compile(r"^\s*Multihot\(\s*(\w+)\s*,\s*(\w+)\s*\)\s*$")


def input_names(document: dict[str, Any]) -> list[str]:
    """Names of the input streams (the impl's parameters), in order."""
    return [
        str(entry.get("name")) for entry in document.get("inputs") or [] if isinstance(entry, dict)
    ]


def _tensor_shape(dtype: Any, dims: list[Any]) -> str:
    """Data layout of a stream: reversed(dims) + reversed(buffer shape) (+ (E,) for Multihot)."""
    shape = [str(d) for d in reversed(dims or [])]
    if isinstance(dtype, str):
        buffer = _BUFFER.match(dtype)
        multihot = _MULTIHOT.match(dtype)
        if buffer:
            shape += [s.strip() for s in reversed(buffer.group(2).split(",")) if s.strip()]
        elif multihot:
            shape.append(multihot.group(2))
    return "(" + ", ".join(shape) + ("," if len(shape) == 1 else "") + ")"


def dtype_text(dtype: Any) -> str:
    if isinstance(dtype, list):
        return "(" + ", ".join(str(d) for d in dtype) + ")"
    return str(dtype)


def _stream_line(entry: dict[str, Any], compact: bool = False) -> str:
    dims = entry.get("dims") or []
    dtype = entry.get("dtype")
    rank = max(len(dims) - 1, 0)
    gen = entry.get("data_gen")
    gen_text = gen.get("kind") if isinstance(gen, dict) else gen
    parts = [
        f"{entry.get('name')}: stream of {dtype_text(dtype)}, rank {rank}, "
        f"shape [{', '.join(str(d) for d in dims)}] (innermost first)"
    ]
    if isinstance(dtype, list):
        parts.append("tuple: one tensor per field")
    else:
        parts.append(f"data tensor {_tensor_shape(dtype, dims)}")
    if gen_text and not compact:
        parts.append(f"data {gen_text}")
    return "; ".join(parts)


def _fn_def(fn: dict[str, Any]) -> str:
    """A fn as a Python definition, with its typing in a comment."""
    name = fn.get("func_name") or fn.get("name")
    init = fn.get("init")
    signature = f"def {name}(state, input):" if init is not None else f"def {name}(input):"
    kind = f"stateful, init {init}" if init is not None else "stateless"
    comment = (
        f"    # {fn.get('name')}: {kind}; input {dtype_text(fn.get('input_dtype'))}"
        f" -> output {dtype_text(fn.get('output_dtype'))}"
    )
    body = str(fn.get("apply") or "pass")
    if not re.search(r"^\s*return\b", body, re.MULTILINE) and "\n" not in body.strip():
        body = "return " + body.strip()
    return "\n".join([signature, comment, textwrap.indent(body.strip("\n"), "    ")])


def python_scaffold(
    document: dict[str, Any], impl: str | None = None, *, compact: bool = False
) -> str:
    """The task as a Python test file; `impl` fills the function body (for demonstrations).

    `compact` (worked examples in the reference) drops the imports, the data generators and the
    long description, keeping the fns, the signature with shapes, the body and the reference.
    """
    lines: list[str] = [] if compact else ["import torch", "from stepsmith import step", ""]
    globals_text = document.get("global")
    if isinstance(globals_text, list):
        globals_text = "\n".join(str(g) for g in globals_text)
    if globals_text:
        lines += ["# Setup run before everything (its names are visible everywhere):"]
        lines += [str(globals_text).strip(), ""]
    symbols = _symbols(document)
    if symbols and not compact:
        lines.append(
            f"# Size symbols {', '.join(symbols)} are step.Dim values; "
            f"{', '.join(s + '_value' for s in symbols)} are their integers."
        )
    for entry in document.get("parameters") or []:
        lines.append(
            f"# Parameter input_data['{entry.get('name')}']: {dtype_text(entry.get('dtype'))} "
            f"tensor {_tensor_shape(entry.get('dtype'), entry.get('dims') or [])}"
        )
    fns = [fn for fn in document.get("fns") or [] if isinstance(fn, dict)]
    if fns:
        lines += ["", "# Specialized functions (already defined; pass them as fn=...):"]
        for fn in fns:
            lines += [_fn_def(fn), ""]
    names = input_names(document)
    outputs = [o for o in document.get("outputs") or [] if isinstance(o, dict)]
    description = str(document.get("description") or "Compute the outputs below.").strip()
    if compact:
        description = short_description(description)
    doc = [description, "", "Args:"]
    doc += [
        "    " + _stream_line(e, compact)
        for e in document.get("inputs") or []
        if isinstance(e, dict)
    ]
    doc += ["Returns:"]
    doc += ["    " + _stream_line(o, compact) for o in outputs]
    if len(outputs) > 1:
        doc.append("    (return them as a tuple in this order)")
    lines += ["", f"def impl({', '.join(names)}):"]
    lines.append(textwrap.indent('"""' + "\n".join(doc).rstrip() + '\n"""', "    "))
    if impl is None:
        lines.append("    ...  # write the body with STeP primitives")
    else:
        lines.append(textwrap.indent(impl.rstrip(), "    "))
    lines += ["", "", "def test_impl(input_data):"]
    if not compact:
        lines.append(
            "    # input_data[name] holds each input's tensor in the layout above; "
            "the program gets streams"
        )
        lines.append(f"    outputs = impl({', '.join(names)})")
    for output in outputs:
        for index, snippet in enumerate(output.get("data_transform") or []):
            snippet_lines = [s for s in str(snippet).strip().split("\n") if s.strip()]
            if not snippet_lines:
                continue
            field = f"_{index}" if len(output.get("data_transform") or []) > 1 else ""
            lines += ["    " + s for s in snippet_lines[:-1]]
            lines.append(f"    expected_{output.get('name')}{field} = {snippet_lines[-1].strip()}")
    if not compact:
        lines.append("    # each output stream's data must equal its expected tensor")
        return "\n".join(lines)
    text = "\n".join(line for line in lines if not line.startswith("# Specialized functions"))
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n")


def _symbols(document: dict[str, Any]) -> list[str]:
    """Size symbols used in dims and dtypes, in a stable order."""
    found: list[str] = []
    sections = [document.get(k) or [] for k in ("inputs", "parameters", "outputs")]
    for section in sections:
        for entry in section:
            if not isinstance(entry, dict):
                continue
            texts = [str(d) for d in entry.get("dims") or []] + [str(entry.get("dtype"))]
            for text in texts:
                for token in re.findall(r"\b[A-Z]\w*\b", text):
                    if token not in found and token not in ("Buffer", "Multihot"):
                        found.append(token)
    return found
