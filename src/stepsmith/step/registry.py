"""The primitive registry: typing rule, fast executor, per-element oracle and documentation of
every primitive live together (JAX-style), so docs, prompts and executors cannot drift.

A primitive is a class deriving from `Primitive` and registered with `@primitive(...)`.
`Primitive.apply` is the one place that enforces the affine rule, runs the typing rule (abstract
evaluation on types/shapes only), dispatches to the Session's executor and names the outputs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

import torch

from stepsmith.step.dims import Dim, shape_str
from stepsmith.step.dtypes import ElemType, elem_dims, elem_shape, fields_of
from stepsmith.step.errors import (
    StepAffineError,
    StepArgumentError,
    StepDtypeError,
    StepFnKindError,
    StepRankError,
    StepShapeError,
)
from stepsmith.step.execfn import FnCtx
from stepsmith.step.fn import Fn
from stepsmith.step.session import Session, current_session
from stepsmith.step.stream import Stream, SType, display

OutType = tuple[ElemType, tuple[Dim, ...]]
Fields = tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class FnSpec:
    """A fn used by a documentation example (same fields as a task YAML fn)."""

    func_name: str
    apply: str
    input_dtype: str | list[str]
    output_dtype: str | list[str]
    init: list[Any] | None = None


@dataclass(frozen=True)
class Example:
    """A small worked program: inputs (name, dtype, dims innermost first), fns, the impl body,
    and a PyTorch `reference` expression over the input tensors that the output must equal."""

    program: str
    inputs: tuple[tuple[str, str, tuple[str, ...]], ...]
    reference: str
    explanation: str
    fns: tuple[FnSpec, ...] = ()
    binding: dict[str, int] = field(default_factory=lambda: {"M": 3, "N": 4, "K": 5, "D": 6,
                                                             "E": 3})


# What a parameter's value is drawn from. The decoder, the grammar and the mutants ask these
# kinds for a domain; the primitive's typing rule then decides which values are well typed.
ParamKind = Literal[
    "fn_stateless",  # a task fn without init (Map)
    "fn_stateful",  # a task fn with init (Accum, Scan, Merge)
    "axis",  # an int dim position, 0 <= k <= rank + 1
    "axes",  # a non-empty list of consecutive dim positions
    "size",  # a dimension: a size symbol (D, N, ...) or a positive int
    "count",  # a positive int, usually a task constant such as E_value
]
#: The least value of each integer parameter kind (the language's bound): mutants never move a
#: value below it, and the literals the decoder offers start at or above it.
LOWEST_INT: dict[ParamKind, int] = {"axis": 0, "axes": 0, "size": 1, "count": 1}
#: Literal ints offered for a size or count besides the task's own names (D, E_value, ...). A
#: dim of size 1 carries nothing: no reference writes one, and small models write chains of
#: `Repeat(n=1)` and `Reshape(S=1)` until their statement budget runs out.
_LITERALS: dict[ParamKind, tuple[int, ...]] = {"size": tuple(range(2, 9)), "count": (2, 3, 4)}


def int_literals(kind: ParamKind, rank: int) -> tuple[int, ...]:
    """The literal ints a parameter of `kind` may take on a stream of `rank` (an axis names a
    dim position 0..rank+1); fn kinds take none."""
    if kind in ("axis", "axes"):
        return tuple(range(LOWEST_INT[kind], rank + 2))
    return _LITERALS.get(kind, ())


# How `.apply(...)` takes its streams: one stream; one stream or a tuple (zipped first); a
# tuple of two or more; an ordered pair; or (list of part streams, selector).
ArgForm = Literal["stream", "streams", "zip", "pair", "parts_sel"]
# What a primitive does to a stream, for analyses that group primitives (suite statistics ask
# for the shape primitives; the mutants for the one that duplicates a stream).
Category = Literal["elementwise", "reduction", "shape", "copy", "routing"]


@dataclass(frozen=True)
class Param:
    """One keyword parameter of a primitive (`step.Accum(fn=f, b=k)` has `fn` and `b`)."""

    name: str
    kind: ParamKind
    required: bool = True
    default: Any = None


@dataclass(frozen=True)
class PrimitiveDef:
    """Everything about one primitive: its class (`typing`, `impl`, `oracle`), its
    documentation and its facts."""

    name: str
    signature: str
    description: str
    example: Example
    cls: type[Primitive]
    params: tuple[Param, ...] = ()
    args: ArgForm = "stream"
    # number of output streams: an int, or the name of the count parameter that sets it
    outputs: int | str = 1
    arg_names: tuple[str, ...] = ("s",)
    category: Category = "elementwise"
    # arguments whose values the primitive ignores (only their shape counts): a program's
    # result is not computed from them (the typed decoder's ancestry of a stream)
    shape_args: tuple[str, ...] = ()

    @property
    def param_names(self) -> tuple[str, ...]:
        """The keyword names `step.<name>(...)` accepts (the allow-list checks calls with it)."""
        return tuple(p.name for p in self.params)

    @property
    def usage(self) -> str:
        """The hint an argument error ends with: the documented signature."""
        return f"usage: {self.signature}"

    def output_count(self, values: dict[str, Any]) -> int | None:
        """How many streams a call with these parameter values returns (None: not an int)."""
        if isinstance(self.outputs, int):
            return self.outputs
        param = next(p for p in self.params if p.name == self.outputs)
        n = values.get(self.outputs, param.default)
        return n if isinstance(n, int) and not isinstance(n, bool) else None


REGISTRY: dict[str, PrimitiveDef] = {}
_PrimT = TypeVar("_PrimT", bound="Primitive")


def primitive(*, signature: str, description: str, example: Example,
              params: tuple[Param, ...] = (), args: ArgForm = "stream", outputs: int | str = 1,
              arg_names: tuple[str, ...] = ("s",), category: Category = "elementwise",
              shape_args: tuple[str, ...] = (),
              ) -> Callable[[type[_PrimT]], type[_PrimT]]:
    """Class decorator registering a primitive with its documentation and facts (parameters
    with their kinds, how `.apply` takes streams, how many streams it returns, its category).

    Everything else that needs a fact about the language (allow-list, mutants, affine
    analysis, typed decoder, docs and prompt) reads it from here.
    """

    def deco(cls: type[_PrimT]) -> type[_PrimT]:
        name = cls.__name__
        if not set(shape_args) <= set(arg_names):
            raise ValueError(f"{name}: shape_args {shape_args} must name arguments of {arg_names}")
        cls.NAME = name
        REGISTRY[name] = PrimitiveDef(
            name=name, signature=signature, description=description, example=example, cls=cls,
            params=params, args=args, outputs=outputs, arg_names=arg_names, category=category,
            shape_args=shape_args,
        )
        _check_parameters(cls, REGISTRY[name])
        return cls

    return deco


def _check_parameters(cls: type[Primitive], pdef: PrimitiveDef) -> None:
    """Constructor validation from the facts: `step.P(...)` takes P's declared parameters and
    nothing else, so a misspelt keyword gets an answer naming what P takes (the class's own
    `__init__` then checks the values)."""
    init = cls.__init__
    names = pdef.param_names

    @functools.wraps(init)
    def checked(self: Primitive, *args: Any, **kw: Any) -> None:
        extra = sorted(set(kw) - set(names))
        if extra or len(args) > len(names):
            found = ", ".join(f"{k}=" for k in extra) if extra else f"{len(args)} arguments"
            raise StepArgumentError(
                f"unknown parameter(s) {found}" if extra else f"too many arguments ({found})",
                primitive=f"{pdef.name}(...)", found=found, hint=pdef.usage,
                expected=f"the parameters {', '.join(names)}" if names else "no parameters",
            )
        init(self, *args, **kw)

    setattr(cls, "__init__", checked)  # noqa: B010 - mypy forbids assigning a method


@dataclass
class Env:
    """What executors need besides the streams: the session and the output element shapes."""

    session: Session
    label: str
    dtype: torch.dtype
    ins: list[Stream]

    def ctx(self, fn: Fn, stream: SType | None = None) -> FnCtx:
        shapes = tuple(elem_shape(f, self.session.binding) for f in fields_of(fn.output_dtype))
        src = stream if stream is not None else (self.ins[0] if self.ins else "?")
        return FnCtx(primitive=self.label, source=src, out_shapes=shapes, dtype=self.dtype)

    def size(self, d: Dim, what: str) -> int:
        v = d.try_evaluate(self.session.binding)
        if v is None:
            raise StepShapeError(
                f"{what} {d} has no value: symbol(s) {', '.join(d.symbols)} are not bound in the "
                f"Session binding {self.session.binding}",
                primitive=self.label,
                hint="run the program inside step.Session(binding={...})",
            )
        return v


class Primitive:
    """Base class; subclasses define `__init__` (the paper's keyword spelling), `typing`,
    `impl` and `oracle`."""

    NAME: ClassVar[str] = "Primitive"

    # -- to override ---------------------------------------------------------------------------
    def params(self) -> str:
        """`name=value` for the declared parameters (an optional one only when not its
        default): what labels and messages show, from the registry's facts."""
        shown = []
        pdef = REGISTRY.get(self.NAME)
        for p in pdef.params if pdef else ():
            v = getattr(self, p.name, None)
            if not p.required and v == p.default:
                continue
            if p.kind in ("fn_stateless", "fn_stateful"):
                v = getattr(v, "func_name", v)
            elif p.kind == "axes" and not isinstance(v, list | tuple):
                v = repr(v)
            shown.append(f"{p.name}={list(v) if isinstance(v, list | tuple) else v}")
        return ", ".join(shown)

    def _streams(self, arg: Any) -> list[Stream]:
        """The `.apply` argument as input streams, in the form the registry declares (`args`)."""
        form, names = REGISTRY[self.NAME].args, REGISTRY[self.NAME].arg_names
        if form == "stream" or (form == "streams" and isinstance(arg, Stream)):
            return [self._one(arg, "the input")]
        items = list(arg) if isinstance(arg, list | tuple) else []
        if form in ("streams", "zip") and len(items) >= (2 if form == "zip" else 1):
            return [self._one(x, f"element {i} of the argument tuple") for i, x in enumerate(items)]
        if form == "pair" and len(items) == 2:
            return [self._one(x, f"{name} (item {i} of the pair)")
                    for i, (x, name) in enumerate(zip(items, names, strict=True))]
        if form == "parts_sel" and len(items) == 2 and isinstance(items[0], list | tuple):
            parts = [self._one(p, f"parts[{i}]") for i, p in enumerate(items[0])]
            if parts:
                return [*parts, self._one(items[1], "sel (item 1 of the pair)")]
        what = {"streams": "a stream or a tuple of streams", "zip": "a tuple of 2+ streams",
                "parts_sel": "a pair (parts, sel), parts a non-empty list of streams",
                }.get(form, f"a pair ({', '.join(names)})")
        raise StepArgumentError(f"the argument must be {what}", primitive=self.label,
                                expected=what, found=_describe_value(arg), hint=self.usage)

    def typing(self, ins: Sequence[SType]) -> list[OutType]:
        raise NotImplementedError

    def impl(self, ins: list[Stream], outs: list[OutType], env: Env) -> list[Fields]:
        raise NotImplementedError

    def oracle(self, ins: list[Stream], outs: list[OutType], env: Env) -> list[Fields]:
        raise NotImplementedError

    def _wrap(self, outs: list[Stream]) -> Any:
        return outs[0]

    # -- shared machinery ----------------------------------------------------------------------
    @property
    def label(self) -> str:
        return f"{self.NAME}({self.params()})"

    @property
    def usage(self) -> str:
        """`usage: <signature>`, the hint for a wrong `.apply` argument (from the registry)."""
        return REGISTRY[self.NAME].usage

    def _one(self, x: Any, what: str) -> Stream:
        if isinstance(x, Stream):
            return x
        raise StepArgumentError(f"{what} must be a stream", primitive=self.label,
                                expected="a Stream", found=_describe_value(x), hint=self.usage)

    def apply(self, arg: Any = None, *more: Any) -> Any:
        if more:
            raise StepArgumentError(
                f".apply takes one argument; pass several streams as a tuple, e.g. "
                f"step.{self.NAME}(...).apply((a, b))", primitive=self.label,
                found=f"{1 + len(more)} arguments", expected="one argument",
            )
        session = current_session()
        ins = self._streams(arg)
        uid = session.next_id()
        consumer = f"{self.NAME}#{uid}"
        desc = f"{self.label} [#{uid}]"
        self._check_affine(ins, desc, session)
        out_types = self.typing(ins)
        dtype = _data_dtype(ins)
        env = Env(session=session, label=self.label, dtype=dtype, ins=ins)
        runner = self.impl if session.executor == "fast" else self.oracle
        datas = runner(ins, out_types, env)
        for s in ins:
            if s.consumer is None:
                s.consumer = desc
        args = ", ".join(_short(s.name) for s in ins)
        outs = []
        for i, ((dt, shp), fields) in enumerate(zip(out_types, datas, strict=True)):
            name = f"{consumer}({args})" + (f"[{i}]" if len(out_types) > 1 else "")
            st = Stream(name, dt, shp, tuple(fields), producer=consumer)
            _check_result(self.label, st, session)
            outs.append(st)
        return self._wrap(outs)

    def _check_affine(self, ins: list[Stream], consumer: str, session: Session) -> None:
        if session.affine == "off":
            return
        seen: set[int] = set()
        for s in ins:
            before = s.consumer
            twice = id(s) in seen
            seen.add(id(s))
            if before is None and not twice:
                continue
            if twice:
                msg = (f"stream {display(s)} is passed twice to the same call {consumer}; "
                       "each input is consumed")
            else:
                msg = (f"stream {display(s)} is consumed a second time: it was already consumed "
                       f"by {before} and is now consumed by {consumer}")
            hint = (f"a stream can be consumed only once; split it first with "
                    f"`a, b = step.Copy().apply({_var_or_name(s)})` and use one copy in each place")
            if session.affine == "strict":
                err = StepAffineError(msg, primitive=self.label, hint=hint,
                                      expected="each stream consumed at most once",
                                      found="a second consumer")
                err.stream = display(s)  # attribute only: the message already names it
                raise err
            session.warnings.append(f"{msg}. Hint: {hint}")

    def __repr__(self) -> str:
        return f"step.{self.label}"


# ---------------------------------------------------------------------------------------------
# helpers shared by primitive modules


def _short(name: str) -> str:
    return name.split("(", 1)[0] if "(" in name else name


def _var_or_name(s: Stream) -> str:
    from stepsmith.step.stream import user_var_name

    return user_var_name(s) or s.name


def _describe_value(x: Any) -> str:
    if isinstance(x, list | tuple):
        inner = ", ".join(_describe_value(v) for v in list(x)[:4])
        return f"{type(x).__name__} of {len(x)} [{inner}{', ...' if len(x) > 4 else ''}]"
    if isinstance(x, Fn):
        return f"fn {x.func_name!r}"
    return type(x).__name__


def _data_dtype(ins: list[Stream]) -> torch.dtype:
    for s in ins:
        for t in s.fields:
            if t.is_floating_point():
                return t.dtype
    return torch.get_default_dtype()


def _check_result(label: str, st: Stream, session: Session) -> None:
    """The produced data must match the symbolic type (guards executors and stale bindings)."""
    want = tuple(reversed(st.shape))
    for fi, (ft, t) in enumerate(zip(fields_of(st.dtype), st.fields, strict=True)):
        full = want + elem_dims(ft)
        if t.dim() != len(full):
            raise StepShapeError(
                f"internal: produced field {fi} with {t.dim()} dims for {st.type_str()}",
                primitive=label, stream=repr(st.name),
            )
        for d, n in zip(full, t.shape, strict=True):
            v = d.try_evaluate(session.binding)
            if v is not None and v != n:
                raise StepShapeError(
                    f"the data of the result has size {n} where its type says {d} = {v} "
                    f"(tensor shape {tuple(t.shape)} for {st.type_str()}); the input data "
                    "does not match the Session binding",
                    primitive=label, stream=repr(st.name),
                )


def check_fn(prim: Primitive, fn: Any, stream: SType, *, stateful: bool) -> Fn:
    """The fn must be an Fn of the right kind whose input type equals the stream's element type."""
    if not isinstance(fn, Fn):
        raise StepArgumentError(
            "fn= must be a specialized function (an Fn from the task's fns, by its func_name)",
            primitive=prim.label, expected="an Fn", found=_describe_value(fn),
        )
    if fn.stateful != stateful:
        if stateful:
            raise StepFnKindError(
                f"fn {fn.func_name!r} is stateless (no init) but {prim.NAME} folds a state",
                primitive=prim.label, stream=display(stream),
                expected="a stateful fn (one with init)", found=f"stateless fn {fn.func_name!r}",
                hint="use a stateful fn (with init) here, or Map for a stateless fn",
            )
        raise StepFnKindError(
            f"fn {fn.func_name!r} is stateful (init {list(fn.init or [])}) but Map applies a "
            "stateless fn to each element",
            primitive=prim.label, stream=display(stream),
            expected="a stateless fn (no init)", found=f"stateful fn {fn.func_name!r}",
            hint="use Accum/Scan for a stateful fn, or a stateless fn with Map",
        )
    if fn.input_dtype != stream.dtype:
        n_fn, n_s = len(fields_of(fn.input_dtype)), len(fields_of(stream.dtype))
        hint = None
        if n_fn != n_s:
            hint = (f"the fn takes {n_fn} input field(s) but the element has {n_s}; "
                    "`.apply((a, b))` zips streams into one tuple element (one field per stream)")
        raise StepDtypeError(
            f"fn {fn.func_name!r} takes {fn.input_dtype} but the stream's element type is "
            f"{stream.dtype} (stream type {stream.type_str()})",
            primitive=prim.label, stream=display(stream),
            expected=str(fn.input_dtype), found=str(stream.dtype), hint=hint,
        )
    return fn


def given_fn(prim: Primitive, fn: Fn | None) -> Fn:
    """The `fn=` parameter as the executors use it: the typing rule, which runs first, has
    already accepted it (`check_fn`), so this only fails for an executor called directly."""
    if not isinstance(fn, Fn):
        raise StepArgumentError("fn= must be a specialized function", primitive=prim.label,
                                expected="an Fn", found=_describe_value(fn))
    return fn


def need_int(prim: Primitive, name: str, value: Any, *, low: int | None = None,
             meaning: str | None = None) -> int:
    """Validate an integer parameter (b=, a=, L entries); one with a `meaning` is required."""
    if value is None and meaning is not None:
        raise StepArgumentError(f"missing parameter {name}= ({meaning})", primitive=prim.label,
                                expected=f"{prim.NAME}({name}=k)", found=f"no {name}",
                                hint=prim.usage)
    if isinstance(value, bool) or not isinstance(value, int):
        raise StepArgumentError(
            f"parameter {name}= must be an int", primitive=prim.label,
            expected="an int", found=repr(value),
        )
    if low is not None and value < low:
        raise StepArgumentError(
            f"parameter {name}={value} is too small", primitive=prim.label,
            expected=f">= {low}", found=str(value),
        )
    return value


def check_inner(prim: Primitive, s: SType, name: str, k: int, placeholder: str) -> None:
    """A count of inner dims needs 0 < k <= rank: the outermost dim never takes part (what to
    do instead, `placeholder`, ends the message when k is one too many)."""
    if not 0 < k <= s.rank:
        raise StepRankError(
            f"{name} must satisfy 0 < {name} <= rank; stream rank is {s.rank} (shape "
            f"{shape_str(s.shape)}).{' ' + placeholder if k == s.rank + 1 else ''}",
            primitive=prim.label, stream=display(s),
            expected=f"0 < {name} <= {s.rank}", found=f"{name}={k}",
        )


def shapes_equal(a: Sequence[Dim], b: Sequence[Dim]) -> bool:
    return tuple(a) == tuple(b)  # Dim equality is structural

