"""Element types: Scalar, Buffer (nested buffers collapse), Multihot, flat tuples; `parse_dtype`.

`str(t)` prints the same syntax `parse_dtype` reads (`"Buffer(fp32, [D])"`), which is the
syntax of the task YAML files and of error messages.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar, Union

from stepsmith.step.dims import Dim, dim, shape_str
from stepsmith.step.errors import StepDtypeError

_T = TypeVar("_T")
NUMERIC_DTYPES = ("fp32", "fp16", "bf16", "fp64", "int32", "int64", "bool")


def _check_num(dtype: str) -> str:
    if dtype not in NUMERIC_DTYPES:
        raise StepDtypeError(
            f"unknown numeric type {dtype!r}",
            expected=" or ".join(NUMERIC_DTYPES),
            found=repr(dtype),
        )
    return dtype


@dataclass(frozen=True)
class Scalar:
    """One number."""

    dtype: str = "fp32"

    def __post_init__(self) -> None:
        _check_num(self.dtype)

    def __str__(self) -> str:
        return self.dtype


@dataclass(frozen=True)
class Multihot:
    """A selector vector of `n` zeros/ones (MoE routing)."""

    dtype: str = "fp32"
    n: Dim = Dim.const(1)

    def __post_init__(self) -> None:
        _check_num(self.dtype)
        object.__setattr__(self, "n", dim(self.n))

    def __str__(self) -> str:
        return f"Multihot({self.dtype}, {self.n})"


@dataclass(frozen=True)
class Buffer:
    """An on-chip buffer (shape innermost first) of Scalars or Multihots.

    A Buffer of a Buffer collapses: `Buffer(Buffer(T, a), b) == Buffer(T, a + b)`.
    """

    elem: Scalar | Multihot
    shape: tuple[Dim, ...]

    def __post_init__(self) -> None:
        shape = tuple(dim(d) for d in self.shape)
        elem = self.elem
        if isinstance(elem, Buffer):
            shape = elem.shape + shape
            elem = elem.elem
        if not isinstance(elem, Scalar | Multihot):
            raise StepDtypeError(
                "a Buffer holds Scalars or Multihots",
                expected="Buffer(fp32, [...]) or Buffer(Multihot(fp32, E), [...])",
                found=f"Buffer of {elem}",
            )
        if not shape:
            raise StepDtypeError("a Buffer needs at least one dimension", found="[]",
                                 expected="Buffer(T, [D0, ...])")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "elem", elem)

    @classmethod
    def of(cls, elem: Scalar | Multihot | Buffer, shape: tuple[Dim, ...]) -> Buffer:
        """`Buffer(elem, shape)` for any non-tuple element; a Buffer element collapses (typed
        entry point for that rule, which the constructor also applies)."""
        if isinstance(elem, Buffer):
            return cls(elem.elem, elem.shape + tuple(shape))
        return cls(elem, shape)

    def __str__(self) -> str:
        return f"Buffer({self.elem}, {shape_str(self.shape)})"


@dataclass(frozen=True)
class TupleType:
    """A flat tuple of element types (from Zip); zipping tuples concatenates their fields."""

    fields: tuple[Scalar | Multihot | Buffer, ...]

    def __post_init__(self) -> None:
        flat: list[Scalar | Multihot | Buffer] = []
        for f in self.fields:
            if isinstance(f, TupleType):
                flat.extend(f.fields)
            elif isinstance(f, Scalar | Multihot | Buffer):
                flat.append(f)
            else:
                raise StepDtypeError(f"a tuple field must be an element type, found {f!r}")
        object.__setattr__(self, "fields", tuple(flat))

    def __str__(self) -> str:
        return "[" + ", ".join(str(f) for f in self.fields) + "]"


ElemType = Union[Scalar, Multihot, Buffer, TupleType]  # noqa: UP007 (runtime alias)


def fields_of(t: ElemType) -> tuple[Scalar | Multihot | Buffer, ...]:
    """The per-field types (one for a non-tuple type)."""
    return t.fields if isinstance(t, TupleType) else (t,)


def make_tuple(fields: Sequence[ElemType]) -> ElemType:
    """Flat tuple of the given types; a single field stays a plain (non-tuple) type."""
    flat: list[Scalar | Multihot | Buffer] = []
    for f in fields:
        flat.extend(fields_of(f))
    return flat[0] if len(flat) == 1 else TupleType(tuple(flat))


def elem_dims(t: Scalar | Multihot | Buffer) -> tuple[Dim, ...]:
    """Symbolic per-element tensor shape, outermost first (reversed buffer shape (+ E))."""
    if isinstance(t, Scalar):
        return ()
    if isinstance(t, Multihot):
        return (t.n,)
    return tuple(reversed(t.shape)) + elem_dims(t.elem)


def elem_shape(t: Scalar | Multihot | Buffer, binding: Mapping[str, int]) -> tuple[int | None, ...]:
    """Concrete per-element tensor shape; None for a dim whose symbols are unbound."""
    return tuple(d.try_evaluate(binding) for d in elem_dims(t))


# ---------------------------------------------------------------------------------------------
# parsing
_TOKEN = re.compile(r"\s*(?:(\d+)|([A-Za-z_][A-Za-z_0-9]*)|(.))")


class _Parser:
    def __init__(self, text: str, symbols: Mapping[str, object] | None, noun: str = "dtype"
                 ) -> None:
        self.text = text
        self.noun = noun
        self.symbols = symbols or {}
        self.toks: list[str] = []
        for m in _TOKEN.finditer(text):
            tok = m.group(1) or m.group(2) or m.group(3)
            if tok and not tok.isspace():
                self.toks.append(tok)
        self.i = 0

    def fail(self, what: str) -> StepDtypeError:
        found = self.toks[self.i] if self.i < len(self.toks) else "end of text"
        hint = ("a dimension is a size symbol, an integer or a product like N*K"
                if self.noun == "dimension" else
                "valid dtypes: fp32, Buffer(fp32, [D]), Buffer(fp32, [D, N]), "
                "Multihot(fp32, E), or a list of these for a tuple")
        return StepDtypeError(
            f"cannot parse {self.noun} {self.text!r}: expected {what}, found {found!r}",
            hint=hint,
        )

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, tok: str | None = None) -> str:
        cur = self.peek()
        if cur is None or (tok is not None and cur != tok):
            raise self.fail(repr(tok) if tok else "more text")
        self.i += 1
        return cur

    def parse(self) -> ElemType:
        t = self.elem()
        if self.peek() is not None:
            raise self.fail("end of dtype")
        return t

    def listed(self, item: Callable[[], _T]) -> list[_T]:
        """`[item, item, ...]` (at least one)."""
        self.take("[")
        items = [item()]
        while self.peek() == ",":
            self.take(",")
            items.append(item())
        self.take("]")
        return items

    def elem(self) -> ElemType:
        tok = self.peek()
        if tok == "[":
            return make_tuple(self.listed(self.elem))
        if tok is None:
            raise self.fail("a dtype")
        name = self.take()
        if name in NUMERIC_DTYPES:
            return Scalar(name)
        if name == "Scalar":
            if self.peek() == "(":
                self.take("(")
                num = self.take()
                self.take(")")
                return Scalar(_check_num(num))
            return Scalar()
        if name == "Multihot":
            self.take("(")
            num = self.take()
            _check_num(num)
            self.take(",")
            n = self.dim()
            self.take(")")
            return Multihot(num, n)
        if name == "Buffer":
            self.take("(")
            inner = self.elem()
            self.take(",")
            shape = self.listed(self.dim)
            self.take(")")
            if isinstance(inner, TupleType):
                raise StepDtypeError(f"a Buffer cannot hold a tuple: {self.text!r}")
            return Buffer.of(inner, tuple(shape))
        self.i -= 1
        raise self.fail("fp32, Buffer(...), Multihot(...) or [...]")

    def dim(self) -> Dim:
        d = self.factor()
        while self.peek() in ("*", "/"):
            op = self.take()
            rhs = self.factor()
            d = d * rhs if op == "*" else d.ratio(rhs)
        return d

    def factor(self) -> Dim:
        tok = self.peek()
        if tok is None:
            raise self.fail("a dimension")
        self.take()
        if tok.isdigit():
            return Dim.const(int(tok))
        if tok[0].isalpha() or tok[0] == "_":
            bound = self.symbols.get(tok)
            if isinstance(bound, Dim):
                return bound
            if isinstance(bound, int) and not isinstance(bound, bool):
                return Dim.const(bound)
            return Dim.sym(tok)
        self.i -= 1
        raise self.fail("a dimension (a symbol like D or an integer)")


def parse_dim(text: str, symbols: Mapping[str, object] | None = None) -> Dim:
    """Read one dimension in the dtype grammar: `D`, `4`, `N*K`, `D/2`."""
    p = _Parser(text, symbols, noun="dimension")
    d = p.dim()
    if p.peek() is not None:
        raise p.fail("end of dimension")
    return d


@functools.lru_cache(maxsize=1024)
def _parse_text(text: str) -> ElemType:
    """Element types are immutable, so a parsed dtype string can be shared (inputs are typed
    from the same few strings on every verifier run)."""
    return _Parser(text, None).parse()


def parse_dtype(x: object, symbols: Mapping[str, object] | None = None) -> ElemType:
    """Read a dtype: an element type object, `"fp32"`, `"Buffer(fp32, [D])"`,
    `"Multihot(fp32, E)"`, or a list of those (a flat tuple; a 1-element list is its field).

    Symbols found in `symbols` (name -> Dim or int) are used; other names become `Dim.sym`.
    """
    if isinstance(x, Scalar | Multihot | Buffer | TupleType):
        return x
    if isinstance(x, str):
        return _parse_text(x) if not symbols else _Parser(x, symbols).parse()
    if isinstance(x, list | tuple):
        if not x:
            raise StepDtypeError("an empty list is not a dtype", expected="at least one field",
                                 found="[]")
        return make_tuple([parse_dtype(f, symbols) for f in x])
    raise StepDtypeError(
        f"cannot read a dtype from {type(x).__name__} {x!r}",
        expected="a string like 'fp32' or 'Buffer(fp32, [D])', or a list of them",
        found=repr(x),
    )
