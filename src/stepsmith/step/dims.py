"""Symbolic dimensions: monomials (integer coefficient x product of symbols with powers).

Shapes in STeP are symbolic (`M`, `N*K`, ...) so that one program is checked once and run at
many bindings; Flatten multiplies dims and Reshape divides them exactly, so monomials are
enough. Equality is structural (`D*N*K == D*K*N`).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from stepsmith.step.errors import StepError, StepShapeError

_fresh_counter = itertools.count(1)


@dataclass(frozen=True)
class Dim:
    """An immutable symbolic dimension `coeff * prod(sym**power)`.

    `coeff` is an int, or a Fraction for the result of `ratio` (Reshape of `D` by 2 gives
    `D/2`, whose value must be an integer at the binding; `(D/2) * 2 == D` structurally).
    """

    coeff: int | Fraction = 1
    factors: tuple[tuple[str, int], ...] = ()  # canonical: sorted by symbol name
    order: tuple[str, ...] = field(default=(), compare=False, hash=False)  # display order

    # -- construction -------------------------------------------------------------------------
    @staticmethod
    def sym(name: str) -> Dim:
        """A single symbol, e.g. `Dim.sym("M")`."""
        if not isinstance(name, str) or not name:
            raise StepShapeError(f"Dim.sym needs a non-empty symbol name, found {name!r}")
        return Dim(1, ((name, 1),), (name,))

    @staticmethod
    def const(value: int) -> Dim:
        """A constant dimension, e.g. `Dim.const(3)`."""
        if isinstance(value, bool) or not isinstance(value, int):
            raise StepShapeError(f"Dim.const needs an int, found {value!r}")
        if value < 0:
            raise StepShapeError(f"a dimension cannot be negative, found {value}")
        return Dim(value, (), ())

    # -- properties -----------------------------------------------------------------------------
    @property
    def is_const(self) -> bool:
        return not self.factors

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(s for s, _ in self.factors)

    # -- algebra --------------------------------------------------------------------------------
    def __mul__(self, other: object) -> Dim:
        o = _coerce(other)
        if o is None:
            return NotImplemented
        powers = dict(self.factors)
        for s, p in o.factors:
            powers[s] = powers.get(s, 0) + p
        powers = {k: v for k, v in powers.items() if v}
        order = tuple(s for s in self.order + tuple(x for x in o.order if x not in self.order)
                      if s in powers)
        return Dim(_norm(self.coeff * o.coeff), tuple(sorted(powers.items())), order)

    __rmul__ = __mul__

    def __truediv__(self, other: object) -> Dim:
        o = _coerce(other)
        if o is None:
            return NotImplemented
        if o.coeff == 0 or (isinstance(self.coeff, int) and self.coeff % o.coeff != 0):
            raise StepShapeError(
                f"dimension {self} is not exactly divisible by {o}",
                expected=f"a multiple of {o}",
                found=str(self),
            )
        powers = dict(self.factors)
        for s, p in o.factors:
            if powers.get(s, 0) < p:
                raise StepShapeError(
                    f"dimension {self} is not exactly divisible by {o} (symbol {s!r} missing)",
                    expected=f"a multiple of {o}",
                    found=str(self),
                )
            powers[s] -= p
            if powers[s] == 0:
                del powers[s]
        order = tuple(s for s in self.order if s in powers)
        return Dim(_norm(Fraction(self.coeff) / o.coeff), tuple(sorted(powers.items())), order)

    __floordiv__ = __truediv__

    def ratio(self, other: object) -> Dim:
        """Division that may leave a fractional coefficient (`D.ratio(2)` is `D/2`); the
        divisor's symbols must still divide. Its value is checked to be whole on evaluation."""
        o = _coerce(other)
        if o is None or o.coeff == 0:
            raise StepShapeError(f"cannot divide dimension {self} by {other!r}")
        try:
            return self / o
        except StepShapeError:
            pass
        base = self / Dim(1, o.factors, o.order) if o.factors else self
        q = Dim(_norm(Fraction(base.coeff) / o.coeff), base.factors, base.order)
        if q.is_const:
            raise StepShapeError(
                f"dimension {self} is not divisible by {o}", expected=f"a multiple of {o}",
                found=str(self),
            )
        return q

    def __eq__(self, other: object) -> bool:
        o = _coerce(other)
        if o is None:
            return NotImplemented
        return self.coeff == o.coeff and (self.factors == o.factors or self.coeff == 0)

    def __hash__(self) -> int:
        if self.is_const:
            return hash(self.coeff)
        return hash((self.coeff, self.factors))

    # -- evaluation -----------------------------------------------------------------------------
    def evaluate(self, binding: Mapping[str, int] | None = None) -> int:
        """The integer value under `binding`; raises StepShapeError naming unbound symbols."""
        binding = binding or {}
        value = self.try_evaluate(binding)
        if value is None:
            missing = [s for s in self.symbols if s not in binding]
            raise StepShapeError(
                f"dimension {self} cannot be evaluated: symbol(s) {', '.join(missing)} have no "
                f"value in the binding {dict(binding)}",
                expected="a value for every symbol",
                found=f"unbound {', '.join(missing)}",
            )
        return value

    def try_evaluate(self, binding: Mapping[str, int] | None = None) -> int | None:
        """Like evaluate but returns None when a symbol is unbound (hot path: no allocation)."""
        value = self.coeff
        if self.factors:
            if not binding:
                return None
            for s, p in self.factors:
                x = binding.get(s)
                if x is None:
                    return None
                value *= x if p == 1 else x ** p
        if isinstance(value, Fraction):
            if value.denominator != 1:
                raise StepShapeError(
                    f"dimension {self} is not a whole number at the binding {dict(binding or {})} "
                    f"(it is {value})", expected="an integer size", found=str(value),
                )
            return value.numerator
        return int(value)

    def __int__(self) -> int:
        if not self.is_const:
            raise StepShapeError(f"dimension {self} is symbolic; evaluate it with a binding")
        return self.evaluate({})

    def __index__(self) -> int:
        return int(self)

    # -- printing -------------------------------------------------------------------------------
    def __str__(self) -> str:
        powers = dict(self.factors)
        names = list(self.order) + [s for s in powers if s not in self.order]
        parts = []
        num = self.coeff.numerator if isinstance(self.coeff, Fraction) else self.coeff
        den = self.coeff.denominator if isinstance(self.coeff, Fraction) else 1
        if num != 1 or not names:
            parts.append(str(num))
        for s in names:
            p = powers[s]
            parts.extend([s] * p)
        return "*".join(parts) + (f"/{den}" if den != 1 else "")

    def __repr__(self) -> str:
        return f"Dim({self})"


def _norm(c: int | Fraction) -> int | Fraction:
    if isinstance(c, Fraction) and c.denominator == 1:
        return c.numerator
    return c


def _coerce(x: object) -> Dim | None:
    if isinstance(x, Dim):
        return x
    if isinstance(x, bool):
        return None
    if isinstance(x, int):
        return Dim.const(x) if x >= 0 else Dim(x, (), ())
    return None


def dim(x: int | str | Dim) -> Dim:
    """Coerce an int (constant), a str (symbol, or a product like `"N*K"`) or a Dim."""
    if isinstance(x, Dim):
        return x
    if isinstance(x, bool):
        raise StepShapeError(f"a dimension must be an int, a symbol name or a Dim, found {x!r}")
    if isinstance(x, int):
        return Dim.const(x)
    if isinstance(x, str):
        from stepsmith.step.dtypes import parse_dim  # the one grammar (dtypes imports this module)

        try:
            return parse_dim(x)
        except StepError as e:
            raise StepShapeError(f"malformed dimension {x!r}: {e.detail}", expected="like N*K",
                                 found=x) from None
    if hasattr(x, "__index__"):
        return Dim.const(int(x.__index__()))
    raise StepShapeError(
        f"a dimension must be an int, a symbol name or a Dim, found {type(x).__name__} {x!r}"
    )


def fresh_dim(prefix: str = "P") -> Dim:
    """A new dynamic symbol (e.g. Partition's per-output length), unique in this process."""
    return Dim.sym(f"{prefix}_dyn{next(_fresh_counter)}")


def shape_str(shape: Sequence[Dim]) -> str:
    """`[K, M]` — shapes are printed innermost first, like the frontend writes them."""
    return "[" + ", ".join(str(d) for d in shape) + "]"
