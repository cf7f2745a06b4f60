"""The task-file subset of the one dtype grammar (`stepsmith.step.dtypes`).

A task file may use ``fp32`` scalars and dims that are a positive integer times size symbols
(``K``, ``1``, ``N*K``). This module reads task text with the language's parser, refuses the
rest with a message the loader places at the file's line, and returns the language's own
values (``step.Dim``, ``Scalar``, ``Multihot``, ``Buffer``, ``TupleType``): a loaded task and
the programs run on it share one set of types.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from stepsmith.step import dtypes as sd
from stepsmith.step.dims import Dim
from stepsmith.step.dtypes import Buffer, ElemType, Multihot, Scalar, elem_dims, fields_of
from stepsmith.step.errors import StepError

SCALAR_NAMES = ("fp32",)
Field = Scalar | Multihot | Buffer


class DTypeSyntaxError(ValueError):
    """A dtype or dim string does not follow the grammar (the loader adds file/line/field)."""


def _dim(d: Dim, text: object) -> Dim:
    """A task-file dim: a positive integer times size symbols (no ratios)."""
    if not isinstance(d.coeff, int):
        raise DTypeSyntaxError(f"a dimension in a task file is a product of size symbols and "
                               f"integers, found {text!r}")
    if d.coeff < 1:
        raise DTypeSyntaxError(f"a literal dimension must be >= 1, found {text!r}")
    return d


def _field(t: Field, text: object) -> None:
    """Refuse what the language has but a task file may not use (non-fp32, ratio dims)."""
    scalar = t.elem if isinstance(t, Buffer) else t
    if scalar.dtype not in SCALAR_NAMES:
        raise DTypeSyntaxError(f"unknown dtype {scalar.dtype!r} in {text!r}: a task's numbers are "
                               f"fp32 (\"Buffer(fp32, [<dims>])\", \"Multihot(fp32, <dim>)\")")
    if isinstance(scalar, Multihot):
        _dim(scalar.n, text)
    for d in t.shape if isinstance(t, Buffer) else ():
        _dim(d, text)


def parse_dim(value: Any) -> Dim:
    """Parse one entry of ``dims`` / a buffer shape: a positive int, a symbol, or a product."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise DTypeSyntaxError(f"a dimension must be a symbol or a positive integer, found {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise DTypeSyntaxError(f"a literal dimension must be >= 1, found {value}")
        return Dim.const(value)
    try:
        return _dim(sd.parse_dim(value), value)
    except StepError as exc:
        raise DTypeSyntaxError(str(exc)) from None


def parse_dtype(value: Any) -> ElemType:
    """Parse a dtype with the language's grammar: a string, or a list of strings meaning a
    (flat) tuple; only the task-file subset (fp32, integer dims) is accepted."""
    if not isinstance(value, str | list):
        raise DTypeSyntaxError(f"a dtype must be a string such as fp32 or \"Buffer(fp32, [D])\", "
                               f"found {value!r}")
    try:
        t = sd.parse_dtype(value)
    except StepError as exc:
        raise DTypeSyntaxError(str(exc)) from None
    for f in fields_of(t):
        _field(f, value)
    return t


def dim_symbols(d: Dim) -> list[str]:
    """Size symbols of a dim in the order the file wrote them (``N*K`` -> N, K)."""
    return [*d.order, *(s for s in d.symbols if s not in d.order)]


def dtype_symbols(t: ElemType) -> list[str]:
    """Size symbols mentioned in a dtype, in order of appearance."""
    out: list[str] = []
    for f in fields_of(t):
        dims = (*f.shape, *elem_dims(f.elem)) if isinstance(f, Buffer) else elem_dims(f)
        for d in dims:
            out.extend(dim_symbols(d))
    return out


def is_multihot(f: Field) -> bool:
    """A Multihot field, or a Buffer of Multihots (what ``data_gen: multihot`` fills)."""
    return isinstance(f.elem if isinstance(f, Buffer) else f, Multihot)


def data_shape(f: Field, dims: Iterable[Dim], values: Mapping[str, int]) -> tuple[int, ...]:
    """Tensor shape of a stream field: ``reversed(dims) + reversed(buffer) (+ (E,))``."""
    return tuple(d.evaluate(values) for d in (*reversed(list(dims)), *elem_dims(f)))
