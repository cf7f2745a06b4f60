"""The space of well-typed STeP programs for one task, one statement at a time.

A `ProgramState` is the typing environment after some statements: which names hold streams (and
their symbolic types), which hold lists of streams (Partition outputs, comprehensions) or lists
of fns, and which streams were already consumed. `next_statements()` enumerates every statement
that may come next: a primitive call from the registry with parameter values drawn from the
domains of the parameters' kinds, arguments drawn from the unconsumed streams, kept only when
the primitive's own typing rule accepts it. Nothing here knows a primitive by name: parameters,
argument forms and output counts come from `step.REGISTRY`.

Statements are spelled canonically (`step.P(k=v, ...).apply(arg)`, the registry's parameter
order, `(a, b)` tuples) — the spelling of the prompt's reference and of every reference program.
Comprehension loop variables (`[... for f, p in zip(fns, parts)]`) may be any identifier.
"""

from __future__ import annotations

import ast
import functools
import itertools
import keyword
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any, ClassVar

from stepsmith import step
from stepsmith.step.dims import Dim
from stepsmith.step.dtypes import (
    Buffer,
    ElemType,
    Multihot,
    Scalar,
    TupleType,
    elem_dims,
    fields_of,
)
from stepsmith.step.fn import Fn
from stepsmith.step.primitives import alias_fresh_dim, fresh_dim_fact
from stepsmith.step.registry import REGISTRY, Param, PrimitiveDef, int_literals, shapes_equal
from stepsmith.step.stream import SType
from stepsmith.tasks.bindings import ALWAYS_BOUND, requested_bindings
from stepsmith.tasks.task import Task

# placeholders for comprehension loop variables in candidate texts
ELEM = "\x00e"
FNV = "\x00f"
MAX_TUPLE = 4
# The longest reference program has 13 statements and a return; a sample past 16 statements
# has lost its way, and every further line costs model time (measured: wandering samples ran
# to the 512-token limit).
MAX_STATEMENTS = 16
# Bounds that keep small models out of runaway branches (Repeat of Repeat of ..., piles of
# unused streams). The reference programs reach at most 5 produced-but-unconsumed streams and
# rank 2 above the task's largest input/output rank; the completeness test guards the margins.
MAX_DANGLING = 6
RANK_MARGIN = 3
# ... and out of loops: the same call (`step.Repeat(n=K)`) at most 3 times when it has
# parameters, 5 times without (`step.Copy()`); references reach 2 and 4. A stream's dims plus
# its buffer dims stay within 3 of the largest the task's inputs, outputs and fns use (+2 seen).
MAX_SAME_CALL = 3
MAX_SAME_BARE_CALL = 5
DIMS_MARGIN = 3
# The last statement of the budget is offered only when a return is well typed after it (type
# inhabitation, searched exactly over the typed space). Measured on the paper's tasks: one
# statement of look-ahead costs 0.1-0.9 s a line, two cost 7-70 s, so earlier lines rely on
# the decoder's backtracking at dead ends.
REACH_WINDOW = 1
# With `reuse`, the consumed streams that stay usable: the task's inputs and the most recently
# consumed of the others. Unbounded, every stream ever written stays an argument, and the
# 4-stream tuples of rope's fn_muladd over 16 statements kept one line's options from being
# computed for over 10 minutes.
REUSE_RECENT = 3
# the most task fns one primitive call can name (its fn parameters, from the registry)
MAX_FNS_PER_CALL = max(sum(p.kind.startswith("fn") for p in d.params) for d in REGISTRY.values())
# a name in a statement text, also the look-ahead's placeholder names ("\x01<stmt>_<i>")
IDENT = re.compile(r"[\x01A-Za-z_]\w*")


Atom = tuple[str, str]  # ("Scalar" | "Multihot", number type)


@functools.lru_cache(maxsize=4096)
def atoms(t: ElemType) -> frozenset[Atom]:
    """What an element is made of: scalars or multihots of a number type. Primitives move,
    copy, group, route and repeat values but never make a new kind of value; only a fn turns
    its input's atoms into its output's (the tests check this against the typing rule of every
    call offered for every reference program's states)."""
    out = set()
    for f in fields_of(t):
        base = f.elem if isinstance(f, Buffer) else f
        out.add((type(base).__name__, base.dtype))
    return frozenset(out)


def closure(have: frozenset[Atom],
            fn_atoms: dict[str, tuple[frozenset[Atom], frozenset[Atom]]]) -> frozenset[Atom]:
    """The atoms any stream made from streams of atoms `have` can hold: those, and the output
    atoms of every fn whose input atoms are among them (repeatedly)."""
    out = set(have)
    grew = True
    while grew:
        grew = False
        for ins, outs in fn_atoms.values():
            if ins <= out and not outs <= out:
                out |= outs
                grew = True
    return frozenset(out)


def total_dims(t: SType) -> int:
    """Stream dims plus the largest buffer's dims: how big an element of work gets."""
    return len(t.shape) + max(len(elem_dims(f)) for f in fields_of(t.dtype))


@dataclass(frozen=True)
class Facts:
    """What the task contributes to typing: fns, size symbols, integer constants, input and
    output types, and the binding typing rules evaluate counts in."""

    fns: dict[str, Fn]
    sizes: dict[str, Dim]
    ints: dict[str, int]
    inputs: dict[str, SType]
    outputs: tuple[tuple[ElemType, tuple[Dim, ...]], ...]
    binding: dict[str, int]
    reserved: frozenset[str]
    useful_tuples: frozenset[tuple[ElemType, ...]]
    max_rank: int = 8
    max_dims: int = 12
    # each fn's (input atoms, output atoms), and the atoms the declared outputs are made of
    fn_atoms: dict[str, tuple[frozenset[Atom], frozenset[Atom]]] = field(default_factory=dict)
    out_atoms: frozenset[Atom] = frozenset()
    # what the returned streams must be computed from together: every input and every fn
    needed: frozenset[str] = frozenset()
    # can_return_within, by state signature (shared by every state of one task's decoding)
    reach_memo: dict[tuple[object, ...], bool] = field(default_factory=dict, compare=False,
                                                         repr=False, hash=False)
    # kinds_reachable, by (atoms of the live streams, fns used)
    kinds_memo: dict[tuple[frozenset[Atom], frozenset[str]], bool] = field(
        default_factory=dict, compare=False, repr=False, hash=False)
    # _type_call, by (primitive, parameter values, input types): the same calls on the same
    # types recur at every line, and a rejected call costs an exception with its message
    type_memo: dict[tuple[object, ...], tuple[SType, ...] | None] = field(
        default_factory=dict, compare=False, repr=False, hash=False)
    # calls typed so far (the look-ahead's measure of work: a count, not seconds, so a
    # bounded search decodes the same on every machine)
    typed_calls: list[int] = field(default_factory=lambda: [0], compare=False, repr=False,
                                  hash=False)
    # _param_values by (primitive, its parameters, rank); _per_element's heads by the list's
    # element types (the same lists stay in every later state of a decoding)
    param_memo: dict[tuple[object, ...], list[tuple[dict[str, Any], dict[str, str]]]] = field(
        default_factory=dict, compare=False, repr=False, hash=False)
    comprehension_memo: dict[tuple[object, ...],
                             list[tuple[str, tuple[SType, ...], tuple[str, ...]]]] = field(
        default_factory=dict, compare=False, repr=False, hash=False)

    @classmethod
    def from_task(cls, task: Task) -> Facts:
        """Facts from the task's declarations at its paper binding (types are symbolic, so one
        binding suffices). Nothing of the task's code runs here: task files are code, and
        their code runs only in a verifier worker. Fn bodies are compiled, never called; ints
        are the binding's sizes plus `NAME_value = <int>` lines read from `global`."""
        values = _paper_values(task)
        fns = {spec.func_name: Fn.from_source(
                   name=spec.name, apply_src=spec.apply, input_dtype=info.input_dtype,
                   output_dtype=info.output_dtype, init=spec.init, func_name=spec.func_name,
                   namespace={})
               for spec, info in zip(task.spec.fns, task.fn_infos, strict=True)}
        sizes = {k: Dim.sym(k) for k in values}
        ints = {f"{k}_value": v for k, v in values.items()}  # the final sizes win
        ints.update({k: v for k, v in _declared_ints(task.spec.global_).items() if k not in ints})
        inputs = {i.name: SType(i.dtype, tuple(i.dims), i.name) for i in task.input_infos}
        outputs = tuple((i.dtype, tuple(i.dims)) for i in task.output_infos)
        ns = {"step", *sizes, *ints, *fns}
        useful: set[tuple[ElemType, ...]] = set()
        for t in [f.input_dtype for f in fns.values()] + [d for d, _ in outputs]:
            fs = tuple(fields_of(t))
            for i in range(len(fs)):
                for j in range(i + 2, len(fs) + 1):
                    useful.add(fs[i:j])
        reserved = frozenset(ns) | frozenset(inputs) | {"step", "input_data", "ctx", "torch"}
        base = max([t.rank for t in inputs.values()] + [len(shp) - 1 for _, shp in outputs])
        dims = max([total_dims(t) for t in inputs.values()]
                   + [total_dims(SType(d, shp)) for d, shp in outputs]
                   + [len(elem_dims(x)) + 1 for fn in fns.values()
                      for x in (*fields_of(fn.input_dtype), *fields_of(fn.output_dtype))])
        return cls(fns=fns, sizes=sizes, ints=ints, inputs=inputs, outputs=outputs,
                   binding=values, reserved=reserved,
                   useful_tuples=frozenset(useful), max_rank=base + RANK_MARGIN,
                   max_dims=dims + DIMS_MARGIN,
                   fn_atoms={k: (atoms(f.input_dtype), atoms(f.output_dtype))
                             for k, f in fns.items()},
                   out_atoms=frozenset().union(*(atoms(d) for d, _ in outputs)),
                   needed=frozenset(inputs) | frozenset(fns))


@dataclass(frozen=True)
class Ref:
    """An argument that names one stream: `x` or a list element `parts[1]`."""

    text: str
    stype: SType
    key: str  # what consuming it marks (the name, or the element text)
    owner: str | None = None  # the list it belongs to


@dataclass(frozen=True)
class Candidate:
    """One statement right-hand side (or return) that types."""

    text: str  # canonical; comprehension loop variables as ELEM / FNV placeholders
    outs: tuple[SType, ...]
    consumes: frozenset[str]
    is_list: bool = False  # binds one name to a list of streams
    fn_list: tuple[str, ...] | None = None  # `[fn_a, fn_b]`: binds a list of fns
    calls: tuple[str, ...] = ()  # each `step.P(params)` it writes (for MAX_SAME_CALL)
    # names it reads only for their shape (the registry's `shape_args`): not its ancestry
    shape_only: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ProgramState:
    """The typing environment after the statements so far (immutable: backtracking keeps
    earlier states)."""

    facts: Facts
    streams: tuple[tuple[str, SType], ...] = ()
    lists: tuple[tuple[str, tuple[SType, ...]], ...] = ()
    fn_lists: tuple[tuple[str, tuple[str, ...]], ...] = ()
    consumed: frozenset[str] = frozenset()
    statements: int = 0
    done: bool = False
    max_statements: int = MAX_STATEMENTS
    calls: tuple[str, ...] = ()  # every `step.P(params)` written so far
    fns_used: frozenset[str] = frozenset()  # task fns named by the statements so far
    # statements in a row that named no task fn not used before, and the most allowed (None:
    # no bound). A bound keeps an attempt of search `deepen` on the task's computation.
    stall: int = 0
    max_stall: int | None = None
    # Task fns first named in the order the task declares them. Every reference program of the
    # benchmark (26/26) and of the demonstrations (16/16) does; the 0.5B model mostly does not
    # (it squares x, then wanders instead of taking the mean), so early attempts of search
    # `deepen` keep to the declared order.
    in_order: bool = False
    # A stream may be used again after it was consumed: the answer then gets the `Copy` the
    # affine rule needs, inserted by the STeP core's repair (`constraint.explicit_copies`).
    # Models write `f(x)` and later `g(x, y)` as in Python; the 0.5B model chained rmsnorm's
    # fns right and then had no stream of x left for the final division.
    reuse: bool = False
    # right-hand sides written so far (with `reuse`, the same call on the same streams could
    # be written twice; it computes nothing new, and the 0.5B model did it on every line)
    written: frozenset[str] = frozenset()
    consumed_order: tuple[str, ...] = ()  # consumed streams, oldest first (for `reuse`)
    # What each bound name (stream, list, fn list) is computed from: the task inputs and fns
    # among its ancestors. A `return` is offered only of streams that together depend on every
    # input and every fn, as every reference program's outputs do; 8 of the 1.5B model's 12
    # wrong answers on 21 paper tasks (typed-13) returned a stream computed without one, and a
    # fn used only in a statement nothing returned counts for nothing.
    deps: tuple[tuple[str, frozenset[str]], ...] = ()
    # stalled states share look-ahead answers by a coarser key (`_signature`; off: the bench
    # compares, tests check the answers are the same)
    SHARE_STALLED: ClassVar[bool] = True

    @classmethod
    def start(cls, facts: Facts, max_statements: int = MAX_STATEMENTS,
              max_stall: int | None = None, in_order: bool = False,
              reuse: bool = False) -> ProgramState:
        return cls(facts=facts, streams=tuple(facts.inputs.items()),
                   max_statements=max_statements, max_stall=max_stall, in_order=in_order,
                   reuse=reuse, deps=tuple((n, frozenset({n})) for n in facts.inputs))

    # -- environment ---------------------------------------------------------------------------
    def bound(self) -> set[str]:
        return ({n for n, _ in self.streams} | {n for n, _ in self.lists}
                | {n for n, _ in self.fn_lists} | set(self.facts.reserved))

    def name_ok(self, name: str) -> bool:
        return name.isidentifier() and not keyword.iskeyword(name) and name not in self.bound()

    def refs(self) -> list[Ref]:
        """Unconsumed streams (with `reuse` also the inputs and the REUSE_RECENT streams
        consumed last) and unconsumed elements of unconsumed lists."""
        again = self._reusable()
        out = [Ref(n, t, n) for n, t in self.streams if n not in self.consumed or n in again]
        for name, elems in self.lists:
            if name in self.consumed:
                continue
            for i, t in enumerate(elems):
                key = f"{name}[{i}]"
                if key not in self.consumed:
                    out.append(Ref(key, t, key, owner=name))
        return out

    def _reusable(self) -> frozenset[str]:
        """Consumed streams that may be used again (none without `reuse`)."""
        if not self.reuse:
            return frozenset()
        recent = [n for n in reversed(self.consumed_order) if n not in self.facts.inputs]
        return frozenset(self.facts.inputs) | frozenset(recent[:REUSE_RECENT])

    def whole_lists(self) -> list[tuple[str, tuple[SType, ...]]]:
        """Lists none of whose elements was consumed (usable in a comprehension or Merge)."""
        return [(n, ts) for n, ts in self.lists if n not in self.consumed
                and not any(f"{n}[{i}]" in self.consumed for i in range(len(ts)))]

    # -- what may come next --------------------------------------------------------------------
    def assignments(self) -> dict[int, list[Candidate]]:
        """Right-hand sides by the number of names on the left (0: a name bound to a list).
        In the last REACH_WINDOW statements of the budget, only those after which a return
        stays reachable in the statements left."""
        return _by_arity(self._offered())

    def _offered(self) -> Iterator[tuple[int, Candidate]]:
        left = self.max_statements - self.statements - 1  # assignments allowed after this one
        for k, c in self._well_typed_iter():
            if left >= REACH_WINDOW or self._after(c).can_return_within(left):
                yield k, c

    def viable(self) -> bool:
        """Whether any line is offered here (a return or a statement), or False once
        `mark_dead` proved that none leads anywhere. Memoised per signature."""
        return self._some_line("viable", self._offered())

    def _some_line(self, tag: str, statements: Iterator[tuple[int, Candidate]]) -> bool:
        """Whether a return or one of `statements` is offered, memoised per signature and
        `tag` (`statements` is consumed only up to the first, and only on a memo miss)."""
        memo = self.facts.reach_memo
        sig = (self._signature(), tag)
        if sig not in memo:
            memo[sig] = self.has_return() or next(statements, None) is not None
        return memo[sig]

    def leads_on(self, cand: Candidate) -> bool:
        """Whether some line is offered after the statement `cand` (one statement of
        look-ahead; exact, so it never removes a program that could be completed)."""
        return self._after(cand).viable()

    def mark_dead(self) -> None:
        """Record that no statement offered here leads on (each was checked with `leads_on`):
        every state with this signature is a dead end, so the states before it can see it."""
        self.facts.reach_memo[(self._signature(), "viable")] = False

    def can_return_within(self, k: int) -> bool:
        """Whether some `return` is well typed now or after at most `k` more statements."""
        memo = self.facts.reach_memo
        sig = (self._signature(), k)
        if sig not in memo:
            memo[sig] = self.has_return() or (k > 0 and any(
                self._after(c).can_return_within(k - 1)
                for cs in self._well_typed().values() for c in cs))
        return memo[sig]

    def _after(self, cand: Candidate) -> ProgramState:
        """The state after binding `cand` to placeholder names (no model name can clash)."""
        n = 1 if cand.is_list or cand.fn_list is not None else len(cand.outs)
        return self.bind([f"\x01{self.statements}_{i}" for i in range(n)], cand)

    def _signature(self) -> tuple[object, ...]:
        """The state up to the names of produced streams: what decides what may follow."""
        def t(x: SType) -> tuple[str, str]:
            return (repr(x.dtype), repr(x.shape))
        again = self._reusable()
        deps = self._deps_map

        def d(n: str) -> tuple[str, ...]:
            return tuple(sorted(deps.get(n, ())))
        live = sorted((t(x), n in self.facts.inputs, n in self.consumed, d(n))
                      for n, x in self.streams if n not in self.consumed or n in again)
        lists = sorted((tuple(t(x) for x in xs), tuple(f"{n}[{i}]" in self.consumed
                                                        for i in range(len(xs))), d(n))
                       for n, xs in self.lists if n not in self.consumed)
        fls = sorted(fl for _, fl in self.fn_lists)
        env = (tuple(live), tuple(lists), tuple(fls), tuple(sorted(self.fns_used)),
               self.in_order, self.reuse)
        if self._stalled() and self.SHARE_STALLED:
            # Stalled, only statements naming a new fn (never written before), or a return,
            # may follow: the calls written count only where they hit their bound, what was
            # written only for a return once every fn is used, the statements left only up
            # to what the budget's window and a return's look-ahead
            # (`can_return_within(k < REACH_WINDOW)`) tell apart. Sibling states of the
            # look-ahead share this key.
            full = sorted(k for k, n in self._call_counts.items() if n >= _same_call_bound(k))
            missing = set(self.facts.fns) - self.fns_used
            left = min(self.max_statements - self.statements, REACH_WINDOW + 1)
            return (*env, "stalled", tuple(full), left,
                    () if missing else tuple(sorted(self.written)))
        return (*env, tuple(sorted(self.calls)), self.max_statements - self.statements,
                self.stall, self.max_stall, tuple(sorted(self.written)) if self.reuse else ())

    def _stalled(self) -> bool:
        """Whether only a statement naming a task fn not used before may follow."""
        return self.max_stall is not None and self.stall >= self.max_stall

    def _well_typed(self) -> dict[int, list[Candidate]]:
        return _by_arity(self._well_typed_iter())

    def _well_typed_iter(self) -> Iterator[tuple[int, Candidate]]:
        """Every well-typed statement (with its left-hand arity), lazily: asking whether
        there is one stops at the first."""
        if self.done or self.statements >= self.max_statements:
            return
        dangling = self.dangling()
        used = self._call_counts
        stalled = self._stalled()
        unused = set(self.facts.fns) - self.fns_used
        # the statement that uses up the stall allowance is offered only when a statement
        # naming a new task fn (or the return) can follow it: no dead end at the bound
        last_stall = self.max_stall is not None and self.stall + 1 == self.max_stall
        # stalled, only a statement naming a new fn may follow: with `in_order`, the next
        # declared one (the fns used so far are the declared ones' prefix)
        naming = None
        if stalled:
            naming = frozenset(unused if not self.in_order else
                               [f for f in self.facts.fns if f not in self.fns_used][:1])
        for c in itertools.chain(self._calls(self.refs(), naming=naming),
                                 self._comprehensions(fn_only=stalled)):
            names_new = bool(_fns_in(c.text, unused))
            if stalled and not names_new:
                continue
            if c.text in self.written:
                continue
            if not self._keeps_order(c.text):
                continue
            if any(t.rank > self.facts.max_rank or total_dims(t) > self.facts.max_dims
                   for t in c.outs):
                continue
            if any(used.get(k, 0) >= _same_call_bound(k) for k in c.calls):
                continue
            if dangling - self._produced_among(c.consumes) + len(c.outs) > MAX_DANGLING:
                continue
            if not self._after(c).kinds_reachable():
                continue
            if last_stall and not names_new and not self._after(c).progresses():
                continue
            yield 0 if c.is_list else len(c.outs), c
        for c in self._fn_lists():
            if (not stalled or set(c.fn_list or ()) & unused) and self._keeps_order(c.text):
                yield 0, c

    def progresses(self) -> bool:
        """Whether a return or some well-typed statement (budget window aside) follows."""
        return self._some_line("progresses", self._well_typed_iter())

    def _keeps_order(self, text: str) -> bool:
        """Whether the task fns used after a statement naming `text` are a prefix of the
        declared ones (always true without `in_order`)."""
        if not self.in_order:
            return True
        used = self.fns_used | _fns_in(text, self.facts.fns)
        return used == set(list(self.facts.fns)[: len(used)])

    def kinds_reachable(self) -> bool:
        """Whether every task fn not used yet can still get its input, and every declared
        output its values. Any stream the program makes from here on is made of atoms of the
        live streams, or of a fn's output once its input atoms are there (`atoms`), so a state
        where a needed atom is out of reach is a dead branch however the budget is spent. The
        0.5B model consumed the softmax it needed twice and wrote 13 shape statements more
        (run 20261201-042419-e877); this cuts the branch at the statement that kills it."""
        live = frozenset().union(*(atoms(r.stype.dtype) for r in self.refs()))
        key = (live, self.fns_used)
        memo = self.facts.kinds_memo
        if key not in memo:
            fn_atoms = self.facts.fn_atoms
            have = closure(live, fn_atoms)
            memo[key] = (self.facts.out_atoms <= have
                         and all(fn_atoms[f][0] <= have for f in set(fn_atoms) - self.fns_used))
        return memo[key]

    def dangling(self) -> int:
        """Streams the program produced and nothing consumed yet (list elements counted)."""
        n = sum(1 for name, _ in self.streams
                if name not in self.facts.inputs and name not in self.consumed)
        for name, elems in self.lists:
            if name not in self.consumed:
                n += sum(1 for i in range(len(elems)) if f"{name}[{i}]" not in self.consumed)
        return n

    def _produced_among(self, keys: frozenset[str]) -> int:
        lists = dict(self.lists)
        n = 0
        for k in keys:
            if k in lists:
                n += sum(1 for i in range(len(lists[k])) if f"{k}[{i}]" not in self.consumed)
            elif k not in self.facts.inputs:
                n += 1
        return n

    def returns(self) -> list[Candidate]:
        """`return ...` texts whose streams have the task's declared output types, in order."""
        return list(self._returns())

    def has_return(self) -> bool:
        """Whether some `return` is offered (stops at the first: the budget's last statement
        asks this of every candidate)."""
        return next(self._returns(), None) is not None

    def _returns(self) -> Iterator[Candidate]:
        if self.done:
            return
        outs = self.facts.outputs
        # Only once every task fn is used: every reference program uses all of its task's fns,
        # and 40 of the 45 wrong answers of the 1.5B model returned before using them all.
        missing = set(self.facts.fns) - self.fns_used
        # Only sinks: streams nothing consumed (returning does not consume, so a consumed stream
        # is legal, but no reference program returns one, and small models return an early
        # stream whose name is a prefix of the one they meant: `return E1` for E15). An input
        # returned unchanged computes nothing (write Identity() if that is meant).
        every = [r for r in self.refs()
                 if r.key not in self.facts.inputs and r.key not in self.consumed]
        options = [[r for r in every if _matches(r.stype, o)] for o in outs]
        needed = self.facts.needed
        for combo in itertools.islice(itertools.product(*options), 0 if missing else 2000):
            if (len({r.key for r in combo}) == len(combo)
                    and needed <= frozenset().union(*(self.deps_of(r.text) for r in combo))):
                yield Candidate(", ".join(r.text for r in combo),
                                tuple(r.stype for r in combo), frozenset())
        # `return step.P(...).apply(...)`: one call names at most MAX_FNS_PER_CALL fns
        if len(outs) == 1 and len(missing) <= MAX_FNS_PER_CALL:
            for c in self._calls(self.refs(), fn_only=bool(missing), covering=needed):
                if (not c.is_list and len(c.outs) == 1 and _matches(c.outs[0], outs[0])
                        and missing <= _fns_in(c.text, missing) and self._keeps_order(c.text)
                        and c.text not in self.written
                        and needed <= self.deps_of(c.text, c.shape_only)):
                    yield c

    @functools.cached_property
    def _call_counts(self) -> Counter[str]:
        """How often each call (`step.P(params)`) was written so far."""
        return Counter(self.calls)

    @functools.cached_property
    def _deps_map(self) -> dict[str, frozenset[str]]:
        return dict(self.deps)

    def deps_of(self, text: str, shape_only: frozenset[str] = frozenset()) -> frozenset[str]:
        """The task inputs and fns a statement text (or a returned stream) is computed from:
        the fns it names and the ancestors of the names it reads for their values (not of
        `shape_only`: RepeatRef's ref gives a count, no value)."""
        deps = self._deps_map
        out = set(_fns_in(text, self.facts.fns))
        for name in IDENT.findall(text):
            if name not in shape_only:
                out |= deps.get(name, frozenset())
        return frozenset(out)

    def bind(self, names: Sequence[str], cand: Candidate) -> ProgramState:
        """The state after `names = <cand>` (names already checked with `name_ok`)."""
        named = _fns_in(cand.text, self.facts.fns)
        after = replace(self, consumed=self.consumed | cand.consumes,
                        statements=self.statements + 1, calls=self.calls + cand.calls,
                        fns_used=self.fns_used | named,
                        written=(self.written | {cand.text}) if self.reuse else self.written,
                        consumed_order=(tuple(k for k in self.consumed_order
                                              if k not in cand.consumes)
                                        + tuple(sorted(cand.consumes))) if self.reuse else (),
                        stall=0 if named - self.fns_used else self.stall + 1)
        came_from = self.deps_of(cand.text, cand.shape_only)
        after = replace(after, deps=self.deps + tuple((n, came_from) for n in names))
        if cand.fn_list is not None:
            return replace(after, fn_lists=self.fn_lists + ((names[0], cand.fn_list),))
        if cand.is_list:
            return replace(after, lists=self.lists + ((names[0], cand.outs),))
        new = tuple((n, SType(t.dtype, t.shape, n)) for n, t in zip(names, cand.outs,
                                                                   strict=True))
        return replace(after, streams=self.streams + new)

    def finish(self, cand: Candidate) -> ProgramState:
        return replace(self, consumed=self.consumed | cand.consumes, done=True,
                       statements=self.statements + 1)

    # -- enumeration ---------------------------------------------------------------------------
    def _calls(self, refs: list[Ref], fn_only: bool = False,
               covering: frozenset[str] | None = None,
               naming: frozenset[str] | None = None) -> Iterator[Candidate]:
        """Every well-typed call on `refs`; with `fn_only`, only of primitives that take a fn
        (the only ones that can name a task fn); with `covering`, only on arguments computed
        from all of it but the fns one call can name (checked before any typing); with
        `naming`, only calls naming one of those fns (parameters filtered before typing)."""
        fns = frozenset(self.facts.fns)
        for pdef in REGISTRY.values():
            if (fn_only or naming is not None) and not any(
                    p.kind.startswith("fn") for p in pdef.params):
                continue
            for args_text, ins, keys, shape_only in self._arguments(pdef, refs):
                if covering is not None:
                    rest = covering - self.deps_of(args_text, shape_only)
                    if len(rest) > MAX_FNS_PER_CALL or not rest <= fns:
                        continue
                sets = None if naming is None else self._param_values_naming(
                    pdef, ins[0].rank, naming)
                yield from self._typed(pdef, args_text, ins, keys, sets, shape_only=shape_only)

    def _param_values_naming(self, pdef: PrimitiveDef, rank: int, naming: frozenset[str]
                             ) -> list[tuple[dict[str, Any], dict[str, str]]]:
        """The parameter combinations of `pdef` that name one of the fns `naming`."""
        key = (pdef.name, tuple(p.name for p in pdef.params), rank, naming)
        memo = self.facts.param_memo
        if key not in memo:
            fn_params = [p.name for p in pdef.params if p.kind.startswith("fn")]
            memo[key] = [(values, texts) for values, texts in self._param_values(pdef, rank)
                         if any(texts.get(name) in naming for name in fn_params)]
        return memo[key]

    def _typed(self, pdef: PrimitiveDef, args_text: str, ins: Sequence[SType],
               keys: frozenset[str],
               param_sets: list[tuple[dict[str, Any], dict[str, str]]] | None = None,
               shape_only: frozenset[str] = frozenset()) -> Iterator[Candidate]:
        rank = ins[0].rank
        has_fn = any(p.kind.startswith("fn") for p in pdef.params)
        for values, texts in (param_sets or self._param_values(pdef, rank)):
            outs = self._type_call(pdef, values, ins)
            if outs is None:
                continue
            if not has_fn and _moves_nothing(ins, outs):
                continue
            n = pdef.output_count(values)
            call = f"step.{pdef.name}({', '.join(f'{k}={v}' for k, v in texts.items())})"
            text = f"{call}.apply({args_text})"
            # `a = ...`, `a, b = ...`
            yield Candidate(text, outs, keys, calls=(call,), shape_only=shape_only)
            if pdef.outputs != 1 and n is not None and pdef.args != "stream":
                # Partition: `parts = ...` binds a list
                yield Candidate(text, outs, keys, is_list=True, calls=(call,),
                                shape_only=shape_only)

    def _type_call(self, pdef: PrimitiveDef, values: dict[str, Any],
                   ins: Sequence[SType]) -> tuple[SType, ...] | None:
        """Output types if the primitive's constructor and typing rule accept, else None."""
        key = (pdef.name, tuple((k, _hashable(v)) for k, v in values.items()),
               tuple((x.dtype, x.shape) for x in ins))
        memo = self.facts.type_memo
        self.facts.typed_calls[0] += 1
        if key in memo:
            return memo[key]
        outs = self._type_call_uncached(pdef, values, ins)
        if outs is None or not self._fresh_in(outs, ins):
            memo[key] = outs
            return outs
        # A fresh dim (a Partition's lengths) is named after the statement that makes it, not
        # by a process-wide counter: within one program each statement gets its own, and every
        # sibling state the search visits shares them, so the memos above hit on the parts
        # (with counter names, the expert tasks spent 150 s on one line's options).
        # What the typing rules remember of a fresh dim (the selector that routed a part, for
        # Merge) goes with the new name, and a different fact makes a different name: sibling
        # states type different Partitions at the same statement.
        old = sorted(_symbols(outs) - _symbols(ins) - set(self.facts.sizes))
        names = {}
        for i, x in enumerate(old):
            fact = re.sub(r"\W+", "_", fresh_dim_fact(x)).strip("_")
            names[x] = f"P_dyn_s{self.statements}_{i}" + (f"_{fact}" if fact else "")
            alias_fresh_dim(names[x], x)
        return tuple(_renamed(x, names) for x in outs)

    def _fresh_in(self, outs: Sequence[SType], ins: Sequence[SType]) -> bool:
        """Whether `outs` hold a dim symbol neither `ins` nor the task has (a Partition's
        lengths): such a result may not be memoised, each call must get its own."""
        return not _symbols(outs) <= _symbols(ins) | set(self.facts.sizes)

    def _type_call_uncached(self, pdef: PrimitiveDef, values: dict[str, Any],
                            ins: Sequence[SType]) -> tuple[SType, ...] | None:
        try:
            with step.Session(binding=dict(self.facts.binding)):
                prim = pdef.cls(**values)
                outs = prim.typing(list(ins))
        except step.StepError:
            return None
        if any(isinstance(d.coeff, Fraction) and d.try_evaluate(self.facts.binding) is None
               for _, shp in outs for d in shp):
            return None  # a split of a dynamic dim (a Partition's length): unprovable, so
            # it fails at run time whenever the data's length is not a multiple
        return tuple(SType(dt, shp) for dt, shp in outs)

    def _param_values(self, pdef: PrimitiveDef, rank: int
                      ) -> list[tuple[dict[str, Any], dict[str, str]]]:
        """Every combination of parameter values from the kinds' domains: (value, text)."""
        key = (pdef.name, tuple(p.name for p in pdef.params), rank)
        memo = self.facts.param_memo
        if key not in memo:
            memo[key] = self._param_values_uncached(pdef, rank)
        return memo[key]

    def _param_values_uncached(self, pdef: PrimitiveDef, rank: int
                               ) -> list[tuple[dict[str, Any], dict[str, str]]]:
        domains: list[list[tuple[str, Any, str] | None]] = []
        for p in pdef.params:
            dom: list[tuple[str, Any, str] | None] = [
                (p.name, v, t) for v, t in self._domain(p, rank)]
            if not p.required:
                dom = [None, *dom]
            domains.append(dom)
        out = []
        for combo in itertools.product(*domains):
            values = {c[0]: c[1] for c in combo if c is not None}
            texts = {c[0]: c[2] for c in combo if c is not None}
            out.append((values, texts))
        return out

    def _domain(self, p: Param, rank: int) -> list[tuple[Any, str]]:
        f = self.facts
        if p.kind == "fn_stateless":
            return [(fn, n) for n, fn in f.fns.items() if not fn.stateful]
        if p.kind == "fn_stateful":
            return [(fn, n) for n, fn in f.fns.items() if fn.stateful]
        ints = int_literals(p.kind, rank)
        if p.kind == "axis":
            return [(k, str(k)) for k in ints]
        if p.kind == "axes":
            return [(list(ints[i:j + 1]), str(list(ints[i:j + 1])))
                    for i in range(len(ints)) for j in range(i, len(ints))]
        if p.kind == "size":
            return [(d, n) for n, d in f.sizes.items()] + [(k, str(k)) for k in ints]
        if p.kind == "count":
            named = [(v, n) for n, v in f.ints.items() if v > 0]
            return named + [(k, str(k)) for k in ints]
        raise ValueError(f"unknown parameter kind {p.kind!r} of {p.name}")

    def _arguments(self, pdef: PrimitiveDef, refs: list[Ref]
                   ) -> Iterator[tuple[str, list[SType], frozenset[str], frozenset[str]]]:
        """(text, types, what it consumes, names read only for their shape) of each way to
        apply `pdef` to `refs`."""
        form = pdef.args
        none: frozenset[str] = frozenset()
        if form in ("stream", "streams"):
            for r in refs:
                yield r.text, [r.stype], frozenset({r.key}), none
        if form in ("streams", "zip"):
            for combo in self._tuples(refs):
                yield ("(" + ", ".join(r.text for r in combo) + ")",
                       [r.stype for r in combo], frozenset(r.key for r in combo), none)
        if form == "pair":
            for a, b in itertools.permutations(refs, 2):
                yield (f"({a.text}, {b.text})", [a.stype, b.stype], frozenset({a.key, b.key}),
                       _shape_only(pdef, (a, b)))
        if form == "parts_sel":
            for name, elems in self.whole_lists():
                for r in refs:
                    if r.owner == name:
                        continue
                    yield (f"({name}, {r.text})", [*elems, r.stype],
                           frozenset({name, r.key}), none)

    def _tuples(self, refs: list[Ref]) -> Iterator[tuple[Ref, ...]]:
        """Ordered tuples (2..MAX_TUPLE streams, one shape) whose concatenated fields are a
        contiguous part of some fn input or output type: nothing else can ever be consumed."""
        useful = self.facts.useful_tuples
        prefixes = {u[:i] for u in useful for i in range(1, len(u) + 1)}

        def grow(chosen: tuple[Ref, ...], fields: tuple[ElemType, ...]) -> Iterator[tuple[Ref, ...]]:
            if len(chosen) >= 2 and fields in useful:
                yield chosen
            if len(chosen) == MAX_TUPLE:
                return
            for r in refs:
                if r in chosen or (chosen and not shapes_equal(r.stype.shape,
                                                              chosen[0].stype.shape)):
                    continue
                nf = fields + tuple(fields_of(r.stype.dtype))
                if nf in prefixes:
                    yield from grow(chosen + (r,), nf)

        yield from grow((), ())

    def _comprehensions(self, fn_only: bool = False) -> Iterator[Candidate]:
        """`[step.P(...).apply(p) for p in L]`, its one-level nested form
        `[step.P(...).apply(step.Q(...).apply(p)) for p in L]`, and
        `[step.P(fn=f, ...).apply(p) for f, p in zip([fn_a, ...] | fs, L)]`; with `fn_only`,
        only those whose outer primitive takes a fn."""
        for name, elems in self.whole_lists():
            keys = frozenset({name})
            yield from self._per_element(name, elems, keys, None, fn_only)
            for q in REGISTRY.values():
                if q.args == "stream" and q.outputs == 1 and not any(
                        p.kind.startswith("fn") for p in q.params):
                    yield from self._per_element(name, elems, keys, q, fn_only)
            yield from self._zipped(name, elems, keys)

    def _per_element(self, name: str, elems: tuple[SType, ...], keys: frozenset[str],
                     inner: PrimitiveDef | None, fn_only: bool = False) -> Iterator[Candidate]:
        """The comprehensions over list `name` (memoised by its element types: every state
        after a Partition, and every state the look-ahead visits, offers the same ones)."""
        key = (tuple((e.dtype, e.shape) for e in elems), inner and inner.name, fn_only)
        memo = self.facts.comprehension_memo
        found = memo.get(key)
        heads = self._per_element_heads(elems, inner, fn_only) if found is None else found
        seen = []
        for head, outs, calls in heads:
            seen.append((head, outs, calls))
            yield Candidate(f"[{head} for {ELEM} in {name}]", outs, keys, is_list=True,
                            calls=calls)
        # reached only when the caller took them all (asking whether one exists stops early)
        if found is None and not any(self._fresh_in(outs, elems) for _, outs, _ in seen):
            memo[key] = seen

    def _per_element_heads(self, elems: tuple[SType, ...], inner: PrimitiveDef | None,
                           fn_only: bool
                           ) -> Iterator[tuple[str, tuple[SType, ...], tuple[str, ...]]]:
        outer = [p for p in REGISTRY.values()
                 if p.args in ("stream", "streams") and p.outputs == 1
                 and (not fn_only or any(x.kind.startswith("fn") for x in p.params))]
        if not outer:
            return
        inner_sets: list[tuple[str, tuple[SType, ...], tuple[str, ...]]] = []
        if inner is None:
            inner_sets = [(ELEM, elems, ())]
        else:
            for values, texts in self._param_values(inner, elems[0].rank):
                outs = [self._type_call(inner, values, [e]) for e in elems]
                if all(o is not None and len(o) == 1 for o in outs):
                    params = ", ".join(f"{k}={v}" for k, v in texts.items())
                    icall = f"step.{inner.name}({params})"
                    inner_sets.append((f"{icall}.apply({ELEM})",
                                       tuple(o[0] for o in outs if o is not None), (icall,)))
        for arg, ins, icalls in inner_sets:
            for pdef in outer:
                for values, texts in self._param_values(pdef, ins[0].rank):
                    outs = [self._type_call(pdef, values, [e]) for e in ins]
                    if any(o is None or len(o) != 1 for o in outs):
                        continue
                    call = f"step.{pdef.name}({', '.join(f'{k}={v}' for k, v in texts.items())})"
                    yield (f"{call}.apply({arg})", tuple(o[0] for o in outs if o is not None),
                           (call, *icalls))

    def _zipped(self, name: str, elems: tuple[SType, ...], keys: frozenset[str]
                ) -> Iterator[Candidate]:
        for pdef in REGISTRY.values():
            fn_params = [p for p in pdef.params if p.kind.startswith("fn")]
            if pdef.args not in ("stream", "streams") or pdef.outputs != 1 or len(fn_params) != 1:
                continue
            fp = fn_params[0]
            rest = [p for p in pdef.params if p is not fp]
            rest_def = replace(pdef, params=tuple(rest))
            for values, texts in self._param_values(rest_def, elems[0].rank):
                per: list[list[tuple[str, SType]]] = []
                for e in elems:
                    ok = []
                    for fv, fname in self._domain(fp, e.rank):
                        o = self._type_call(pdef, {fp.name: fv, **values}, [e])
                        if o is not None and len(o) == 1:
                            ok.append((fname, o[0]))
                    per.append(ok)
                params = ", ".join([f"{fp.name}={FNV}"] + [f"{k}={v}" for k, v in texts.items()])
                pcall = f"step.{pdef.name}({params})"
                call = f"{pcall}.apply({ELEM})"
                for combo in itertools.islice(itertools.product(*per), 500):
                    fns = ", ".join(c[0] for c in combo)
                    yield Candidate(f"[{call} for {FNV}, {ELEM} in zip([{fns}], {name})]",
                                    tuple(c[1] for c in combo), keys, is_list=True,
                                    calls=(pcall,))
                for fl_name, fl in self.fn_lists:
                    if len(fl) != len(elems):
                        continue
                    chosen = []
                    for fname, opts in zip(fl, per, strict=True):
                        hit = [o for o in opts if o[0] == fname]
                        if not hit:
                            break
                        chosen.append(hit[0][1])
                    else:
                        yield Candidate(f"[{call} for {FNV}, {ELEM} in zip({fl_name}, {name})]",
                                        tuple(chosen), keys, is_list=True, calls=(pcall,))

    def _fn_lists(self) -> Iterator[Candidate]:
        """`fs = [fn_a, fn_b, fn_c]` — only as long as some list of streams could use it."""
        lengths = {len(ts) for _, ts in self.whole_lists()}  # only once a list can use it
        stateless = [n for n, fn in self.facts.fns.items() if not fn.stateful]
        for n in sorted(lengths):
            if n > 4:
                continue
            for combo in itertools.islice(itertools.product(stateless, repeat=n), 256):
                yield Candidate("[" + ", ".join(combo) + "]", (), frozenset(), fn_list=combo)


def _same_call_bound(call: str) -> int:
    """How often one call (`step.P(params)`) may be written in a program."""
    return MAX_SAME_BARE_CALL if call.endswith("()") else MAX_SAME_CALL


def _shape_only(pdef: PrimitiveDef, args: Sequence[Ref]) -> frozenset[str]:
    """The names among `args` (one per `pdef.arg_names`) that only the registry's
    `shape_args` read: their values never reach the result."""
    if not pdef.shape_args:
        return frozenset()
    shaped: set[str] = set()
    valued: set[str] = set()
    for arg_name, ref in zip(pdef.arg_names, args, strict=True):
        (shaped if arg_name in pdef.shape_args else valued).update(IDENT.findall(ref.text))
    return frozenset(shaped - valued)


def _paper_values(task: Task) -> dict[str, int]:
    """The size symbols' values at the paper binding, read without running `global`: explicit
    binding values, then `X_value = <int>` lines of `global`, then the paper's defaults. Only
    when `global` computes a size in code does this fall back to running it (as `bindings()`
    does; `bench` has by then run the same code in a sandboxed worker, in its task check)."""
    _label, base, _seed, over = requested_bindings(task.spec.bindings)[0]
    declared = _declared_ints(task.spec.global_)
    values: dict[str, int] = {}
    for k in dict.fromkeys([*ALWAYS_BOUND, *base, *task.symbols]):
        if k in over:
            values[k] = over[k]
        elif f"{k}_value" in declared:
            values[k] = declared[f"{k}_value"]
        elif k in base:
            values[k] = base[k]
        else:
            return dict(task.bindings()[0].values)
    return values


def _declared_ints(global_src: str | None) -> dict[str, int]:
    """`NAME_value = <int literal>` assignments at the top level of a task's `global` code,
    read from its syntax tree (never run)."""
    try:
        tree = ast.parse(global_src or "")
    except SyntaxError:
        return {}
    out: dict[str, int] = {}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id.endswith("_value")
                and isinstance(node.value, ast.Constant) and type(node.value.value) is int):
            out[node.targets[0].id] = node.value.value
    return out


def _symbols(types: Sequence[SType]) -> set[str]:
    """The size symbols in the shapes and element types of `types`."""
    dims = [d for t in types for d in t.shape]
    dims += [d for t in types for f in fields_of(t.dtype) for d in elem_dims(f)]
    return {sym for d in dims for sym in d.symbols}


def _by_arity(statements: Iterable[tuple[int, Candidate]]) -> dict[int, list[Candidate]]:
    by: dict[int, list[Candidate]] = {}
    for k, c in statements:
        by.setdefault(k, []).append(c)
    return by


def _renamed(t: SType, names: dict[str, str]) -> SType:
    """`t` with the dim symbols in `names` renamed."""
    def d(x: Dim) -> Dim:
        if not any(sym in names for sym, _ in x.factors):
            return x
        return Dim(x.coeff, tuple(sorted((names.get(sym, sym), p) for sym, p in x.factors)),
                   tuple(names.get(sym, sym) for sym in x.order))

    def e(x: Scalar | Multihot) -> Scalar | Multihot:
        return Multihot(x.dtype, d(x.n)) if isinstance(x, Multihot) else x

    def f(x: Scalar | Multihot | Buffer) -> Scalar | Multihot | Buffer:
        if isinstance(x, Buffer):
            return Buffer(e(x.elem), tuple(d(y) for y in x.shape))
        return e(x)

    dtype = t.dtype
    new = TupleType(tuple(f(x) for x in dtype.fields)) if isinstance(dtype, TupleType) \
        else f(dtype)
    return SType(new, tuple(d(y) for y in t.shape), t.name)


def _hashable(value: Any) -> object:
    """A parameter value as a memo key (lists, e.g. `L=[1]`, as tuples)."""
    if isinstance(value, list | tuple):
        return tuple(_hashable(v) for v in value)
    return value


def _moves_nothing(ins: Sequence[SType], outs: tuple[SType, ...]) -> bool:
    """One stream in, one out, same element type and shape, and no fn to compute anything:
    the statement can only pass the stream on (small models write chains of these)."""
    return (len(ins) == 1 and len(outs) == 1 and outs[0].dtype == ins[0].dtype
            and outs[0].shape == ins[0].shape)


def _fns_in(text: str, names: Iterable[str]) -> set[str]:
    """The fn names among `names` that a statement text mentions."""
    return {n for n in names if re.search(rf"(?<![\w.]){re.escape(n)}(?!\w)", text)}


def _matches(s: SType, out: tuple[ElemType, tuple[Dim, ...]]) -> bool:
    dtype, shape = out
    return s.dtype == dtype and shapes_equal(s.shape, shape)
