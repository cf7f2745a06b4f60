"""Mutant generation for the verifier's self-audit.

A verifier that accepts a wrong program silently inflates every pass rate downstream, so we
audit it: take a correct reference program, make small plausible mistakes of the kinds LLMs
make (drop a stage, off-by-one rank argument, swapped fns, a stream reused without `Copy`,
returning the input, a size hard-coded to the paper binding's value) and check that every
mutant that changes behaviour is rejected. Mutants are produced by editing the source text at
AST positions, so comments and layout survive and each mutant is easy to read in a report.
Generation is deterministic (source order) and de-duplicated; every mutant parses.

What may be mutated is asked of the primitive registry, not listed here: which parameters a
primitive has and their kinds (an axis moves by one, a size becomes another size symbol, a fn is
swapped with another fn), how many streams it returns (only a one-stream primitive can be
dropped) and which primitive duplicates a stream (the Copy a `reuse_without_copy` skips).
"""

from __future__ import annotations

import ast
import itertools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from stepsmith.step.affine import AffineParseError, infer_inputs, parse_program
from stepsmith.step.affine.source import (
    PrimitiveApply,
    apply_receiver,
    char_col,
    primitive_applies,
    primitive_of,
    split_lines,
)
from stepsmith.step.registry import LOWEST_INT, REGISTRY, ParamKind
from stepsmith.step.session import PAPER_BINDING
from stepsmith.tasks.analysis import COPY_PRIMITIVES

__all__ = ["MUTANT_KINDS", "PAPER_BINDING", "Mutant", "mutants"]

MUTANT_KINDS: tuple[str, ...] = ("drop_primitive", "change_arg", "swap_fns",
                                 "reuse_without_copy", "return_input", "symbol_to_literal")

_SYMBOL_RE = re.compile(r"^[A-Z][A-Z0-9]?$")


def _droppable(name: str) -> bool:
    """A primitive whose call can be replaced by its first input: it returns one stream and
    takes a stream (not a list of parts) first."""
    pdef = REGISTRY.get(name)
    return pdef is not None and pdef.outputs == 1 and pdef.args != "parts_sel"


def _arguments(ctor: ast.Call) -> list[tuple[ParamKind, str, ast.expr]]:
    """(kind, name, value) of every parameter given to `step.P(...)`, by keyword or position."""
    pdef = REGISTRY.get(primitive_of(ctor) or "")
    if pdef is None:
        return []
    kinds = {p.name: p.kind for p in pdef.params}
    positional = zip(pdef.param_names, ctor.args, strict=False)
    given = [*positional, *((kw.arg, kw.value) for kw in ctor.keywords)]
    return [(kinds[k], k, v) for k, v in given if k in kinds and not isinstance(v, ast.Starred)]


@dataclass(frozen=True)
class Mutant:
    """One deliberately wrong variant of a program."""

    kind: str
    description: str
    source: str


class _Text:
    """Source text with AST-position-based replacement."""

    def __init__(self, src: str) -> None:
        self.src = src
        self.lines = split_lines(src)
        self.starts = list(itertools.accumulate([0] + [len(line) for line in self.lines]))

    def offset(self, lineno: int, col: int) -> int:
        line = self.lines[lineno - 1] if 0 < lineno <= len(self.lines) else ""
        return self.starts[lineno - 1] + char_col(line, col)

    def span(self, node: ast.AST) -> tuple[int, int]:
        if not isinstance(node, ast.expr | ast.stmt):
            raise TypeError(f"no source position on {type(node).__name__}")
        end_line = node.end_lineno if node.end_lineno is not None else node.lineno
        end_col = node.end_col_offset if node.end_col_offset is not None else node.col_offset
        return self.offset(node.lineno, node.col_offset), self.offset(end_line, end_col)

    def text(self, node: ast.AST) -> str:
        start, end = self.span(node)
        return self.src[start:end]

    def replace(self, edits: Sequence[tuple[ast.AST, str]]) -> str:
        spans = sorted(((*self.span(n), t) for n, t in edits), reverse=True)
        out = self.src
        for start, end, text in spans:
            out = out[:start] + text + out[end:]
        return out


def _stream_args(call: ast.Call) -> list[ast.expr]:
    """The stream expressions an apply consumes, flattening one level of tuple/list."""
    out: list[ast.expr] = []
    for arg in call.args:
        if isinstance(arg, (ast.Tuple, ast.List)):
            out.extend(arg.elts)
        else:
            out.append(arg)
    return out


_Made = tuple[str, Sequence[tuple[ast.AST, str]]]  # a mutant's description and source edits


def _line(node: ast.AST) -> int:
    return getattr(node, "lineno", 0)


def _copy_outputs(target: ast.expr) -> list[str]:
    """How the program names the streams of a Copy assigned to `target` (`a, b = ...`: a and b;
    `c = ...`: c[0] and c[1])."""
    if isinstance(target, (ast.Tuple, ast.List)):
        return [e.id for e in target.elts if isinstance(e, ast.Name)]
    return [f"{target.id}[{i}]" for i in (0, 1)] if isinstance(target, ast.Name) else []


class _Generator:
    def __init__(self, src: str, params: list[str] | None, binding: dict[str, int] | None):
        self.src = src
        self.parsed = parse_program(src)
        self.body = self.parsed.body
        self.text = _Text(src)
        if params is None:
            params = self.parsed.params if self.parsed.params is not None else infer_inputs(src)
        self.params = list(params)
        self.binding = dict(binding) if binding else dict(PAPER_BINDING)
        self.applies: list[PrimitiveApply] = primitive_applies(self.body)
        self.nodes = [n for s in self.body for n in ast.walk(s)]  # source order, statement-wise
        self.assigned = {
            n.id for n in self.nodes if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
        }

    # ----------------------------------------------------------------- kinds: (description, edits)
    def drop_primitive(self) -> Iterator[_Made]:
        for app in self.applies:
            if not _droppable(app.name):
                continue
            streams = _stream_args(app.call)
            if not streams:
                continue
            first = self.text.text(streams[0])
            yield (f"line {_line(app.call)}: removed step.{app.name}(...); its output is replaced "
                   f"by its input `{first}`", [(app.call, first)])

    def change_arg(self) -> Iterator[_Made]:
        """Move every non-fn parameter to a neighbouring value of its kind's domain."""
        symbols = sorted(self.binding)
        for app in self.applies:
            for kind, name, value in _arguments(app.ctor):
                if kind.startswith("fn"):
                    continue  # fns are exchanged by swap_fns
                for node, new in self._neighbours(kind, value, symbols):
                    old = self.text.text(node)
                    yield (f"line {_line(app.call)}: step.{app.name}({name}=...): `{old}` -> "
                           f"`{new}`", [(node, new)])

    def _neighbours(self, kind: ParamKind, value: ast.expr,
                    symbols: list[str]) -> Sequence[tuple[ast.AST, str]]:
        """Values next to `value` in the domain of `kind`: an int one up or down (not below
        the domain), a named int (`E_value`) plus or minus one, a size symbol replaced by
        another, any other expression plus one; a list of axes moves each entry."""
        if kind == "axes" and isinstance(value, (ast.List, ast.Tuple)):
            return [n for elt in value.elts for n in self._neighbours("axis", elt, symbols)]
        if isinstance(value, ast.Constant) and type(value.value) is int:
            v = value.value
            return [(value, str(v + 1))] + ([(value, str(v - 1))] if v > LOWEST_INT[kind] else [])
        if isinstance(value, ast.Name):
            if value.id.endswith("_value"):
                return [(value, f"{value.id} + 1"), (value, f"{value.id} - 1")]
            if value.id in self.binding or _SYMBOL_RE.match(value.id):
                return [(value, other) for other in symbols if other != value.id]
            return []
        return [(value, f"({self.text.text(value)}) + 1")]

    def _fn_names(self) -> list[str]:
        """Names of specialized fns: `fn=` arguments and their sibling list entries."""
        names: set[str] = set()
        for app in self.applies:
            for kind, _, value in _arguments(app.ctor):
                if kind.startswith("fn") and isinstance(value, ast.Name):
                    names.add(value.id)
        names.update(n.id for n in self.nodes if isinstance(n, ast.Name) and n.id.startswith("fn_"))
        for node in self.nodes:
            if isinstance(node, (ast.List, ast.Tuple)) and isinstance(node.ctx, ast.Load):
                elts = [e.id for e in node.elts if isinstance(e, ast.Name)]
                if len(elts) == len(node.elts) and names.intersection(elts):
                    names.update(elts)
        names -= self.assigned
        names -= set(self.params)
        return sorted(names)

    def swap_fns(self) -> Iterator[_Made]:
        fns = self._fn_names()
        occurrences = {
            name: [n for n in self.nodes
                   if isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, ast.Load)]
            for name in fns
        }
        for f, g in itertools.combinations(fns, 2):
            edits = [(n, g) for n in occurrences[f]] + [(n, f) for n in occurrences[g]]
            yield f"swapped the fns `{f}` and `{g}` everywhere", edits

    def reuse_without_copy(self) -> Iterator[_Made]:
        # only consumptions (inside `.apply(...)` arguments): returning a stream is not a use
        loads = sorted(
            (n for app in self.applies
             for arg in [*app.call.args, *(kw.value for kw in app.call.keywords)]
             for n in ast.walk(arg)
             if isinstance(n, (ast.Name, ast.Subscript)) and isinstance(n.ctx, ast.Load)),
            key=lambda n: (n.lineno, n.col_offset),
        )
        made = 0
        for node in self.nodes:
            if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
                continue
            value = node.value
            copied = primitive_of(apply_receiver(value)) in COPY_PRIMITIVES
            if not (copied and isinstance(value, ast.Call) and len(value.args) == 1):
                continue
            src_text = self.text.text(value.args[0])
            end = (node.end_lineno or 0, node.end_col_offset or 0)
            for label in _copy_outputs(node.targets[0]):
                use = next((n for n in loads
                            if (n.lineno, n.col_offset) > end and ast.unparse(n) == label), None)
                if use is None:
                    continue
                yield (f"line {_line(use)}: used `{src_text}` instead of the Copy output "
                       f"`{label}`, so `{src_text}` is consumed twice", [(use, src_text)])
                made += 1
        if made:
            return
        consumed = [(arg, app.call) for app in self.applies
                    for arg in _stream_args(app.call) if isinstance(arg, ast.Name)]
        for (prev, _), (arg, call) in zip(consumed, consumed[1:], strict=False):
            if prev.id == arg.id or made >= 3:
                continue
            yield (f"line {_line(call)}: consumed `{prev.id}` again instead of `{arg.id}` "
                   "(no Copy)", [(arg, prev.id)])
            made += 1

    def return_input(self) -> Iterator[_Made]:
        returns = [s for s in self.body if isinstance(s, ast.Return) and s.value is not None]
        if not returns:
            return
        ret = returns[-1]
        value = ret.value
        assert value is not None
        target = value.elts[0] if isinstance(value, ast.Tuple) and value.elts else value
        current = self.text.text(target)
        shown = current if len(current) <= 40 else current[:37] + "..."
        for name in self.params:
            if name == current:
                continue
            yield (f"line {_line(ret)}: returns the input `{name}` unchanged instead of "
                   f"`{shown}`", [(target, name)])

    def symbol_to_literal(self) -> Iterator[_Made]:
        """`D` or `D_value` -> the binding's number: right at one binding, wrong at others."""
        streams = set(self.params) | self.assigned

        def symbol_of(name: str) -> str | None:
            if name in streams:
                return None
            if name in self.binding:
                return name
            if name.endswith("_value") and name[: -len("_value")] in self.binding:
                return name[: -len("_value")]
            return None

        for stmt in self.body:
            nodes = [(n, symbol) for n in ast.walk(stmt)
                     if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
                     and (symbol := symbol_of(n.id)) is not None]
            for node, symbol in sorted(nodes, key=lambda ns: (ns[0].lineno, ns[0].col_offset)):
                value = self.binding[symbol]
                yield (f"line {_line(node)}: size symbol `{node.id}` hard-coded as {value}",
                       [(node, str(value))])


def mutants(src: str, params: list[str] | None = None,
            binding: dict[str, int] | None = None) -> list[Mutant]:
    """Deterministic, de-duplicated mutants of `src`, grouped by kind in `MUTANT_KINDS` order.

    `params` are the input stream names (inferred when None); `binding` gives the literal used
    by `symbol_to_literal` (default: the paper binding M=5, N=7, K=9, D=16). Raises
    `AffineParseError` (a `SyntaxError`) when `src` does not parse.
    """
    gen = _Generator(src, params, binding)
    seen = {src}
    out: list[Mutant] = []
    made = ((kind, *m) for kind in MUTANT_KINDS for m in getattr(gen, kind)())
    for kind, description, edits in made:
        mutant = Mutant(kind, description, gen.text.replace(edits))
        if mutant.source in seen:
            continue
        try:
            parse_program(mutant.source)
        except AffineParseError:
            continue
        seen.add(mutant.source)
        out.append(mutant)
    return out
