"""A small parser for the task files' dtype and dim syntax, independent of the STeP core.

The loader validates files and discovers size symbols without executing anything, so it parses
``fp32``, ``Buffer(<dtype>, [<dims>])``, ``Multihot(fp32, <dim>)`` and dims such as ``K``,
``1`` or ``N*K`` itself; ``to_step`` converts a parsed dtype into ``stepsmith.step`` types.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

SCALAR_NAMES = ("fp32",)
_TOKEN = re.compile(r"\s*(?:(?P<num>\d+)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>[\[\](),*]))")


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


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            m = _TOKEN.match(text, pos)
            if not m:
                raise DTypeSyntaxError(f"unexpected character {text[pos:].strip()[0]!r} in {text!r}")
            kind = m.lastgroup or "op"
            self.tokens.append((kind, m.group(kind)))
            pos = m.end()
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, value: str | None = None, kind: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (value is not None and tok[1] != value) or (kind and tok[0] != kind):
            want = repr(value) if value else (kind or "a token")
            found = repr(tok[1]) if tok else "end of text"
            raise DTypeSyntaxError(f"expected {want} but found {found} in {self.text!r}")
        self.i += 1
        return tok[1]

    def done(self) -> None:
        tok = self.peek()
        if tok is not None:
            raise DTypeSyntaxError(f"unexpected {tok[1]!r} after the end of {self.text!r}")

    def dim(self) -> DimExpr:
        coef, syms = 1, []
        while True:
            tok = self.peek()
            if tok is None or tok[0] not in ("num", "name"):
                found = repr(tok[1]) if tok else "end of text"
                raise DTypeSyntaxError(f"expected a dimension (a symbol like D or an integer) "
                                       f"but found {found} in {self.text!r}")
            self.i += 1
            if tok[0] == "num":
                coef *= int(tok[1])
            else:
                syms.append(tok[1])
            if self.peek() == ("op", "*"):
                self.i += 1
                continue
            return DimExpr(coef, tuple(syms))

    def dtype(self) -> ScalarT | MultihotT | BufferT:
        name = self.take(kind="name")
        if name in SCALAR_NAMES:
            return ScalarT(name)
        if name == "Buffer":
            self.take("(")
            elem = self.dtype()
            self.take(",")
            self.take("[")
            shape = [self.dim()]
            while self.peek() == ("op", ","):
                self.i += 1
                shape.append(self.dim())
            self.take("]")
            self.take(")")
            if isinstance(elem, BufferT):  # Buffer(Buffer(T, a), b) == Buffer(T, a + b)
                return BufferT(elem.elem, elem.shape + tuple(shape))
            return BufferT(elem, tuple(shape))
        if name == "Multihot":
            self.take("(")
            scalar = self.take(kind="name")
            if scalar not in SCALAR_NAMES:
                raise DTypeSyntaxError(f"Multihot element type must be fp32, found {scalar!r}")
            self.take(",")
            n = self.dim()
            self.take(")")
            return MultihotT(n, scalar)
        raise DTypeSyntaxError(
            f"unknown dtype {name!r}: expected fp32, \"Buffer(<dtype>, [<dims>])\" or "
            f"\"Multihot(fp32, <dim>)\" (or a list of those for a tuple)")


def parse_dim(value: Any) -> DimExpr:
    """Parse one entry of ``dims`` / a buffer shape: a positive int, a symbol, or a product."""
    if isinstance(value, bool):
        raise DTypeSyntaxError(f"a dimension must be a symbol or a positive integer, found {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise DTypeSyntaxError(f"a literal dimension must be >= 1, found {value}")
        return DimExpr(value, ())
    if not isinstance(value, str):
        raise DTypeSyntaxError(f"a dimension must be a symbol or a positive integer, found {value!r}")
    p = _Parser(value)
    d = p.dim()
    p.done()
    if d.coef < 1:
        raise DTypeSyntaxError(f"a literal dimension must be >= 1, found {value!r}")
    return d


def parse_dtype(value: Any) -> DType:
    """Parse a dtype: a string, or a list of strings meaning a (flat) tuple."""
    if isinstance(value, list):
        if not value:
            raise DTypeSyntaxError("a tuple dtype needs at least one field, found []")
        fields: list[ScalarT | MultihotT | BufferT] = []
        for v in value:
            t = parse_dtype(v)
            fields.extend(t.fields if isinstance(t, TupleT) else [t])
        return TupleT(tuple(fields)) if len(fields) > 1 else fields[0]
    if not isinstance(value, str):
        raise DTypeSyntaxError(f"a dtype must be a string such as fp32 or \"Buffer(fp32, [D])\", "
                               f"found {value!r}")
    p = _Parser(value)
    t = p.dtype()
    p.done()
    return t


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
