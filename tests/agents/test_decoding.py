"""The typed decoder's space is complete (every reference program is accepted, statement by
statement, by the line patterns and by the task grammar) and sound (programs built only from
offered statements pass every static check of the verifier)."""

from __future__ import annotations

import random
import re
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from llguidance import LLMatcher, LLTokenizer, TokenizerWrapper
from llguidance._grammar_from import grammar_from

from stepsmith.agents.decoding.constraint import (
    DEEPEN_BUDGETS,
    Budget,
    TaskConstraint,
    TypedCursor,
    constraint_for,
    without_dead_statements,
)
from stepsmith.agents.decoding.space import Facts, ProgramState
from stepsmith.agents.decoding.statements import (
    PREFIX,
    SUFFIX,
    LineOptions,
    Rejected,
    advance,
    program_lines,
)
from stepsmith.agents.extract import extract_impl
from stepsmith.llm.constraint import LineRejected
from stepsmith.step.registry import REGISTRY
from stepsmith.tasks.suite import benchmark_tasks, demo_tasks, get_task
from stepsmith.verify import VerifierPool

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "llm"))
from llm_fake_server import FakeLLMServer  # noqa: E402

ALL = [t for t in [*benchmark_tasks(), *demo_tasks()] if t.impl]
_FACTS: dict[int, Facts] = {}


def _shared_facts(task) -> Facts:
    """One Facts per task for the walks over reference programs: its typing and reachability
    memos are shared as in a real decoding (a sample's attempts share one), which keeps these
    walks from re-typing the same calls in every test (CI time)."""
    if id(task) not in _FACTS:
        _FACTS[id(task)] = Facts.from_task(task)
    return _FACTS[id(task)]


STATIC_KINDS = {"unparsable", "parse_error", "disallowed", "type_error", "shape_error",
                "dtype_error", "affine", "output_mismatch"}


class _Bytes:
    """A byte-level vocabulary (one token per byte + EOS) for grammar tests without a model."""

    def __init__(self) -> None:
        self.tokens = [bytes([i]) for i in range(256)] + [b"\xff<eos>"]
        self.eos_token_id = 256
        self.bos_token_id = None
        self.special_token_ids = [256]

    def __call__(self, s: bytes) -> list[int]:
        return list(s)


@pytest.fixture(scope="module")
def pool():
    with VerifierPool(workers=1) as p:
        yield p


@pytest.fixture(scope="module")
def byte_tok() -> LLTokenizer:
    return LLTokenizer(TokenizerWrapper(_Bytes()))


def _accepts(tok: LLTokenizer, grammar: str, text: str) -> bool:
    m = LLMatcher(tok, grammar)
    assert not m.is_error(), m.get_error()
    ok = m.consume_tokens(list(text.encode()))
    return bool(ok and m.is_accepting() and not m.is_error())


@pytest.mark.parametrize("task", ALL, ids=lambda t: t.name)
def test_every_reference_program_is_accepted_line_by_line(task, byte_tok) -> None:
    state = ProgramState.start(_shared_facts(task))
    for line in program_lines(task.impl or ""):
        opts = LineOptions.of(state)
        pattern = opts.pattern()
        full = f"  {line}\n"
        # llguidance is what the decoder runs the pattern with (Python's `re` took 0.6 s a
        # line to compile these ~280 KB patterns: most of this test's CI time)
        assert _accepts(byte_tok, LLMatcher.grammar_from_regex(pattern), full), (
            f"line pattern rejects {line!r}")
        state = advance(state, opts, line)
    assert state.done, "the reference program must end with an offered return"


@pytest.mark.parametrize("task", ALL, ids=lambda t: t.name)
def test_a_budget_of_exactly_the_references_length_still_accepts_it(task) -> None:
    """The last statement of the budget is offered only when a return follows it: a budget
    that ends exactly where the reference does must keep every reference line."""
    lines = program_lines(task.impl or "")
    state = ProgramState.start(_shared_facts(task), max_statements=len(lines) - 1)
    for line in lines:
        state = advance(state, LineOptions.of(state), line)
    assert state.done


@pytest.mark.parametrize("task", ALL, ids=lambda t: t.name)
def test_look_ahead_after_a_dead_end_keeps_every_reference_line(task) -> None:
    """The look-ahead a cursor gets where a dead end was backed up to is exact: under a
    budget that ends where the reference does (where look-ahead prunes most), a careful
    cursor at every position still offers the reference's next line."""
    lines = program_lines(task.impl or "")
    cursor = TypedCursor(ProgramState.start(_shared_facts(task), len(lines) - 1),
                         careful=True)
    for line in lines:
        assert cursor.options().count() > 0
        after = advance(cursor.state, cursor.options(), line)  # raises if not offered
        cursor = TypedCursor(after, careful=True)
    assert cursor.complete


def test_a_dead_end_is_seen_from_the_line_before() -> None:
    """rope_neox_stream under deepen's first budget (typed-15 trace): after `E3 = Bufferize`
    three lines are offered and each leads nowhere. The careful cursor there offers nothing
    and records the state dead; backing up, the line before no longer offers Bufferize (nor
    any line into a dead state) and keeps lines that lead on."""
    task = get_task("rope_neox_stream")
    c = TaskConstraint.for_task(task, "typed", judge=lambda a: False, budgets=DEEPEN_BUDGETS)
    first, bufferize = ("  E2 = step.Scan(fn=fn_add, b=1).apply(E0)\n",
                        "  E3 = step.Bufferize(a=1).apply(E1)\n")
    root = c.lines(0)
    assert root is not None
    before = root.feed(first)
    dead = before.feed(bufferize)
    plain = dead.options()
    assert plain.count() > 0  # the one-statement window alone does not see it
    careful = dead.ban(next(iter(plain.assignments[1])), dead_end=True)
    assert careful.pattern() is None and not dead.state.viable()
    backed = before.ban(bufferize, dead_end=True)
    offered = [cand for cs in backed.options().assignments.values() for cand in cs.values()]
    assert offered and all(before.state.leads_on(cand) for cand in offered)
    unchecked = [cand for cs in LineOptions.of(before.state).assignments.values()
                 for cand in cs.values()]
    assert len(offered) < len(unchecked)


def test_the_last_statement_of_the_budget_always_leaves_a_return() -> None:
    task = get_task("gemm_abt_buffers")
    lines = program_lines(task.impl or "")
    state = ProgramState.start(Facts.from_task(task), max_statements=len(lines))
    # one statement before the reference's last (from its midpoint, no single statement makes
    # a stream computed from both inputs: nothing would be offered)
    for line in lines[:-2]:
        state = advance(state, LineOptions.of(state), line)
    last = replace(state, max_statements=state.statements + 1)
    unfiltered = [c for cs in last._well_typed().values() for c in cs]
    offered = {(c.text, len(c.outs), c.is_list) for cs in last.assignments().values()
               for c in cs}
    assert 0 < len(offered) < len(unfiltered)  # the window prunes, and leaves a way out
    for c in unfiltered:
        kept = (c.text, len(c.outs), c.is_list) in offered
        assert kept == bool(last._after(c).returns()), c.text


@pytest.mark.parametrize("task", ALL, ids=lambda t: t.name)
def test_task_grammar_accepts_the_reference_answer(task, byte_tok) -> None:
    c = TaskConstraint.for_task(task, "grammar")
    answer = PREFIX + "".join(f"  {ln}\n" for ln in program_lines(task.impl or "")) + SUFFIX
    grammar = LLMatcher.grammar_from_lark(c.lark())
    assert _accepts(byte_tok, grammar, answer)
    assert not _accepts(byte_tok, grammar, answer.replace("step.", "stp.", 1))
    # the GBNF servers get is the same rule list; it must at least be a valid grammar
    is_error, messages = LLMatcher.validate_grammar_with_warnings(
        grammar_from("gbnf", c.grammar()))
    assert not is_error, messages


def _random_program(task, rng: random.Random) -> str | None:
    """A program made only of offered statements: a random number of the reference's first
    lines (each one offered, so fed through the cursor), then random choices with fresh names.
    Starting part-way keeps complete programs likely: a return needs streams computed from
    every input and fn, which a walk from the start rarely reaches within the budget."""
    cursor: TypedCursor = TaskConstraint.for_task(task, "typed").lines()
    lines = program_lines(task.impl or "")[:-1]
    lines = lines[: rng.randrange(len(lines) + 1)]
    for line in lines:
        cursor = cursor.feed(line)
    k = 0
    while not cursor.complete:
        opts = cursor.options()
        if opts.empty:
            return None
        if opts.returns and (rng.random() < 0.6 or not any(opts.assignments.values())):
            line = "return " + rng.choice(sorted(opts.returns))
        else:
            # lean towards statements that use a task fn not used yet, or make a stream computed
            # from more inputs and fns than any so far: a return needs them all
            state = cursor.state
            unused = set(state.facts.fns) - state.fns_used
            widest = max(len(d) for _, d in state.deps)
            choices = sorted((a, rhs) for a, cs in opts.assignments.items() for rhs in cs)
            useful = [c for c in choices if any(f in c[1] for f in unused)
                      or len(state.deps_of(c[1])) > widest]
            arity, rhs = rng.choice(useful if useful and rng.random() < 0.8 else choices)
            rhs = rhs.replace("\x00e", "p").replace("\x00f", "f")
            names = [f"v{k + i}" for i in range(max(1, arity))]
            k += len(names)
            line = f"{', '.join(names)} = {rhs}"
        cursor = cursor.feed(line)
        lines.append(line)
    return "\n".join(lines)


@pytest.mark.parametrize("name", ["gemm_bias_relu", "norm_layernorm", "rope_neox_rows",
                                  "expert_linear_sum", "index_softmax_top1"])
def test_programs_of_offered_statements_pass_every_static_check(name, pool) -> None:
    task = get_task(name)
    rng = random.Random(7)
    checked = 0
    for _ in range(60):
        if checked >= 5:  # 8 cost CI 4.7 min on these five tasks; 5 keeps every task covered
            break
        src = _random_program(task, rng)
        if src is None:
            continue
        verdict = pool.verify(task, src)
        kind = verdict.kind.value if verdict.kind is not None else None
        assert kind not in STATIC_KINDS, f"{kind}: {verdict.feedback}\n{src}"
        checked += 1
    assert checked >= 3


def test_the_statement_budget_leaves_a_margin_over_every_reference() -> None:
    from stepsmith.agents.decoding.space import MAX_STATEMENTS

    longest = max(len(program_lines(t.impl or "")) for t in ALL)
    assert longest + 2 <= MAX_STATEMENTS, f"a reference has {longest} lines"


def test_ill_typed_and_reused_names_are_rejected() -> None:
    task = get_task("norm_rmsnorm_rows")
    state = ProgramState.start(Facts.from_task(task))
    opts = LineOptions.of(state)
    first = program_lines(task.impl or "")[0]
    with pytest.raises(Rejected):  # the input's own name cannot be rebound
        advance(state, opts, "E0 = " + first.partition(" = ")[2])
    with pytest.raises(Rejected):  # b beyond the rank fails the registry's typing rule
        advance(state, opts, "x = step.Accum(fn=fn_sum, b=5).apply(E0)")
    cursor = TaskConstraint.for_task(task, "typed").lines()
    with pytest.raises(LineRejected):
        cursor.feed("y = step.Bogus().apply(E0)")


def test_a_consumed_stream_is_never_offered_again() -> None:
    task = get_task("norm_rmsnorm_rows")
    state = ProgramState.start(Facts.from_task(task))
    line = program_lines(task.impl or "")[0]
    state = advance(state, LineOptions.of(state), line)
    consumed = sorted(state.consumed)
    opts = LineOptions.of(state)
    for cands in opts.assignments.values():
        for text in cands:
            for name in consumed:
                assert not re.search(rf"[(, ]{name}[),]", text), (name, text)


def test_with_reuse_a_used_stream_is_offered_again_and_the_answer_gets_its_copy(pool) -> None:
    """The 0.5B model chained rmsnorm's fns on x and then had no x left for the division;
    with `reuse` it may name x again, and the answer handed on carries the `Copy`."""
    task = get_task("norm_rmsnorm_rows")
    c = TaskConstraint.for_task(task, "typed", judge=lambda _answer: False,
                                budgets=(Budget(6, 1, in_order=True, reuse=True),))
    cursor = c.lines(0)
    assert cursor is not None
    for line in ["x = step.Map(fn=fn_square).apply(E0)", "m = step.Map(fn=fn_mean).apply(x)",
                 "e = step.Map(fn=fn_addeps).apply(m)", "s = step.Map(fn=fn_sqrt).apply(e)"]:
        cursor = cursor.feed(f"  {line}\n")
    offered = cursor.options().assignments[1]
    assert "step.Map(fn=fn_div).apply((E0, s))" in offered
    assert "step.Map(fn=fn_square).apply(E0)" not in offered  # written already: nothing new
    cursor = cursor.feed("  y = step.Map(fn=fn_div).apply((E0, s))\n")
    assert "x" not in cursor.options().returns  # consumed streams are still not returned
    cursor = cursor.feed("  return y\n")
    assert cursor.complete
    answer = c.answer(cursor.body, True)
    impl = extract_impl(answer)
    assert impl.splitlines()[0].endswith("= step.Copy().apply(E0)")
    assert impl.count("(E0)") == 1 and "(E0," not in impl  # E0 consumed once, by the Copy
    assert pool.verify(task, impl).passed
    # without reuse E0 is gone after its first use, and answers pass through unchanged
    plain = TaskConstraint.for_task(task, "typed")
    cursor = plain.lines(0)
    assert cursor is not None
    cursor = cursor.feed("  x = step.Map(fn=fn_square).apply(E0)\n")
    assert not any("E0" in t for cs in cursor.options().assignments.values() for t in cs)
    assert plain.answer(cursor.body, False) == PREFIX + cursor.body


def test_answers_drop_the_statements_nothing_returned_depends_on(pool) -> None:
    """The 1.5B model's first solve of attn_online_softmax (run 20261202-151453-375b) began
    with a Bufferize of x that nothing used, so its answer carried a Copy of x for it; the
    answer handed on drops the dead statement, and with it the Copy."""
    task = get_task("attn_online_softmax")
    c = TaskConstraint.for_task(task, "typed")
    body = ("  E2 = step.Bufferize(a=1).apply(E0)\n"
            "  E3 = step.Map(fn=fn_scale_score).apply(E0)\n"
            "  E4 = step.Zip().apply((E3, E1))\n"
            "  E5 = step.Accum(fn=fn_online_softmax, b=1).apply(E4)\n"
            "  E6 = step.Map(fn=fn_take_output).apply(E5)\n"
            "  return E6\n")
    impl = extract_impl(c.answer(body, True))
    assert "Bufferize" not in impl and "Copy" not in impl
    assert impl.splitlines()[0] == "E3 = step.Map(fn=fn_scale_score).apply(E0)"
    assert pool.verify(task, impl).passed
    # whatever a statement is, it goes when no returned stream depends on it
    assert without_dead_statements("  a = step.Map(fn=f).apply(E0)\n  return E1\n") == "  return E1\n"
    # without a return (incomplete), or not one statement per line, nothing is dropped
    assert without_dead_statements("  a = step.Map(fn=f).apply(E0)\n") == "  a = step.Map(fn=f).apply(E0)\n"
    loop = "  for x in y:\n    z = x\n  return E1\n"
    assert without_dead_statements(loop) == loop


def test_a_return_must_be_computed_from_every_input_and_fn() -> None:
    """The 1.5B model's typed-13 answer to gemm + bias + ReLU (run 20261202-151453-375b)
    computed the right stream and returned a copy of the bias input instead; under typed-15
    only streams computed from every input and fn may be returned."""
    task = get_task("gemm_bias_relu")
    cursor = TaskConstraint.for_task(task, "typed").lines(0)
    assert cursor is not None
    for line in ["E1a, E1b = step.Copy().apply(E1)", "E2a, E2b = step.Copy().apply(E2)",
                 "E3 = step.Map(fn=fn_scale).apply((E0, E1a))",
                 "E4 = step.Accum(fn=fn_addrow, b=1).apply(E3)",
                 "E5 = step.Map(fn=fn_addbias).apply((E4, E2a))"]:
        cursor = cursor.feed(f"  {line}\n")
    # fn_relu is not used yet: only a returned call that applies it is offered
    assert all("fn=fn_relu" in r for r in cursor.options().returns)
    state = cursor.state
    assert state.deps_of("E5") == {"E0", "E1", "E2", "fn_scale", "fn_addrow", "fn_addbias"}
    cursor = cursor.feed("  E7 = step.Map(fn=fn_relu).apply(E5)\n")
    returns = cursor.options().returns
    assert "E7" in returns and "E2b" not in returns and "E1b" not in returns
    with pytest.raises(LineRejected):
        cursor.feed("  return E2b\n")


def test_a_shape_reference_is_not_an_ancestor() -> None:
    """RepeatRef reads its ref only for a count (the registry's `shape_args`). The 1.5B
    model's answer to bmm_mnk_mdk (run 20261203-081245-9f08, iteration 1) multiplied E1 by
    itself and took the count from E0: typed-17 counted E0 as an ancestor and offered the
    return; 15 of the 53 wrong answers the typed runs of 2026-12-02/03 completed were of
    that kind, none of the 53 right ones."""
    assert REGISTRY["RepeatRef"].shape_args == ("ref",)
    cursor = TaskConstraint.for_task(get_task("bmm_mnk_mdk"), "typed").lines(0)
    assert cursor is not None
    for line in ["E3, E4 = step.Copy(n=2).apply(E1)", "E5 = step.Map(fn=fn_dot).apply((E3, E4))",
                 "E6 = step.Bufferize(a=1).apply(E5)", "E7 = step.RepeatRef().apply((E6, E0))"]:
        cursor = cursor.feed(f"  {line}\n")
    assert "E0" not in cursor.state.deps_of("E7")
    assert not any("E7" in r for r in cursor.options().returns)
    with pytest.raises(LineRejected):
        cursor.feed("  return step.Streamify().apply(E7)\n")


def test_no_reference_program_has_a_dead_statement() -> None:
    """Pruning keeps every statement of the 57 reference programs: it drops only what no
    returned stream depends on, and every reference statement feeds its outputs."""
    for task in ALL:
        body = "".join(f"  {ln}\n" for ln in program_lines(task.impl or ""))
        assert without_dead_statements(body) == body, task.name


def test_reuse_keeps_the_inputs_and_the_streams_consumed_last() -> None:
    from stepsmith.agents.decoding.space import REUSE_RECENT

    task = get_task("norm_rmsnorm_rows")
    state = ProgramState.start(Facts.from_task(task), reuse=True)
    lines = ["x = step.Map(fn=fn_square).apply(E0)", "m = step.Map(fn=fn_mean).apply(x)",
             "e = step.Map(fn=fn_addeps).apply(m)", "s = step.Map(fn=fn_sqrt).apply(e)",
             "y = step.Map(fn=fn_div).apply((E0, s))"]
    for line in lines:
        state = advance(state, LineOptions.of(state), line)
    assert REUSE_RECENT == 3
    usable = {r.key for r in state.refs()}
    assert usable == {"E0", "y", "s", "e", "m"}  # x was consumed before the last three


def test_only_streams_nothing_consumed_are_returned() -> None:
    """Returning does not consume, but no reference returns a consumed stream, and a small
    model writes `return E1` meaning `E15`: only sinks are offered."""
    task = get_task("gemm_bias_relu")
    lines = program_lines(task.impl or "")
    state = ProgramState.start(Facts.from_task(task))
    for line in lines[:-1]:
        state = advance(state, LineOptions.of(state), line)
    returned = {c.text for c in state.returns()}
    assert lines[-1] == "return E6" and "E6" in returned
    assert not returned & {"E3", "E4", "E5"}  # consumed on the way to E6


def test_no_return_before_every_task_fn_is_used() -> None:
    """Every reference uses all of its task's fns; an answer that returns before (40 of the
    1.5B model's 45 wrong answers did) computes something else."""
    task = get_task("gemm_bias_relu")
    lines = program_lines(task.impl or "")
    state = ProgramState.start(Facts.from_task(task))
    for line in lines[:-2]:  # E5 has the output type, but fn_relu is not used yet
        state = advance(state, LineOptions.of(state), line)
    returned = {c.text for c in state.returns()}
    assert returned == {"step.Map(fn=fn_relu).apply(E5)"}


@pytest.mark.parametrize("task", ALL, ids=lambda t: t.name)
def test_no_offered_call_makes_a_kind_of_value_from_nothing(task) -> None:
    """The fact `kinds_reachable` stands on, checked against the typing rule of every call
    offered in every state of every reference program: a call's outputs hold only atoms of
    the streams it consumes, or of fns' outputs reachable from them."""
    from stepsmith.agents.decoding.space import atoms, closure

    state = ProgramState.start(_shared_facts(task))
    fn_atoms = state.facts.fn_atoms
    for line in program_lines(task.impl or ""):
        types = {r.key: [r.stype.dtype] for r in state.refs()}
        types.update({n: [t.dtype for t in ts] for n, ts in state.whole_lists()})
        for c in [*state._calls(state.refs()), *state._comprehensions()]:
            src = frozenset().union(*(atoms(d) for k in c.consumes for d in types[k]))
            made = frozenset().union(*(atoms(o.dtype) for o in c.outs))
            assert made <= closure(src, fn_atoms), (line, c.text)
        state = advance(state, LineOptions.of(state), line)


def _accepted_under(task, budget: Budget) -> bool:
    state = ProgramState.start(_shared_facts(task), budget.statements, budget.stall,
                               budget.in_order, budget.reuse)
    for line in program_lines(task.impl or ""):
        try:
            state = advance(state, LineOptions.of(state), line)
        except Rejected:
            return False
    return state.done


def test_a_stall_bound_keeps_an_attempt_on_the_tasks_fns() -> None:
    """Under `max_stall=1`, after one statement that names no new task fn, every offered
    statement names one (the 0.5B model wrote 13 shape statements in a row otherwise)."""
    task = get_task("attn_online_softmax")
    state = ProgramState.start(Facts.from_task(task), 6, max_stall=1)
    state = advance(state, LineOptions.of(state), "B = step.Bufferize(a=1).apply(E1)")
    assert state.stall == 1
    offered = [c.text for cs in state.assignments().values() for c in cs]
    unused = set(state.facts.fns) - state.fns_used
    assert offered and all(any(f in t for f in unused) for t in offered)
    free = ProgramState.start(Facts.from_task(task), 6)
    free = advance(free, LineOptions.of(free), "B = step.Bufferize(a=1).apply(E1)")
    assert "step.Streamify().apply(B)" in {c.text for cs in free.assignments().values()
                                           for c in cs}
    # a statement naming a new fn resets the count
    state = advance(state, LineOptions.of(state), "S = step.Map(fn=fn_scale_score).apply(E0)")
    assert state.stall == 0


def test_the_statement_that_ends_the_stall_allowance_leaves_a_new_fn_to_name() -> None:
    """At the stall bound only statements after which a new task fn (or the return) can be
    named are offered: the 0.5B model's first line `x = step.Bufferize(a=1).apply(E0)` left
    no fn applicable, and each such line cost the attempt a backtrack."""
    task = get_task("norm_rmsnorm_rows")
    state = ProgramState.start(Facts.from_task(task), 6, max_stall=1, in_order=True)
    offered = {c.text for cs in state.assignments().values() for c in cs}
    assert "step.Copy(n=2).apply(E0)" in offered or "step.Copy().apply(E0)" in offered
    assert "step.Bufferize(a=1).apply(E0)" not in offered
    for text in offered:
        cand = next(c for cs in state.assignments().values() for c in cs if c.text == text)
        after = state._after(cand)
        assert after.returns() or any(after.assignments().values()), text
    # without the bound the same statement stays offered (the plain budget loses nothing)
    free = ProgramState.start(Facts.from_task(task), 6)
    assert "step.Bufferize(a=1).apply(E0)" in {c.text for cs in free.assignments().values()
                                               for c in cs}


def test_deepen_budgets_keep_short_references_and_end_with_the_plain_budget() -> None:
    from stepsmith.agents.decoding.constraint import DEEPEN_BUDGETS
    from stepsmith.agents.decoding.space import MAX_STATEMENTS

    first, second, last = DEEPEN_BUDGETS
    assert last.statements == MAX_STATEMENTS and last.stall is None and not last.in_order
    # references that chain the task's fns fit the first attempt
    for name in ("gemm_bias_relu", "index_softmax_top1", "norm_rmsnorm_rows",
                 "attn_online_softmax"):
        assert _accepted_under(get_task(name), first), name
    for name in ("attn_scan_divsum", "etoe_top1_unweighted"):
        task = get_task(name)
        assert not _accepted_under(task, first), name
        assert _accepted_under(task, second), name
    # seven plumbing statements in a row: only the plain budget writes it
    assert not _accepted_under(get_task("gemm_abt_buffers"), second)


def test_every_reference_names_its_fns_in_declared_order() -> None:
    """The in-order rule of the first deepen attempts rejects no reference program (benchmark
    and demonstrations), at the budget of its own length; nor does `reuse` (the last)."""
    from stepsmith.agents.decoding.space import MAX_STATEMENTS

    for task in ALL:
        n = len(program_lines(task.impl or ""))
        assert _accepted_under(task, Budget(n, in_order=True)), task.name
        assert _accepted_under(task, Budget(MAX_STATEMENTS, reuse=True)), task.name


def test_in_order_offers_no_fn_before_the_ones_declared_before_it() -> None:
    task = get_task("norm_rmsnorm_rows")  # fn_square, fn_mean, fn_addeps, fn_sqrt, fn_div
    state = ProgramState.start(Facts.from_task(task), 6, in_order=True)
    offered = {c.text for cs in state.assignments().values() for c in cs}
    assert "step.Map(fn=fn_square).apply(E0)" in offered
    assert not any("fn_mean" in t or "fn_div" in t for t in offered)
    state = advance(state, LineOptions.of(state), "S = step.Map(fn=fn_square).apply(E0)")
    offered = {c.text for cs in state.assignments().values() for c in cs}
    assert "step.Map(fn=fn_mean).apply(S)" in offered
    assert not any("fn_addeps" in t or "fn_sqrt" in t for t in offered)
    # without the rule a later fn is offered first
    free = ProgramState.start(Facts.from_task(task), 6)
    assert "step.Map(fn=fn_mean).apply(E0)" in {c.text for cs in free.assignments().values()
                                                for c in cs}


def test_memoised_typing_gives_each_partition_its_own_lengths() -> None:
    """Typing results are memoised by input types, except those with a fresh dynamic dim:
    two Partitions of one program (different statements) must not get equal (zippable)
    lengths, while the alternatives offered for one statement share them (so the memos hit
    on their parts in every state the search visits)."""
    task = get_task("etoe_top1_unweighted")
    facts = Facts.from_task(task)
    state = ProgramState.start(facts)
    part = next(p for p in REGISTRY.values() if p.name == "Partition")
    for line in program_lines(task.impl or ""):  # up to where a Partition types
        calls = [c for c in state._calls(state.refs())
                 if c.calls[0].startswith("step.Partition")]
        if calls:
            break
        state = advance(state, LineOptions.of(state), line)
    call = calls[0]
    ins = [r.stype for r in state.refs() if r.key in call.consumes]
    values = next(v for v, t in state._param_values(part, ins[0].rank)
                  if f"step.Partition({', '.join(f'{k}={x}' for k, x in t.items())})"
                  == call.calls[0])
    a, b = state._type_call(part, values, ins), state._type_call(part, values, ins)
    later = replace(state, statements=state.statements + 1)._type_call(part, values, ins)
    assert a is not None and b is not None and later is not None
    assert a[0].shape == b[0].shape and a[0].shape != later[0].shape
    assert len({o.shape for o in a}) == len(a)  # each part its own length
    m = next(p for p in REGISTRY.values() if p.name == "Bufferize")
    x = [next(iter(facts.inputs.values()))]
    assert state._type_call(m, {"a": 1}, x) is state._type_call(m, {"a": 1}, x)


def test_merge_refuses_a_selector_that_did_not_route_its_parts() -> None:
    """The decoder renames a Partition's fresh lengths after their statement; Merge's typing
    rule must still know which selector routed them. The 1.5B model's expert_linear_sum
    answer (run 20261203-162531-4cb3) merged with `Repeat(n=E)` of the selector, typed-18 let
    it through and the simulator failed it with a shape error; the reference stays accepted."""
    task = get_task("expert_linear_sum")
    c = constraint_for(task, "typed", lambda answer: False, DEEPEN_BUDGETS)
    assert isinstance(c, TaskConstraint)
    wrong = ["Sel_a, Sel_b = step.Copy().apply(Sel)",
             "E1 = step.Repeat(n=E).apply(Sel_a)",
             "parts = step.Partition(N=E_value).apply((X, Sel_b))",
             "experts = [fn_expert0, fn_expert1, fn_expert2]",
             "outs = [step.Map(fn=f).apply(p) for f, p in zip(experts, parts)]"]
    cursor = c.lines(len(DEEPEN_BUDGETS) - 1)
    assert cursor is not None
    for line in wrong:
        cursor = cursor.feed(f"  {line}\n")
    with pytest.raises(LineRejected, match="not a well-typed statement"):
        cursor.feed("  E2 = step.Merge(fn=fn_add).apply((outs, E1))\n")
    opts = cursor.options()  # the input selector itself (used again, so copied) still merges
    offered = set(opts.returns) | {t for cs in opts.assignments.values() for t in cs}
    assert "step.Merge(fn=fn_add).apply((outs, Sel))" in offered
    assert "step.Merge(fn=fn_add).apply((outs, E1))" not in offered
    # a sibling state that partitions by the repeated selector gets lengths of its own name
    # (another fact), so the first Partition's Merge is still offered its own selector
    right = c.lines(len(DEEPEN_BUDGETS) - 1)
    assert right is not None
    for line in program_lines(task.impl or ""):
        right = right.feed(f"  {line}\n")
    assert right.complete


def test_a_statement_that_kills_a_needed_fn_input_is_not_offered() -> None:
    """index_softmax_top2 needs the softmax twice (top-2 selection and the renormalisation):
    consuming it in the selection without a Copy leaves fn_masked_renorm no Buffer input."""
    task = get_task("index_softmax_top2")
    state = ProgramState.start(Facts.from_task(task))
    first = program_lines(task.impl or "")[0]  # probs = step.Map(fn=fn_softmax).apply(L)
    state = advance(state, LineOptions.of(state), first)
    offered = {c.text for cs in state.assignments().values() for c in cs}
    assert "step.Copy().apply(probs)" in offered
    assert "step.Map(fn=fn_top2).apply(probs)" not in offered
    killed = next(c for c in state._calls(state.refs())
                  if c.text == "step.Map(fn=fn_top2).apply(probs)")
    assert not state._after(killed).kinds_reachable()


def test_banned_lines_are_not_offered() -> None:
    task = get_task("gemm_bias_relu")
    cursor = TaskConstraint.for_task(task, "typed").lines()
    first = program_lines(task.impl or "")[0]
    banned = cursor.ban(first)
    assert re.fullmatch(cursor.pattern() or "", f"  {first}\n")
    assert not re.fullmatch(banned.pattern() or "", f"  {first}\n")


def test_constraint_identity_depends_on_mode_and_task() -> None:
    a, b = get_task("gemm_bias_relu"), get_task("norm_layernorm")
    ids = {constraint_for(t, m).identity for t in (a, b) for m in ("grammar", "typed")}
    assert len(ids) == 4 and constraint_for(a, "none") is None


@pytest.mark.parametrize("kind,field", [("vllm", "structured_outputs"), ("sglang", "ebnf"),
                                        ("llamacpp", "grammar")])
def test_grammar_reaches_the_server_in_its_engines_field(kind, field, monkeypatch,
                                                         tmp_path) -> None:
    from stepsmith.llm import LLMClient
    from stepsmith.llm.store import CallStore

    monkeypatch.setenv("STEPSMITH_HOME", str(tmp_path))
    monkeypatch.setenv("STEPSMITH_SERVER_KIND", kind)
    server = FakeLLMServer()
    try:
        client = LLMClient(f"openai-compatible:coder@{server.url}/v1",
                           store=CallStore(tmp_path / "c.db"), max_retries=0)
        c = constraint_for(get_task("gemm_bias_relu"), "grammar")
        client.sample_sync([{"role": "user", "content": "hi"}], temperature=0.0, constraint=c)
        body = server.requests[0]["body"]
        sent = body[field]["grammar"] if kind == "vllm" else body[field]
        assert sent == c.grammar() and "::=" in sent
        # a second identical request with another constraint mode is not a cache hit
        client.sample_sync([{"role": "user", "content": "hi"}], temperature=0.0)
        assert len(server.requests) == 2
    finally:
        server.close()


def test_typed_mode_is_refused_by_servers(monkeypatch, tmp_path) -> None:
    from stepsmith.llm import LLMClient, LLMError
    from stepsmith.llm.store import CallStore

    server = FakeLLMServer()
    try:
        client = LLMClient(f"openai-compatible:coder@{server.url}/v1",
                           store=CallStore(tmp_path / "c.db"), max_retries=0)
        c = constraint_for(get_task("gemm_bias_relu"), "typed")
        with pytest.raises(LLMError, match="typed"):
            client.sample_sync([{"role": "user", "content": "hi"}], constraint=c)
        assert not server.requests
    finally:
        server.close()


@pytest.mark.parametrize("name", ["gemm_bias_relu", "norm_rmsnorm_rows", "index_softmax_top2"])
def test_the_prefix_judge_returns_exactly_when_the_output_is_written(name, pool) -> None:
    """Fed a reference's statements, the cursor's judged return appears at the statement
    that makes the (last) output stream, not before; the program it completes verifies."""
    from stepsmith.agents.decoding.judge import PrefixJudge
    from stepsmith.agents.extract import extract_impl

    task = get_task(name)
    lines = program_lines(task.impl or "")
    judge = PrefixJudge(task, pool)
    c = constraint_for(task, "typed", judge)
    assert isinstance(c, TaskConstraint) and "+judge" in c.identity
    cursor = c.lines()
    for i, line in enumerate(lines[:-1]):
        cursor = cursor.feed(f"  {line}\n")
        found = cursor.shortcut()
        if i < len(lines) - 2:
            assert found is None, f"judged a return too early, after {line!r}"
    assert found is not None and judge.passed == 1 and judge.calls >= 1
    done = cursor.feed(found)
    assert done.complete
    assert pool.verify(task, extract_impl(PREFIX + done.body + SUFFIX)).passed


def test_a_judge_that_never_agrees_adds_no_line() -> None:
    task = get_task("gemm_bias_relu")
    seen: list[str] = []
    c = constraint_for(task, "typed", lambda answer: bool(seen.append(answer)))
    assert isinstance(c, TaskConstraint)
    cursor = c.lines()
    for line in program_lines(task.impl or "")[:-1]:
        cursor = cursor.feed(f"  {line}\n")
        assert cursor.shortcut() is None
    assert seen  # it was asked, at least at the output statement


def test_search_needs_typed_decoding(pool) -> None:
    from stepsmith.agents.agent import Agent
    from stepsmith.llm.client import LLMClient
    from stepsmith.llm.testing import ScriptedBackend, echo

    with pytest.raises(ValueError, match="constrain='typed'"):
        Agent(LLMClient(ScriptedBackend(echo)), pool, constrain="none",
              search="prefix")
    with pytest.raises(ValueError, match="needs typed"):
        constraint_for(get_task("gemm_bias_relu"), "grammar", lambda answer: True)


def test_new_names_are_bounded_so_one_name_cannot_eat_the_token_budget() -> None:
    from stepsmith.agents.decoding.statements import MAX_NAME, fresh_name_re

    rx = re.compile(fresh_name_re({"x", "E0"}))
    assert rx.fullmatch("y" * MAX_NAME) and not rx.fullmatch("y" * (MAX_NAME + 1))
    assert rx.fullmatch("x" + "y" * (MAX_NAME - 1)) and not rx.fullmatch("x" + "y" * MAX_NAME)
    assert not rx.fullmatch("x") and not rx.fullmatch("E0") and rx.fullmatch("E01")
    # a model that wants to return before a return types is not bent into `returnE11 = ...`
    assert not rx.fullmatch("returnE11") and rx.fullmatch("retur") and rx.fullmatch("ret_x")
    longest = max(len(n) for t in ALL for n in re.findall(r"[A-Za-z_]\w*", t.impl or ""))
    assert longest <= MAX_NAME
    # a taken name of full length ends there: the 0.5B model was let write
    # `route_amax_amax_amax_amx纬` after `route_amax_amax_amax_amx` (run 20261201-041118-16f1)
    full = "r" * MAX_NAME
    rx = re.compile(fresh_name_re({full}))
    assert not rx.fullmatch(full) and not rx.fullmatch(full + "纬")
    assert not any(rx.fullmatch(full[:-1] + c) for c in "r纬") and rx.fullmatch(full[:-1] + "s")
    assert rx.fullmatch(full[:-1]) and not re.search(r"[^\x00-\x7f]", fresh_name_re({full}))


def test_a_typed_answer_without_return_is_incomplete_not_wrong(pool) -> None:
    """A typed decode that ran out of statements has no program: the sample says so (and the
    verifier is not asked), while a finished one is verified as usual."""
    import asyncio

    from stepsmith.agents.agent import Agent
    from stepsmith.llm.client import LLMClient
    from stepsmith.llm.testing import ScriptedBackend

    task = get_task("gemm_bias_relu")
    lines = program_lines(task.impl or "")
    cut = PREFIX + "".join(f"  {ln}\n" for ln in lines[:-1])
    whole = PREFIX + "".join(f"  {ln}\n" for ln in lines) + SUFFIX

    def attempt(answer: str):
        agent = Agent(LLMClient(ScriptedBackend(lambda *_: answer, finish_reason="dead_end")),
                      pool, method="single", constrain="typed")
        return asyncio.run(agent.attempt(task, [], temperature=0.7, sample_index=0))

    short = attempt(cut)
    assert short.failure_kind == "incomplete" and short.verdict is None
    assert "before a `return`" in short.feedback and "dead_end" in short.feedback
    assert attempt(whole).verdict.passed


def test_typing_facts_run_none_of_the_task_files_code(tmp_path) -> None:
    """Task files are code that runs only in verifier workers: a task whose `global` and
    reference would kill the process still gets its typed decoder, with the facts its benign
    twin gets (sizes read from `NAME_value = <int>` lines, fns compiled but never called)."""
    from stepsmith.tasks.loader import load_task

    src = (Path(__file__).resolve().parents[2] / "src/stepsmith/benchmarks/bench/expert"
           / "expert_linear_sum.yaml").read_text()
    benign = load_task(src)
    assert "E_value = " in (benign.spec.global_ or "")
    hostile_global = "global: |-\n  E_value = 3\n  ctx[E] = E_value\n  import os\n  os._exit(9)\n"
    text = re.sub(r"(?ms)^global:.*?(?=^\w)", hostile_global, src, count=1)
    text = text.replace("apply: |-\n", "apply: |-\n      import os; os._exit(9)\n", 1)
    hostile = load_task(text)
    assert hostile.spec.global_ != benign.spec.global_
    a, b = Facts.from_task(benign), Facts.from_task(hostile)  # would exit the test run
    assert (a.ints, a.binding, a.reserved, set(a.fns)) == (b.ints, b.binding, b.reserved, set(b.fns))
    assert a.ints["E_value"] == 3
    assert constraint_for(benign, "typed").identity == constraint_for(hostile, "typed").identity


@pytest.mark.parametrize("name", ["norm_rmsnorm_rows", "attn_scan_divsum"])
def test_stalled_states_share_look_ahead_answers_without_changing_one(name, monkeypatch) -> None:
    """States where only a statement naming a new fn may follow are memoised by a coarser key
    (the calls written count only where they hit their bound, ...): every look-ahead answer
    along the reference, under deepen's stall budgets, equals the answer under the full key."""
    from stepsmith.agents.decoding.constraint import DEEPEN_BUDGETS

    task = get_task(name)

    def answers(share: bool) -> list[bool]:
        monkeypatch.setattr(ProgramState, "SHARE_STALLED", share)
        out = []
        for budget in DEEPEN_BUDGETS[:2]:
            state = ProgramState.start(Facts.from_task(task), budget.statements, budget.stall,
                                       budget.in_order, budget.reuse)
            for line in program_lines(task.impl or ""):
                opts = LineOptions.of(state)
                out += [state.leads_on(cand) for cs in opts.assignments.values()
                        for cand in cs.values()]
                try:
                    state = advance(state, opts, line)
                except Rejected:
                    break
        return out

    shared = answers(share=True)
    assert shared == answers(share=False)
    assert True in shared and False in shared  # the look-ahead tells them apart here
