"""The two constraints a request can carry: the task's grammar, or its typed statement space."""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from stepsmith.agents.guardian import rule_repair
from stepsmith.llm.constraint import CONSTRAIN_MODES, Constraint, LineCursor, LineRejected
from stepsmith.tasks.task import Task

from .grammar import task_grammar, task_lark
from .nearby import NEARBY_VERSION, neighbours
from .space import IDENT, MAX_STATEMENTS, Candidate, Facts, ProgramState
from .statements import INDENT, PREFIX, SUFFIX, LineOptions, Rejected, advance

# Bump when the language the decoder offers changes (statement spellings, domains): it is part
# of the cache key, so answers decoded under an older space are not replayed.
DECODER_VERSION = "typed-20"

@dataclass(frozen=True)
class Budget:
    """What one attempt of search `deepen` may write: at most `statements` statements, at
    most `stall` statements in a row that name no task fn not used before (None: any), and,
    when `in_order`, the task's fns first named in their declared order."""

    statements: int
    stall: int | None = None
    in_order: bool = False
    reuse: bool = False  # streams may be used again (the answer gets explicit copies)

    def __str__(self) -> str:
        return (f"{self.statements}" + ("" if self.stall is None else f"s{self.stall}")
                + ("o" if self.in_order else "") + ("r" if self.reuse else ""))


# Search `deepen`: the budgets of a sample's successive attempts. Every solve of the local
# models so far was a short program chaining the task's fns, while failures wander for
# 200-500 tokens through statements that compute nothing (Bufferize, Streamify, Promote,
# Repeat...). Every reference program uses every task fn; of the 26 paper tasks' references,
# 6 fit 6 statements with at most one statement in a row that names no new fn, and 14 fit 10
# statements with at most two. So the first attempts stay on the task's computation, and the
# last is the plain budget: every program the plain decoder can write stays reachable.
#
# Every attempt also lets a stream be used again (`reuse`: the answer gets the Copy), and the
# first two keep the task's fns in declared order (every reference does). On 8 tasks at one
# sample each (0.5B), this turned 3-attempt dead ends (12 backtracks each, 80-200 s a sample)
# into complete programs in 17-35 s, and solved attn_online_softmax besides the two index
# tasks that solved before.
DEEPEN_BUDGETS = (Budget(6, 1, in_order=True, reuse=True),
                  Budget(10, 2, in_order=True, reuse=True),
                  Budget(MAX_STATEMENTS, reuse=True))

# After a dead end the decoder looks one statement further ahead where it backs up to: it
# offers only statements after which some line is offered (`ProgramState.leads_on`). Checked
# everywhere, that look-ahead costs seconds a line; without it, the 1.5B model spent its 12
# backtracks a sample on siblings of a line that had already died (typed-15 traces: 12 orders
# of one fn list, 12 args of one Map). The look-ahead of one attempt may type at most this
# many calls (a count, not seconds: the same search on every machine; 5-13 s on this
# project's machine); statements left unchecked stay offered, so the bound costs
# look-ahead, never a program.
LOOKAHEAD_TYPINGS = 200_000


@dataclass
class LookAhead:
    """The calls one attempt's look-ahead may still type (shared by its cursors)."""

    left: int = LOOKAHEAD_TYPINGS


# A judge takes a whole answer (prefix, lines, return, suffix) and says whether it verifies.
Judge = Callable[[str], bool]
# At most this many returns are judged after one line (multi-output tasks can offer many).
MAX_JUDGED_PER_LINE = 6


@dataclass(frozen=True)
class TypedCursor:
    """A position in a typed decoding: the state, its options (minus banned lines)."""

    state: ProgramState
    banned: frozenset[str] = frozenset()
    body: str = ""  # the lines so far
    fresh: frozenset[str] = frozenset()  # names the last line bound
    judge: Judge | None = field(default=None, compare=False, repr=False)
    # set where a dead end was backed up to: offer only statements that lead on
    careful: bool = False
    lookahead: LookAhead = field(default_factory=LookAhead, compare=False, repr=False)
    _options: list[LineOptions] = field(default_factory=list, compare=False, repr=False)

    def options(self) -> LineOptions:
        if not self._options:
            opts = LineOptions.of(self.state)
            if self.careful:
                opts = self._leading_on(opts)
            if self.banned:
                opts = _without(opts, self.banned)
            self._options.append(opts)
        return self._options[0]

    def _leading_on(self, opts: LineOptions) -> LineOptions:
        """`opts` without the statements after which nothing is offered; when none is left
        (and no return), the state is recorded dead, so the look-ahead one line up sees it."""
        kept: dict[int, dict[str, Candidate]] = {}
        unchecked = 0
        for arity, cands in opts.assignments.items():
            for text, cand in cands.items():
                if self.lookahead.left <= 0:
                    unchecked += 1
                else:
                    before = self.state.facts.typed_calls[0]
                    leads = self.state.leads_on(cand)
                    self.lookahead.left -= self.state.facts.typed_calls[0] - before
                    if not leads:
                        continue
                kept.setdefault(arity, {})[text] = cand
        if not opts.returns and not kept and not unchecked:
            self.state.mark_dead()
        return LineOptions(kept, opts.returns, opts.taken)

    @property
    def complete(self) -> bool:
        return self.state.done

    def pattern(self) -> str | None:
        if self.state.done:
            return None
        opts = self.options()
        return None if opts.empty else opts.pattern()

    def feed(self, line: str) -> TypedCursor:
        try:
            after = advance(self.state, self.options(), line)
        except Rejected as exc:
            raise LineRejected(str(exc)) from None
        return TypedCursor(after, body=self.body + line,
                           fresh=frozenset(after.bound() - self.state.bound()), judge=self.judge,
                           lookahead=self.lookahead)

    def ban(self, line: str, *, dead_end: bool = False) -> TypedCursor:
        return TypedCursor(self.state, self.banned | {_key(line)}, self.body, self.fresh,
                           self.judge, careful=self.careful or dead_end,
                           lookahead=self.lookahead)

    def shortcut(self) -> str | None:
        """A `return` line the judge verified, returning a stream the last line made.

        The model may not see that a stream it just wrote already computes the task's output
        (small models write on past it); the simulator can. Only streams are tried, not new
        calls: the program returned is exactly the lines the model wrote.
        """
        if self.judge is None or self.state.done or not self.fresh:
            return None
        tried = 0
        for cand in self.options().returns.values():
            if cand.consumes or not set(IDENT.findall(cand.text)) & self.fresh:
                continue
            line = f"{INDENT}return {cand.text}\n"
            if self.judge(explicit_copies(PREFIX + self.body + line + SUFFIX,
                                          list(self.state.facts.inputs))):
                return line
            tried += 1
            if tried >= MAX_JUDGED_PER_LINE:
                break
        return None


def without_dead_statements(body: str) -> str:
    """`body` (statements and a `return`) without the statements nothing returned depends on.

    Typed answers often hold them: the model wrote a stream, went on without it, and the judge
    returned a later one. A dead statement computes nothing the task sees, but it still costs a
    `Copy` of what it reads, and a demonstration made from the answer teaches the next prompts
    to write it. STeP streams have no side effects, so dropping it changes no returned value.
    Bodies that are not one statement per line, or have no `return`, come back unchanged."""
    lines = body.splitlines(keepends=True)
    parsed: list[ast.stmt] = []
    for line in lines:
        try:
            tree = ast.parse(line.strip())
        except SyntaxError:
            return body
        if len(tree.body) != 1:
            return body
        parsed.append(tree.body[0])
    if not parsed or not isinstance(parsed[-1], ast.Return):
        return body
    live = _loaded(parsed[-1])
    keep = [True] * len(lines)
    for i in range(len(parsed) - 2, -1, -1):
        stmt = parsed[i]
        if not isinstance(stmt, ast.Assign):
            return body
        bound = {n.id for t in stmt.targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        if bound & live:
            live |= _loaded(stmt.value)
        else:
            keep[i] = False
    return "".join(line for line, k in zip(lines, keep, strict=True) if k)


def _loaded(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def explicit_copies(answer: str, inputs: list[str]) -> str:
    """`answer` without dead statements and with a `Copy` before each stream its lines use more
    than once (the STeP core's affine repair). A typed decoding with `reuse` lets the model use
    a stream again; the answer it hands on obeys the affine rule all the same. Answers that
    reuse nothing and hold no dead statement come back unchanged."""
    if not answer.startswith(PREFIX):
        return answer
    rest = answer[len(PREFIX):]
    body, sep, tail = rest.partition(SUFFIX)
    return PREFIX + rule_repair(without_dead_statements(body), inputs) + sep + tail


def _key(line: str) -> str:
    """What a banned line is compared by: its right-hand side (names do not matter)."""
    text = line.strip()
    if text.startswith("return "):
        return text
    return "= " + text.partition(" = ")[2]


def _without(opts: LineOptions, banned: frozenset[str]) -> LineOptions:
    rets = {t: c for t, c in opts.returns.items() if f"return {t}" not in banned}
    by = {k: {t: c for t, c in cs.items() if f"= {t}" not in banned}
          for k, cs in opts.assignments.items()}
    return LineOptions(by, rets, opts.taken)


@dataclass(frozen=True)
class TaskConstraint:
    """`grammar` or `typed` decoding of answers to one task."""

    task: Task
    mode: str
    facts: Facts
    max_statements: int = MAX_STATEMENTS
    prefix: str = PREFIX
    suffix: str = SUFFIX
    judge: Judge | None = field(default=None, compare=False, repr=False)
    # budgets of successive attempts (search `deepen`); () = one attempt
    budgets: tuple[Budget, ...] = ()
    # search `nearby`: neighbours of a failed complete attempt judged (0: none)
    nearby: int = 0

    @classmethod
    def for_task(cls, task: Task, mode: str, judge: Judge | None = None,
                 budgets: tuple[Budget | int, ...] = (), nearby: int = 0) -> TaskConstraint:
        if mode not in CONSTRAIN_MODES or mode == "none":
            raise ValueError(f"constraint mode must be 'grammar' or 'typed'; found {mode!r}")
        if judge is not None and mode != "typed":
            raise ValueError("a prefix judge needs typed decoding (it judges whole lines)")
        plans = tuple(b if isinstance(b, Budget) else Budget(b) for b in budgets)
        if plans and (judge is None or any(b.statements < 1 or (b.stall or 0) < 0
                                           for b in plans)):
            raise ValueError("restarts need a judge (to know an attempt failed) and budgets >= 1")
        if nearby and (judge is None or mode != "typed" or nearby < 0):
            raise ValueError("search nearby needs typed decoding and a judge")
        return cls(task=task, mode=mode, facts=Facts.from_task(task), judge=judge,
                   budgets=plans, nearby=nearby)

    @property
    def identity(self) -> str:
        digest = hashlib.sha256(self.grammar().encode()).hexdigest()[:16]
        judged = "+judge" if self.judge is not None else ""
        deepen = f"+deepen{'-'.join(map(str, self.budgets))}" if self.budgets else ""
        near = f"+nearby{self.nearby}v{NEARBY_VERSION}" if self.nearby else ""
        return f"{self.mode}{judged}{deepen}{near}:{DECODER_VERSION}:{digest}"

    def grammar(self) -> str:
        return task_grammar(self.task, self.facts)

    def lark(self) -> str:
        return task_lark(self.task, self.facts)

    def lines(self, attempt: int = 0) -> TypedCursor | None:
        budgets = self.budgets or (Budget(self.max_statements),)
        if attempt >= len(budgets):
            return None
        b = budgets[attempt]
        return TypedCursor(ProgramState.start(self.facts, b.statements, b.stall, b.in_order,
                                              b.reuse), judge=self.judge)

    def answer(self, body: str, complete: bool) -> str:
        return explicit_copies(self.prefix + body + (self.suffix if complete else ""),
                               list(self.facts.inputs))

    def verified(self, answer: str) -> bool:
        return self.judge is not None and self.judge(answer)

    def repaired(self, trail: Sequence[tuple[LineCursor, str]]) -> tuple[str, str, int] | None:
        """Search `nearby`: the first program one line away from the complete attempt `trail`
        (each line with the cursor it was written at) that the judge verifies, as (answer,
        the edit, neighbours judged); None when none does (or the search is off)."""
        if not self.nearby or self.judge is None:
            return None
        steps = [(c, line) for c, line in trail if isinstance(c, TypedCursor)]
        if len(steps) != len(trail):
            return None
        judged = 0
        for nb in neighbours(steps, self.nearby):
            judged += 1
            answer = self.answer(nb.body, True)
            if self.judge(answer):
                return answer, nb.edit, judged
        return None


def constraint_for(task: Task, mode: str, judge: Judge | None = None,
                   budgets: tuple[Budget | int, ...] = (), nearby: int = 0) -> Constraint | None:
    """The constraint for `mode` (None for "none"); `judge` verifies prefixes (typed only);
    `budgets` makes a sample restart with these statement budgets until one verifies;
    `nearby` judges that many one-line neighbours of each failed complete attempt."""
    if mode == "none":
        return None
    return TaskConstraint.for_task(task, mode, judge, budgets, nearby)
