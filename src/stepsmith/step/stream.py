"""Streams: rank, innermost-first symbolic shape, element type, and data.

Data layout (the contract the benchmark relies on): one tensor per tuple field, laid out
outermost first: `reversed(stream shape) + reversed(buffer shape) (+ (E,) for Multihot)`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from types import FrameType

import torch

from stepsmith.step.dims import Dim, dim, shape_str
from stepsmith.step.dtypes import ElemType, TupleType, elem_dims, fields_of, parse_dtype
from stepsmith.step.errors import StepArgumentError, StepShapeError
from stepsmith.step.session import current_session

_PKG_DIR = os.path.dirname(os.path.abspath(__file__))


def type_str(dtype: ElemType, shape: Sequence[Dim]) -> str:
    """`Strm<Buffer(fp32, [D]), rank 1, [N, M]>` — how types appear in messages."""
    return f"Strm<{dtype}, rank {len(shape) - 1}, {shape_str(shape)}>"


class SType:
    """An abstract stream (type + shape, no data): what typing rules evaluate."""

    def __init__(self, dtype: ElemType, shape: Sequence[Dim], name: str = "?") -> None:
        self.dtype = dtype
        self.shape = tuple(shape)
        self.name = name

    @property
    def rank(self) -> int:
        return len(self.shape) - 1

    def type_str(self) -> str:
        return type_str(self.dtype, self.shape)

    def __repr__(self) -> str:
        return f"SType({self.name!r}: {self.type_str()})"


class Stream(SType):
    """A stream value. `data` is a tensor (or a tuple of tensors for a tuple type)."""

    def __init__(self, name: str, dtype: ElemType, shape: Sequence[Dim],
                 fields: tuple[torch.Tensor, ...], producer: str = "input") -> None:
        super().__init__(dtype, shape, name)
        self.fields = tuple(fields)
        self.producer = producer
        self.consumer: str | None = None

    # -- data -----------------------------------------------------------------------------------
    @property
    def data(self) -> torch.Tensor | tuple[torch.Tensor, ...]:
        return self.fields if isinstance(self.dtype, TupleType) else self.fields[0]

    def concrete_shape(self) -> tuple[int, ...]:
        """The shape as ints (innermost first), read from the data (always available)."""
        t = self.fields[0]
        return tuple(int(x) for x in reversed(t.shape[: len(self.shape)]))

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def input(cls, name: str, dtype: ElemType | str | list, shape: Sequence[Dim | int | str],
              data: torch.Tensor | Sequence[torch.Tensor] | object) -> Stream:
        """Build and validate a program input against the current Session binding.

        Symbols absent from the binding are inferred from the data (consistently within this
        input); a mismatch raises StepShapeError naming the input, field and dimension.
        """
        session = current_session()
        dt = parse_dtype(dtype)
        shp = tuple(dim(d) for d in shape)
        if not shp:
            raise StepShapeError(
                f"input {name!r} has an empty shape", expected="at least one dim (rank >= 0)",
                found="[]",
            )
        ftypes = fields_of(dt)
        if isinstance(dt, TupleType):
            if not isinstance(data, list | tuple) or len(data) != len(ftypes):
                raise StepShapeError(
                    f"input {name!r} of tuple type {dt} needs one tensor per field",
                    expected=f"a tuple of {len(ftypes)} tensors",
                    found=type(data).__name__
                    + (f" of {len(data)}" if isinstance(data, list | tuple) else ""),
                )
            tensors = list(data)
        else:
            tensors = [data]
        out: list[torch.Tensor] = []
        inferred: dict[str, int] = {}
        for fi, (ft, t) in enumerate(zip(ftypes, tensors, strict=True)):
            if not isinstance(t, torch.Tensor):
                try:
                    t = torch.as_tensor(t)
                except Exception as e:  # noqa: BLE001 - reported as a shape error
                    raise StepArgumentError(
                        f"input {name!r}: data is not convertible to a tensor ({e})"
                    ) from None
            if not (t.is_floating_point() or t.is_complex()):
                t = t.to(torch.get_default_dtype())
            want = tuple(reversed(shp)) + elem_dims(ft)
            where = f"input {name!r}" + (f" field {fi}" if len(ftypes) > 1 else "")
            if t.dim() != len(want):
                raise StepShapeError(
                    f"{where} data has {t.dim()} dims but {type_str(dt, shp)} with element "
                    f"{ft} needs {len(want)} (layout: reversed(stream shape) + reversed(buffer "
                    "shape) (+ E for Multihot))",
                    expected=f"shape ({', '.join(str(d) for d in want)})",
                    found=f"shape {tuple(t.shape)}",
                )
            for axis, (d, n) in enumerate(zip(want, t.shape, strict=True)):
                _check_dim(where, d, int(n), axis, want, t, session.binding, inferred)
            out.append(t)
        return cls(name, dt, shp, tuple(out), producer="input")

    def __repr__(self) -> str:
        return f"Stream({self.name!r}: {self.type_str()})"


def _check_dim(where: str, d: Dim, n: int, axis: int, want: tuple[Dim, ...], t: torch.Tensor,
               binding: dict[str, int], inferred: dict[str, int]) -> None:
    env = {**inferred, **binding}
    value = d.try_evaluate(env)
    if value is None:
        unbound = [s for s in d.symbols if s not in env]
        if len(unbound) == 1 and dict(d.factors)[unbound[0]] == 1:
            rest = d / Dim.sym(unbound[0])
            r = rest.evaluate(env)
            if r and n % r == 0:
                inferred[unbound[0]] = n // r
                return
        return  # cannot check (several unknowns); the data defines it
    if value != n:
        raise StepShapeError(
            f"{where} data does not match its declared shape at tensor axis {axis} "
            f"(dim {d} = {value} in the binding)",
            expected=f"shape ({', '.join(str(x) for x in want)})",
            found=f"shape {tuple(t.shape)}",
        )


def user_var_name(stream: SType) -> str | None:
    """The program variable currently bound to `stream` (searched only when reporting errors)."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        fname = os.path.abspath(frame.f_code.co_filename)
        if not fname.startswith(_PKG_DIR):
            for k, v in frame.f_locals.items():
                if v is stream:
                    return k
            for k, v in frame.f_locals.items():
                if isinstance(v, list | tuple) and len(v) < 1000:
                    for i, x in enumerate(v):
                        if x is stream:
                            return f"{k}[{i}]"
            return None
        frame = frame.f_back
    return None


def display(stream: SType) -> str:
    """`'E3'` or `'x' (= Accum#3(E2))` — readable in LLM feedback."""
    try:
        var = user_var_name(stream)
    except Exception:  # noqa: BLE001 - naming is best effort, never a new failure
        var = None
    if var is None or var == stream.name:
        return repr(stream.name)
    return f"'{var}' (= {stream.name})"
