"""Search `nearby`: a failed complete program's one-line neighbours, judged by the verifier."""

from __future__ import annotations

import pytest

from stepsmith.agents.decoding.constraint import (
    DEEPEN_BUDGETS,
    TaskConstraint,
    TypedCursor,
    constraint_for,
)
from stepsmith.agents.decoding.judge import PrefixJudge, searched_constraint
from stepsmith.agents.decoding.nearby import MAX_NEARBY, NEARBY_VERSION, neighbours
from stepsmith.agents.decoding.statements import PREFIX, SUFFIX, program_lines
from stepsmith.agents.extract import extract_impl
from stepsmith.tasks.suite import get_task
from stepsmith.verify.pool import VerifierPool

# The 1.5B model's first attempt at attn_scan_divsum (run 20261203-153934-8fa3, call 1): the
# right dataflow, but the Zip puts the scan's (max, sum) before the scores, while fn_divsum
# reads (s, m, l, v). All three are fp32 streams, so no type tells them apart.
ZIPPED_WRONG = (
    "  E2 = step.Scan(fn=fn_expmaxdiff, b=1).apply(E0)\n"
    "  E3 = step.Zip().apply((E2, E0, E1))\n"
    "  E4 = step.Accum(fn=fn_divsum, b=1).apply(E3)\n"
    "  E5 = step.Map(fn=fn_take_output).apply(E4)\n"
    "  return E5\n"
)


@pytest.fixture(scope="module")
def pool():
    with VerifierPool(workers=1) as p:
        yield p


def _trail(c: TaskConstraint, body: str, attempt: int = 0) -> list[tuple[TypedCursor, str]]:
    cursor = c.lines(attempt)
    assert cursor is not None
    trail: list[tuple[TypedCursor, str]] = []
    for line in body.splitlines(keepends=True):
        trail.append((cursor, line))
        cursor = cursor.feed(line)
    assert cursor.complete
    return trail


def test_a_wrong_zip_order_is_one_line_from_the_right_program(pool) -> None:
    task = get_task("attn_scan_divsum")
    c, judge = searched_constraint(task, "typed", "nearby", pool)
    assert isinstance(c, TaskConstraint) and judge is not None
    assert not c.verified(c.answer(ZIPPED_WRONG, True))
    found = c.repaired(_trail(c, ZIPPED_WRONG))
    assert found is not None
    answer, edit, judged = found
    assert edit == ("line 2: 'E3 = step.Zip().apply((E2, E0, E1))' -> "
                    "'E3 = step.Zip().apply((E0, E2, E1))'")
    assert 1 <= judged <= MAX_NEARBY
    impl = extract_impl(answer)
    assert pool.verify(task, impl).passed
    # the answer is the model's program with that one line changed, plus the Copy it needs
    assert "step.Copy().apply(E0)" in impl and "step.Accum(fn=fn_divsum, b=1)" in impl


def test_each_neighbour_changes_one_line_to_one_the_cursor_offered_there() -> None:
    # rmsnorm's reference chains five fp32 fns: swapping one for another keeps every type
    task = get_task("norm_rmsnorm_rows")
    body = "".join(f"  {ln}\n" for ln in program_lines(task.impl or ""))
    c = constraint_for(task, "typed", lambda answer: False, DEEPEN_BUDGETS, MAX_NEARBY)
    assert isinstance(c, TaskConstraint)
    trail = _trail(c, body, attempt=len(DEEPEN_BUDGETS) - 1)  # the widest budget
    found = neighbours(trail, limit=10_000)
    assert len(found) > 5 and any(nb.same_types for nb in found)
    assert any(not nb.same_types for nb in found)
    old = body.splitlines(keepends=True)
    assert len({nb.body for nb in found}) == len(found)  # no program twice
    for nb in found:
        new = nb.body.splitlines(keepends=True)
        assert len(new) == len(old)
        changed = [i for i, (a, b) in enumerate(zip(old, new, strict=True)) if a != b]
        i = changed[0]
        assert nb.edit.startswith(f"line {i + 1}: ")
        cursor = trail[i][0].feed(new[i])  # the replacement is a line offered right there
        if nb.same_types:  # tier 1: that line only
            assert changed == [i], nb.edit
            continue
        # tier 2: that line and the return, which is well typed after the model's lines
        assert changed in ([i], [i, len(old) - 1]), nb.edit
        for line in new[i + 1:]:
            cursor = cursor.feed(line)
        assert cursor.complete
    assert [nb.body for nb in neighbours(trail, limit=5)] == [
        nb.body for nb in found[:5]]


# The 1.5B model's first attempt at norm_rmsnorm_stream (run 20261203-155009-9065, call 16):
# the rms right, then divided too early and returned a RepeatRef of that. The same two calls,
# rewired (RepeatRef the rms, divide x by it), verify.
RMS_EARLY = (
    "  E1 = step.Map(fn=fn_square).apply(E0)\n"
    "  E2 = step.Accum(fn=fn_add, b=1).apply(E1)\n"
    "  E3 = step.Map(fn=fn_divbyd).apply(E2)\n"
    "  E4 = step.Map(fn=fn_addeps).apply(E3)\n"
    "  E5 = step.Map(fn=fn_sqrt).apply(E4)\n"
    "  E6 = step.Map(fn=fn_div).apply((E5, E3))\n"
    "  return step.RepeatRef().apply((E6, E0))\n"
)


def test_the_models_own_calls_rewired_are_judged_early(pool) -> None:
    task = get_task("norm_rmsnorm_stream")
    c, judge = searched_constraint(task, "typed", "nearby", pool)
    assert isinstance(c, TaskConstraint) and judge is not None
    trail = _trail(c, RMS_EARLY, attempt=1)
    assert not c.verified(c.answer(RMS_EARLY, True))
    found = c.repaired(trail)
    assert found is not None
    answer, edit, judged = found
    assert edit == ("line 6: 'E6 = step.Map(fn=fn_div).apply((E5, E3))' -> "
                    "'E6 = step.RepeatRef().apply((E5, E0))', "
                    "'return step.RepeatRef().apply((E6, E0))' -> "
                    "'return step.Map(fn=fn_div).apply((E0, E6))'")
    assert judged < MAX_NEARBY
    assert pool.verify(task, extract_impl(answer)).passed
    # it is a tier-2 neighbour: its calls are the model's, so it comes before other rewirings
    order = neighbours(trail)
    rewired = [nb for nb in order if not nb.same_types]
    assert edit in [nb.edit for nb in rewired[:2]]


def test_under_the_first_budget_the_zips_other_order_comes_first() -> None:
    task = get_task("attn_scan_divsum")
    c = constraint_for(task, "typed", lambda answer: False, DEEPEN_BUDGETS, MAX_NEARBY)
    assert isinstance(c, TaskConstraint)
    found = neighbours(_trail(c, ZIPPED_WRONG))
    # the only alternative with the same types; the others change a line's output types
    assert [nb.edit for nb in found if nb.same_types] == [
        "line 2: 'E3 = step.Zip().apply((E2, E0, E1))' -> 'E3 = step.Zip().apply((E0, E2, E1))'"]
    assert found[0].same_types


def test_a_right_program_and_a_search_without_nearby_are_left_alone(pool) -> None:
    task = get_task("attn_scan_divsum")
    lines = program_lines(task.impl or "")
    body = "".join(f"  {ln}\n" for ln in lines)
    deepen, _ = searched_constraint(task, "typed", "deepen", pool)
    assert isinstance(deepen, TaskConstraint)
    assert deepen.repaired(_trail(deepen, ZIPPED_WRONG)) is None  # off under plain deepen
    assert "+nearby" not in deepen.identity
    near, _ = searched_constraint(task, "typed", "nearby", pool)
    assert isinstance(near, TaskConstraint)
    assert near.identity.replace(f"+nearby{MAX_NEARBY}v{NEARBY_VERSION}", "") == deepen.identity
    # the reference verifies as written: nothing to repair, and no neighbour is asked for it
    assert near.verified(near.answer(body, True))


def test_nearby_needs_typed_decoding_and_a_judge() -> None:
    task = get_task("gemm_bias_relu")
    with pytest.raises(ValueError, match="nearby needs typed decoding and a judge"):
        constraint_for(task, "typed", None, (), MAX_NEARBY)
    with pytest.raises(ValueError):
        constraint_for(task, "grammar", lambda a: False, (), MAX_NEARBY)


def test_no_neighbour_verifies_when_the_judge_never_agrees() -> None:
    task = get_task("norm_rmsnorm_rows")
    body = "".join(f"  {ln}\n" for ln in program_lines(task.impl or ""))
    asked: list[str] = []

    def judge(answer: str) -> bool:
        asked.append(answer)
        return False

    c = constraint_for(task, "typed", judge, DEEPEN_BUDGETS, 7)
    assert isinstance(c, TaskConstraint)
    assert c.repaired(_trail(c, body, attempt=len(DEEPEN_BUDGETS) - 1)) is None
    assert len(asked) == 7  # the count bounds the search
    assert all(a.startswith(PREFIX) and a.endswith(SUFFIX) for a in asked)


def test_the_prefix_judge_is_a_real_verifier(pool) -> None:
    # guard against a judge that agrees with everything: the wrong order fails it
    task = get_task("attn_scan_divsum")
    judge = PrefixJudge(task, pool)
    assert not judge(PREFIX + ZIPPED_WRONG + SUFFIX)
    assert judge.calls == 1 and judge.passed == 0
