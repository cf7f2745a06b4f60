"""Reading a task file: YAML (with lines) → pydantic ``TaskSpec`` → cross-field checks → ``Task``.

Every rule violation raises ``TaskFormatError`` naming the file, the line and the field, e.g.
``bench/bmm/x.yaml:14: field 'fns[0].input_dtype': unknown dtype 'fp33': expected fp32, ...``.
"""

from __future__ import annotations

import ast
import builtins
import keyword
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import TYPE_CHECKING, Any

import torch
from pydantic import ValidationError

from . import dtypes as dt
from .bindings import Binding, Ctx, requested_bindings, resolve_values, symbol_objects
from .errors import TaskFormatError
from .schema import TaskSpec, Tolerance
from .snippets import assigned_names, exec_code, parse_code, split_expression
from .yamlsrc import Locator, Path, format_path, parse_yaml

if TYPE_CHECKING:
    from .instance import Instance

RESERVED = {"step", "torch", "ctx", "input_data", "input", "state"}
_BUILTINS = set(dir(builtins))


@dataclass(frozen=True)
class StreamInfo:
    """Parsed dtype/dims of an input, parameter or output."""

    name: str
    dtype: dt.DType
    dims: tuple[dt.DimExpr, ...]
    path: Path


@dataclass(frozen=True)
class FnInfo:
    """Parsed dtypes of one fn."""

    func_name: str
    input_dtype: dt.DType
    output_dtype: dt.DType
    path: Path


class Task:
    """A validated task: the spec plus parsed types, line locator and bindings."""

    def __init__(self, spec: TaskSpec, loc: Locator, text: str, source_path: FsPath | None,
                 inputs: list[StreamInfo], parameters: list[StreamInfo], fns: list[FnInfo],
                 outputs: list[StreamInfo], symbols: list[str]) -> None:
        self.spec = spec
        self.locator = loc
        self.text = text
        self.source_path = source_path
        self.input_infos = inputs
        self.parameter_infos = parameters
        self.fn_infos = fns
        self.output_infos = outputs
        self.symbols = symbols
        self._bindings: list[Binding] | None = None

    # -- identity -----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.spec.test_name

    @property
    def group(self) -> str:
        """The ``group`` field, else the folder the file is in, else ``"misc"``."""
        if self.spec.group:
            return self.spec.group
        return self.source_path.parent.name if self.source_path else "misc"

    @property
    def description(self) -> str:
        return self.spec.description

    @property
    def impl(self) -> str | None:
        return self.spec.impl

    @property
    def tolerance(self) -> Tolerance:
        return self.spec.tolerance

    @property
    def input_names(self) -> list[str]:
        """Parameter names of the program function, in order."""
        return [s.name for s in self.input_infos]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self.output_infos]

    def __repr__(self) -> str:
        return f"Task({self.name!r}, group={self.group!r})"

    def line_of(self, field: str | Path) -> int | None:
        """1-based line of a field given as a path tuple or a dotted string (``fns[0].apply``)."""
        if isinstance(field, str):
            path: list[str | int] = []
            for part in field.replace("]", "").replace("[", ".").split("."):
                if part:
                    path.append(int(part) if part.isdigit() else part)
            field = tuple(path)
        return self.locator.line(field)

    # -- bindings and instances ------------------------------------------------------------------
    def global_env(self, values: dict[str, int]) -> dict[str, Any]:
        """Namespace after running ``global`` with ``values`` pre-seeded (see ``bindings``)."""
        from stepsmith import step  # lazily: `import stepsmith.tasks` stays light

        env: dict[str, Any] = {"torch": torch, "step": step, "ctx": Ctx()}
        env.update(symbol_objects(list(dict.fromkeys([*self.symbols, *values]))))
        env.update({f"{k}_value": v for k, v in values.items()})
        if self.spec.global_:
            exec_code(self.spec.global_, env, ("global",), self.locator, "global")
        return env

    def _env_for(self, base: dict[str, int], over: dict[str, int]) -> tuple[dict[str, Any], dict[str, int]]:
        env = self.global_env(base)
        values, missing = resolve_values(self.symbols, base, over, env)
        if missing:
            uses = self._symbol_uses(missing[0])
            raise self.locator.error(
                uses, f"size symbol '{missing[0]}' has no value: set it in `global` "
                      f"(`{missing[0]}_value = 3` and `ctx[{missing[0]}] = {missing[0]}_value`) "
                      f"or in `bindings`")
        bad = {k: v for k, v in values.items() if isinstance(v, bool) or not isinstance(v, int) or v < 1}
        if bad:
            k = next(iter(bad))
            where = ("bindings",) if k in over else ("global",)
            raise self.locator.error(where, f"size symbol '{k}' must be a positive integer, "
                                            f"found {bad[k]!r}")
        for k, v in values.items():  # make the namespace agree with the final values
            env[f"{k}_value"] = v
            env["ctx"][k] = v
        env.update(symbol_objects(list(values)))
        return env, values

    def _symbol_uses(self, name: str) -> Path:
        for info in [*self.input_infos, *self.parameter_infos, *self.output_infos]:
            if any(name in d.symbols for d in info.dims):
                return (*info.path, "dims")
            if name in dt.dtype_symbols(info.dtype):
                return (*info.path, "dtype")
        for f in self.fn_infos:
            if name in dt.dtype_symbols(f.input_dtype) + dt.dtype_symbols(f.output_dtype):
                return f.path
        return ()

    def bindings(self) -> list[Binding]:
        """Bindings to verify at; the first is the paper's (M=5, N=7, K=9, D=16, seed 42)."""
        if self._bindings is None:
            out = []
            for label, base, seed, over in requested_bindings(self.spec.bindings):
                _, values = self._env_for(base, over)
                out.append(Binding(label=label, values=values, seed=seed))
            self._bindings = out
        return list(self._bindings)

    def instantiate(self, binding: Binding | None = None,
                    dtype: torch.dtype = torch.float64) -> Instance:
        """Data, reference outputs and program namespace for one binding (default: the paper's).

        float64 is the default because the verifier compares in float64; data is drawn in
        float64 either way, so a float32 instance holds the same values rounded."""
        from .instance import build_instance

        return build_instance(self, binding or self.bindings()[0], dtype)


# ------------------------------------------------------------------------------------------------
def _validation_error(exc: ValidationError, loc: Locator) -> TaskFormatError:
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
        msg = f"unknown field '{key}' (check the spelling; allowed fields are listed in the task format docs)"
    else:
        msg = f"{err['msg']} (found {err.get('input')!r})"
    more = len(exc.errors()) - 1
    if more:
        msg += f" [and {more} more problem(s)]"
    e = loc.error(path_t, msg)
    e.field = format_path(path_t) or None
    return e


def _parse_stream(entry: Any, path: Path, loc: Locator, *, is_output: bool) -> StreamInfo:
    try:
        dtype = dt.parse_dtype(entry.dtype)
    except dt.DTypeSyntaxError as exc:
        raise loc.error((*path, "dtype"), str(exc)) from None
    if not is_output and isinstance(dtype, dt.TupleT):
        raise loc.error((*path, "dtype"), f"an input/parameter must have one dtype, not a tuple "
                                          f"(found {entry.dtype!r}); use one input per field")
    dims = []
    for i, d in enumerate(entry.dims):
        try:
            dims.append(dt.parse_dim(d))
        except dt.DTypeSyntaxError as exc:
            raise loc.error((*path, "dims", i), str(exc)) from None
    return StreamInfo(entry.name, dtype, tuple(dims), path)


def _check_identifier(name: str, path: Path, loc: Locator, what: str) -> None:
    if not name.isidentifier() or keyword.iskeyword(name):
        raise loc.error(path, f"{what} {name!r} must be a Python identifier")
    if name in RESERVED:
        raise loc.error(path, f"{what} {name!r} is reserved (reserved: {', '.join(sorted(RESERVED))})")


def _check_fn(spec: Any, path: Path, loc: Locator) -> FnInfo:
    _check_identifier(spec.func_name, (*path, "func_name"), loc, "func_name")
    parsed = {}
    for key in ("input_dtype", "output_dtype"):
        try:
            parsed[key] = dt.parse_dtype(getattr(spec, key))
        except dt.DTypeSyntaxError as exc:
            raise loc.error((*path, key), str(exc)) from None
    out_fields = dt.fields(parsed["output_dtype"])
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
                if v in ("zeros", "ones") and not isinstance(f, dt.BufferT):
                    raise loc.error((*path, "init", i), f"init {v!r} makes a Buffer but output "
                                                        f"field {i} is {f}; use 0, 1, -1 or -inf")
                if v not in ("zeros", "ones", "-inf", "inf"):
                    try:
                        float(v)
                    except ValueError:
                        raise loc.error((*path, "init", i), f"unknown init value {v!r}: expected "
                                        f"0, 1, -1, -inf, inf, zeros or ones") from None
    return FnInfo(spec.func_name, parsed["input_dtype"], parsed["output_dtype"], path)


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
    inputs, params, outputs = [], [], []
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
                if not isinstance(info.dtype, dt.MultihotT) and not (
                        isinstance(info.dtype, dt.BufferT) and isinstance(info.dtype.elem, dt.MultihotT)):
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
    fns = []
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
        n_fields = len(dt.fields(info.dtype))
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
            symbols.extend(d.symbols)
        symbols.extend(dt.dtype_symbols(info.dtype))
    for f in fns:
        symbols.extend(dt.dtype_symbols(f.input_dtype) + dt.dtype_symbols(f.output_dtype))
    ctx_keys: list[str] = []
    if spec.global_:  # `ctx[G] = ...` in global declares G a size symbol even if no dims use it
        gtree = parse_code(spec.global_, ("global",), loc, what="global")
        ctx_keys = [n.slice.id for n in ast.walk(gtree) if isinstance(n, ast.Subscript)
                    and isinstance(n.value, ast.Name) and n.value.id == "ctx"
                    and isinstance(n.slice, ast.Name)]
    symbols = list(dict.fromkeys(symbols + ctx_keys))
    for s in symbols:
        if s in RESERVED or s in names or s in seen_fn:
            raise loc.error((), f"size symbol {s!r} clashes with a reserved name, stream or fn")
    _check_bindings(spec, loc)
    global_names: set[str] = set()
    if spec.global_:
        global_names = assigned_names(parse_code(spec.global_, ("global",), loc, what="global"))
    known = ({"step"} | set(names) | set(seen_fn) | set(symbols) | {f"{s}_value" for s in symbols}
             | {f"{s}_value" for s in ("M", "N", "K", "D")} | {"M", "N", "K", "D"} | global_names)
    known -= {p.name for p in spec.parameters}  # programs get parameters only through fns
    _check_impl(spec, loc, known)
    return Task(spec, loc, text, source_path, inputs, params, fns, outputs, symbols)


def load_task(path_or_text: str | FsPath, *, check_bindings: bool = True) -> Task:
    """Load a task from a path or YAML text; raises ``TaskFormatError`` (file, line, field)."""
    source_path: FsPath | None = None
    if isinstance(path_or_text, FsPath) or ("\n" not in path_or_text and (
            path_or_text.endswith((".yaml", ".yml")) or FsPath(path_or_text).is_file())):
        source_path = FsPath(path_or_text)
        try:
            text = source_path.read_text(encoding="utf-8")
        except OSError as exc:
            raise TaskFormatError(f"cannot read task file: {exc.strerror}", source=str(source_path)) from None
        source = str(source_path)
    else:
        text, source = str(path_or_text), "<text>"
    data, loc = parse_yaml(text, source)
    if not isinstance(data, dict):
        raise TaskFormatError(f"a task file must be a mapping (test_name: ..., inputs: ...), "
                              f"found {type(data).__name__}", source=source, line=1)
    try:
        spec = TaskSpec.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc, loc) from None
    task = validate(spec, loc, text, source_path)
    if check_bindings:
        task.bindings()  # runs `global` once per binding: unbound symbols fail at load time
    return task
