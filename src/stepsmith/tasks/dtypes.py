"""The task files' view of dtypes and dims: what a loaded task records about its streams.

There is one dtype grammar, the language's (`stepsmith.step.dtypes`); this module reads task
text with it and keeps the subset a task file may use — ``fp32`` scalars, and dims that are a
positive integer times size symbols (``K``, ``1``, ``N*K``) — as small values that evaluate
under a binding without building any STeP object; ``to_step`` converts them back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from stepsmith.step import dtypes as sd
from stepsmith.step.dims import Dim
from stepsmith.step.errors import StepError

SCALAR_NAMES = ("fp32",)


class DTypeSyntaxError(ValueError):
    """A dtype or dim string does not follow the grammar (the loader adds file/line/field)."""


@dataclass(frozen=True)
class DimExpr:
    """A product of an integer coefficient and size symbols, e.g. ``N*K`` or ``2*D``."""

    coef: int
    symbols: tuple[str, ...]

    def evaluate(self, values: Mapping[str, int]) -> int:
        """Integer value under a binding; raises KeyError naming a missing symbol."""
        out = self.coef
        for s in self.symbols:
            if s not in values:
                raise KeyError(s)
            out *= int(values[s])
        return out

    def to_step(self, symbols: Mapping[str, Any]) -> Any:
        """The equivalent ``step.Dim`` (``symbols`` maps names to ``step.Dim`` objects)."""
        from stepsmith import step

        out = step.Dim.const(self.coef)
        for s in self.symbols:
            out = out * symbols[s]
        return out

    def __str__(self) -> str:
        parts = ([str(self.coef)] if self.coef != 1 or not self.symbols else []) + list(self.symbols)
        return "*".join(parts)


@dataclass(frozen=True)
class ScalarT:
    name: str = "fp32"

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class MultihotT:
    n: DimExpr
    scalar: str = "fp32"

    def __str__(self) -> str:
        return f"Multihot({self.scalar}, {self.n})"


@dataclass(frozen=True)
class BufferT:
    """A buffer; nested buffers are collapsed on construction (inner shape first)."""

    elem: ScalarT | MultihotT
    shape: tuple[DimExpr, ...]

    def __str__(self) -> str:
        return f"Buffer({self.elem}, [{', '.join(str(d) for d in self.shape)}])"


@dataclass(frozen=True)
class TupleT:
    fields: tuple[ScalarT | MultihotT | BufferT, ...]

    def __str__(self) -> str:
        return "[" + ", ".join(f'"{f}"' if isinstance(f, BufferT | MultihotT) else str(f)
                               for f in self.fields) + "]"


DType = ScalarT | MultihotT | BufferT | TupleT


def _dim(d: Dim, text: object) -> DimExpr:
    """A task-file dim: a positive integer times size symbols (no ratios)."""
    if not isinstance(d.coeff, int):
        raise DTypeSyntaxError(f"a dimension in a task file is a product of size symbols and "
                               f"integers, found {text!r}")
    if d.coeff < 1:
        raise DTypeSyntaxError(f"a literal dimension must be >= 1, found {text!r}")
    powers = dict(d.factors)
    names = [*d.order, *(n for n in powers if n not in d.order)]
    return DimExpr(d.coeff, tuple(n for n in names for _ in range(powers[n])))


def _scalar(name: str, text: object) -> str:
    if name not in SCALAR_NAMES:
        raise DTypeSyntaxError(f"unknown dtype {name!r} in {text!r}: a task's numbers are fp32 "
                               f"(\"Buffer(fp32, [<dims>])\", \"Multihot(fp32, <dim>)\")")
    return name


def _field(t: sd.Scalar | sd.Multihot | sd.Buffer, text: object) -> ScalarT | MultihotT | BufferT:
    if isinstance(t, sd.Scalar):
        return ScalarT(_scalar(t.dtype, text))
    if isinstance(t, sd.Multihot):
        return MultihotT(_dim(t.n, text), _scalar(t.dtype, text))
    elem = _field(t.elem, text)
    if isinstance(elem, BufferT):  # pragma: no cover - step's Buffer is already collapsed
        raise DTypeSyntaxError(f"nested buffer in {text!r}")
    return BufferT(elem, tuple(_dim(d, text) for d in t.shape))


def parse_dim(value: Any) -> DimExpr:
    """Parse one entry of ``dims`` / a buffer shape: a positive int, a symbol, or a product."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise DTypeSyntaxError(f"a dimension must be a symbol or a positive integer, found {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise DTypeSyntaxError(f"a literal dimension must be >= 1, found {value}")
        return DimExpr(value, ())
    try:
        return _dim(sd.parse_dim(value), value)
    except StepError as exc:
        raise DTypeSyntaxError(str(exc)) from None


def parse_dtype(value: Any) -> DType:
    """Parse a dtype with the language's grammar: a string, or a list of strings meaning a
    (flat) tuple; only the task-file subset (fp32, integer dims) is accepted."""
    if not isinstance(value, str | list):
        raise DTypeSyntaxError(f"a dtype must be a string such as fp32 or \"Buffer(fp32, [D])\", "
                               f"found {value!r}")
    try:
        t = sd.parse_dtype(value)
    except StepError as exc:
        raise DTypeSyntaxError(str(exc)) from None
    parts = tuple(_field(f, value) for f in sd.fields_of(t))
    return TupleT(parts) if isinstance(t, sd.TupleType) else parts[0]


def fields(t: DType) -> tuple[ScalarT | MultihotT | BufferT, ...]:
    """Tuple fields of a dtype (a non-tuple has one field)."""
    return t.fields if isinstance(t, TupleT) else (t,)


def dtype_symbols(t: DType) -> list[str]:
    """Size symbols mentioned in a dtype, in order of appearance."""
    out: list[str] = []
    for f in fields(t):
        dims: Iterable[DimExpr] = ()
        if isinstance(f, BufferT):
            dims = f.shape + ((f.elem.n,) if isinstance(f.elem, MultihotT) else ())
        elif isinstance(f, MultihotT):
            dims = (f.n,)
        for d in dims:
            out.extend(d.symbols)
    return out


def element_shape(f: ScalarT | MultihotT | BufferT, values: Mapping[str, int]) -> tuple[int, ...]:
    """Trailing tensor dims of one element: reversed buffer shape, then ``(E,)`` for Multihot."""
    if isinstance(f, ScalarT):
        return ()
    if isinstance(f, MultihotT):
        return (f.n.evaluate(values),)
    return tuple(d.evaluate(values) for d in reversed(f.shape)) + element_shape(f.elem, values)


def data_shape(f: ScalarT | MultihotT | BufferT, dims: Iterable[DimExpr],
               values: Mapping[str, int]) -> tuple[int, ...]:
    """Tensor shape of a stream field: ``reversed(dims) + reversed(buffer) (+ (E,))``."""
    return tuple(d.evaluate(values) for d in reversed(list(dims))) + element_shape(f, values)


def to_step(t: DType, symbols: Mapping[str, Any]) -> Any:
    """Convert to ``stepsmith.step`` element types (symbols maps names to ``step.Dim``)."""
    from stepsmith import step

    if isinstance(t, TupleT):
        return step.TupleType(tuple(to_step(f, symbols) for f in t.fields))
    if isinstance(t, ScalarT):
        return step.Scalar(t.name)
    if isinstance(t, MultihotT):
        return step.Multihot(t.scalar, t.n.to_step(symbols))
    return step.Buffer(to_step(t.elem, symbols), tuple(d.to_step(symbols) for d in t.shape))
