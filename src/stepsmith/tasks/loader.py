"""Reading a task file: YAML (with lines) → pydantic ``TaskSpec`` → cross-field checks → ``Task``.

The cross-field rules, checked after the schema: dtype grammar, identifiers, fn ``init`` vs
output fields, multihot ``data_gen``, one ``data_transform`` per tuple field, snippet syntax, fns
and names used by ``impl``, binding values. Every violation raises ``TaskFormatError`` naming
the file, the line and the field, e.g.
``bench/bmm/x.yaml:14: field 'fns[0].input_dtype': unknown dtype 'fp33': expected fp32, ...``.
"""

from __future__ import annotations

import ast
import builtins
import difflib
import keyword
from collections.abc import Callable
from pathlib import Path as FsPath
from typing import Any, TypeVar

from pydantic import ValidationError

from stepsmith.step.dtypes import Buffer, TupleType, fields_of

from . import dtypes as dt
from .bindings import ALWAYS_BOUND, check_binding_labels
from .errors import TaskFormatError
from .schema import DataGen, FnSpec, OutputSpec, StreamSpec, TaskSpec, Tolerance
from .snippets import assigned_names, parse_code, split_expression
from .task import RESERVED, FnInfo, StreamInfo, Task
from .yamlsrc import Locator, Path, format_path, parse_yaml

__all__ = ["FnInfo", "StreamInfo", "Task", "load_task"]

_BUILTINS = set(dir(builtins))
T = TypeVar("T")


def _parsed(parse: Callable[[Any], T], value: Any, path: Path, loc: Locator) -> T:
    """``parse(value)`` (a dtype or a dim), its syntax error placed at ``path``'s line."""
    try:
        return parse(value)
    except dt.DTypeSyntaxError as exc:
        raise loc.error(path, str(exc)) from None


def _allowed_fields(path: Path) -> list[str]:
    """Field names allowed at ``path`` (the mapping that holds an unknown key)."""
    section = path[0] if path else None
    model: Any = {"inputs": StreamSpec, "parameters": StreamSpec, "fns": FnSpec,
                  "outputs": OutputSpec, "tolerance": Tolerance}.get(str(section), TaskSpec)
    if section in ("inputs", "parameters") and "data_gen" in path[1:]:
        model = DataGen
    names = [f.alias or name for name, f in model.model_fields.items()]
    return names + (["min", "max", "scale"] if model is StreamSpec else [])


def validation_error(exc: ValidationError, loc: Locator) -> TaskFormatError:
    """Turn the first pydantic error into a ``TaskFormatError`` at the field's line."""
    err = exc.errors()[0]
    raw = tuple(err["loc"])
    path: list[str | int] = []
    for part in raw:
        candidate = (*path, part)
        if candidate in loc.lines or (err["type"] == "missing" and part == raw[-1]):
            path.append(part)
        elif isinstance(part, str) and not path and part in ("global",):
            path.append(part)
    path_t = tuple(path)
    kind = err["type"]
    key = raw[-1] if raw else ""
    if kind == "missing":
        parent = format_path(path_t[:-1]) or "the task"
        msg = f"missing required field '{key}' in {parent}"
    elif kind == "extra_forbidden":
        allowed = _allowed_fields(path_t[:-1])
        close = difflib.get_close_matches(str(key), allowed, n=1)
        msg = (f"unknown field '{key}'" + (f" (did you mean '{close[0]}'?)" if close else "")
               + f"; allowed here: {', '.join(allowed)}")
    else:
        msg = f"{err['msg']} (found {err.get('input')!r})"
    more = len(exc.errors()) - 1
    if more:
        msg += f" [and {more} more problem(s)]"
    e = loc.error(path_t, msg)
    e.field = format_path(path_t) or None
    return e


def _parse_stream(entry: Any, path: Path, loc: Locator, *, is_output: bool) -> StreamInfo:
    dtype = _parsed(dt.parse_dtype, entry.dtype, (*path, "dtype"), loc)
    if not is_output and isinstance(dtype, TupleType):
        raise loc.error((*path, "dtype"), f"an input/parameter must have one dtype, not a tuple "
                                          f"(found {entry.dtype!r}); use one input per field")
    dims = tuple(_parsed(dt.parse_dim, d, (*path, "dims", i), loc) for i, d in enumerate(entry.dims))
    return StreamInfo(entry.name, dtype, dims, path)


def _check_identifier(name: str, path: Path, loc: Locator, what: str) -> None:
    if not name.isidentifier() or keyword.iskeyword(name):
        raise loc.error(path, f"{what} {name!r} must be a Python identifier")
    if name in RESERVED:
        raise loc.error(path, f"{what} {name!r} is reserved (reserved: {', '.join(sorted(RESERVED))})")


def _check_fn(spec: Any, path: Path, loc: Locator) -> FnInfo:
    _check_identifier(spec.func_name, (*path, "func_name"), loc, "func_name")
    in_t, out_t = (_parsed(dt.parse_dtype, getattr(spec, key), (*path, key), loc)
                   for key in ("input_dtype", "output_dtype"))
    out_fields = fields_of(out_t)
    tree = parse_code(spec.apply, (*path, "apply"), loc, as_body=True, what=f"fn {spec.name!r} apply")
    uses_state = any(isinstance(n, ast.Name) and n.id == "state" for n in ast.walk(tree))
    if spec.init is None and uses_state:
        raise loc.error((*path, "apply"), f"fn {spec.name!r} reads state[...] but has no init; "
                                          f"a stateful fn needs `init:` (one value per output field)")
    if spec.init is not None:
        if len(spec.init) != len(out_fields):
            raise loc.error((*path, "init"), f"fn {spec.name!r} has {len(out_fields)} output field(s) "
                                             f"({spec.output_dtype}) but init has {len(spec.init)} "
                                             f"value(s): {spec.init}")
        for i, (v, f) in enumerate(zip(spec.init, out_fields, strict=True)):
            if isinstance(v, str):
                if v in ("zeros", "ones") and not isinstance(f, Buffer):
                    raise loc.error((*path, "init", i), f"init {v!r} makes a Buffer but output "
                                                        f"field {i} is {f}; use 0, 1, -1 or -inf")
                if v not in ("zeros", "ones", "-inf", "inf"):
                    try:
                        float(v)
                    except ValueError:
                        raise loc.error((*path, "init", i), f"unknown init value {v!r}: expected "
                                        f"0, 1, -1, -inf, inf, zeros or ones") from None
    return FnInfo(spec.func_name, in_t, out_t, path)


def _check_impl(spec: TaskSpec, loc: Locator, known: set[str]) -> None:
    if spec.impl is None or not spec.impl.strip():
        return
    tree = parse_code(spec.impl, ("impl",), loc, what="impl")
    local = assigned_names(tree)
    fn_names = {f.func_name for f in spec.fns}
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "fn" and isinstance(node.value, ast.Name):
            name = node.value.id
            if name not in fn_names and name not in local:
                defined = ", ".join(sorted(fn_names)) or "none"
                raise loc.error(("impl",), f"impl uses fn {name!r} but no entry of `fns` has "
                                           f"func_name {name!r} (defined: {defined})",
                                offset=node.value.lineno)
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            if node.id in known or node.id in local or node.id in _BUILTINS:
                continue
            hint = (" — no entry of `fns` has this func_name" if node.id.startswith("fn_")
                    else " — not an input, fn, size symbol or <SYM>_value")
            raise loc.error(("impl",), f"impl uses undefined name {node.id!r}{hint}",
                            offset=node.lineno)


def _check_bindings(spec: TaskSpec, loc: Locator) -> None:
    entries = spec.bindings
    if entries is None:
        return
    items = [((), entries)] if isinstance(entries, dict) else [((i,), e) for i, e in enumerate(entries)]
    for sub, entry in items:
        for key, value in entry.items():
            path = ("bindings", *sub, key)
            if key == "label":
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise loc.error(path, f"binding value of '{key}' must be an integer, found {value!r}")
            if key != "seed" and not key.isidentifier():
                raise loc.error(path, f"binding key {key!r} is not a size symbol name")


def validate(spec: TaskSpec, loc: Locator, text: str, source_path: FsPath | None) -> Task:
    """Cross-field checks on a schema-valid spec; returns the ``Task``."""
    names: dict[str, Path] = {}
    inputs: list[StreamInfo] = []
    params: list[StreamInfo] = []
    outputs: list[StreamInfo] = []
    for field, out in (("inputs", inputs), ("parameters", params)):
        for i, entry in enumerate(getattr(spec, field)):
            path = (field, i)
            _check_identifier(entry.name, (*path, "name"), loc, "stream name")
            if entry.name in names:
                raise loc.error((*path, "name"), f"name {entry.name!r} is already used by "
                                                 f"{format_path(names[entry.name])}")
            names[entry.name] = path
            info = _parse_stream(entry, path, loc, is_output=False)
            gen = entry.data_gen
            if gen.kind == "multihot":
                if not dt.is_multihot(fields_of(info.dtype)[0]):
                    raise loc.error((*path, "data_gen"), f"data_gen multihot needs a Multihot "
                                                         f"dtype, found {entry.dtype!r}")
                lo, hi = gen.min if gen.min is not None else 1, gen.max if gen.max is not None else 1
                if not 0 <= lo <= hi:
                    raise loc.error((*path, "data_gen"), f"multihot needs 0 <= min <= max, "
                                                         f"found min={lo}, max={hi}")
            elif gen.min is not None or gen.max is not None:
                raise loc.error((*path, "data_gen"), f"min/max only apply to data_gen multihot, "
                                                     f"not {gen.kind}")
            out.append(info)
    fns: list[FnInfo] = []
    seen_fn: dict[str, int] = {}
    for i, f in enumerate(spec.fns):
        if f.func_name in seen_fn:
            raise loc.error(("fns", i, "func_name"), f"func_name {f.func_name!r} is already "
                                                     f"defined by fns[{seen_fn[f.func_name]}]")
        if f.func_name in names:
            raise loc.error(("fns", i, "func_name"), f"func_name {f.func_name!r} clashes with "
                                                     f"the stream {format_path(names[f.func_name])}")
        seen_fn[f.func_name] = i
        fns.append(_check_fn(f, ("fns", i), loc))
    for i, o in enumerate(spec.outputs):
        info = _parse_stream(o, ("outputs", i), loc, is_output=True)
        n_fields = len(fields_of(info.dtype))
        if len(o.data_transform) != n_fields:
            raise loc.error(("outputs", i, "data_transform"),
                            f"output {o.name!r} has {n_fields} field(s) ({o.dtype}) but "
                            f"data_transform has {len(o.data_transform)} snippet(s); give one "
                            f"PyTorch snippet per field")
        for j, snippet in enumerate(o.data_transform):
            split_expression(snippet, ("outputs", i, "data_transform", j), loc)
        outputs.append(info)
    symbols: list[str] = []
    for info in [*inputs, *params, *outputs]:
        for d in info.dims:
            symbols.extend(dt.dim_symbols(d))
        symbols.extend(dt.dtype_symbols(info.dtype))
    for fn_info in fns:
        symbols.extend(dt.dtype_symbols(fn_info.input_dtype) + dt.dtype_symbols(fn_info.output_dtype))
    gtree = parse_code(spec.global_ or "", ("global",), loc, what="global")
    # `ctx[G] = ...` in global declares G a size symbol even if no dims use it
    ctx_keys = [n.slice.id for n in ast.walk(gtree) if isinstance(n, ast.Subscript)
                and isinstance(n.value, ast.Name) and n.value.id == "ctx"
                and isinstance(n.slice, ast.Name)]
    symbols = list(dict.fromkeys(symbols + ctx_keys))
    for s in symbols:
        if s in RESERVED or s in names or s in seen_fn:
            raise loc.error((), f"size symbol {s!r} clashes with a reserved name, stream or fn")
    _check_bindings(spec, loc)
    sizes = {*symbols, *ALWAYS_BOUND}
    known = ({"step"} | set(names) | set(seen_fn) | sizes | {f"{s}_value" for s in sizes}
             | assigned_names(gtree))
    known -= {p.name for p in spec.parameters}  # programs get parameters only through fns
    _check_impl(spec, loc, known)
    return Task(spec, loc, text, source_path, inputs, params, fns, outputs, symbols)


def _looks_like_path(text: str) -> bool:
    """A one-line string naming a YAML file or an existing path (else it is YAML text)."""
    if "\n" in text:
        return False
    if text.endswith((".yaml", ".yml")):
        return True
    try:
        return FsPath(text).exists()
    except (OSError, ValueError):  # e.g. a long one-line YAML document: not a file name
        return False


def load_task(path_or_text: str | FsPath, *, source: str | None = None) -> Task:
    """Load a task from a path or YAML text; raises ``TaskFormatError`` (file, line, field).

    Runs none of the file's code (``global``, fn bodies, references): a task file is code, and
    rendering a task (``prompt``, ``tasks show``, ``bench --estimate``) must not execute it.
    ``Task.bindings()`` / ``Task.instantiate()`` run it, which the verifier does in a sandboxed
    worker. ``source`` names YAML text in error messages (a worker loads a file's text, and its
    errors should still name the file, not ``<text>``).
    """
    if not isinstance(path_or_text, str | FsPath):
        raise TypeError(f"load_task expects a path or YAML text, found {type(path_or_text).__name__}")
    source_path: FsPath | None = None
    if isinstance(path_or_text, FsPath) or _looks_like_path(path_or_text):
        source_path = FsPath(path_or_text)
        try:
            text = source_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise TaskFormatError(f"cannot read task file: {why}", source=str(source_path)) from None
        source = str(source_path)
    else:
        text, source = str(path_or_text), source or "<text>"
    data, loc = parse_yaml(text, source)
    if not isinstance(data, dict):
        raise TaskFormatError(f"a task file must be a mapping (test_name: ..., inputs: ...), "
                              f"found {type(data).__name__}", source=source, line=1)
    try:
        spec = TaskSpec.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, loc) from None
    task = validate(spec, loc, text, source_path)
    check_binding_labels(spec.bindings, loc)
    task.check_sizes()  # unbound symbols fail at load time, without running `global`
    return task
