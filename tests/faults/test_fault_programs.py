"""Hostile programs: every message they can influence is bounded; parsing them never crashes."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from stepsmith.limits import MAX_MESSAGE_CHARS, clip
from stepsmith.verify.verdict import MAX_WARNINGS, BindingResult, FailureKind, Verdict

TASK = "demo_idiom_placeholder_colsum"
# the 61-character program: ~200 MB of feedback before the cap
HUGE_VALUE = "E3 = step.Accum(fn=fn_addrow, b='x'*10**8).apply(E0)\nreturn E3"
BOUND = MAX_MESSAGE_CHARS + len("… (999999999 more characters)")


@pytest.fixture(scope="module")
def pool() -> Iterator[object]:
    from stepsmith.verify import VerifierPool

    with VerifierPool(workers=1, timeout_s=5.0, grace_s=2.0) as p:
        yield p


def test_clip_marks_what_it_drops() -> None:
    assert clip("short") == "short"
    out = clip("a" * 5000, 100)
    assert out == "a" * 100 + "… (4900 more characters)"

    class Hostile:
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert "unprintable" in clip(Hostile())


def test_verdict_fields_are_bounded_on_construction_and_assignment() -> None:
    v = Verdict.failure(FailureKind.runtime_error, "x" * 10**6, warnings=["w" * 10**5] * 100)
    assert len(v.feedback) <= BOUND and v.feedback.endswith("more characters)")
    assert len(v.warnings) == MAX_WARNINGS + 1 and v.warnings[-1].startswith("… (80 more")
    br = BindingResult(label="paper", passed=False)
    br.error = "e" * 10**6
    assert br.error is not None and len(br.error) <= BOUND
    v.feedback = "f" * 10**6
    assert len(v.feedback) <= BOUND


def test_step_error_messages_are_bounded() -> None:
    from stepsmith.step.errors import StepArgumentError

    err = StepArgumentError("b must be an int", primitive="Accum", found="x" * 10**6,
                            expected="an int")
    assert len(str(err)) <= BOUND and "more characters" in str(err)


def test_a_200_mb_error_value_gives_bounded_feedback_and_json(pool) -> None:  # noqa: ANN001
    from stepsmith.tasks.suite import get_task

    v = pool.verify(get_task(TASK), HUGE_VALUE)
    assert not v.passed and v.kind is not None
    assert len(v.feedback) <= BOUND and "more characters)" in v.feedback
    assert all(len(b.error or "") <= BOUND for b in v.bindings)
    assert len(json.dumps(v.model_dump(mode="json"))) < 10 * BOUND  # what `verify --json` writes


def test_the_same_program_in_process_is_bounded_too() -> None:
    from stepsmith.tasks.suite import get_task
    from stepsmith.verify.runner import check_candidate

    v = check_candidate(get_task(TASK), HUGE_VALUE)
    assert len(v.feedback) <= BOUND


@pytest.mark.parametrize(
    ("src", "kind"),
    [
        ("x = " + "-" * 3000 + "1\nreturn x", FailureKind.parse_error),
        ("x = " + "+".join(["1"] * 3000) + "\nreturn x", FailureKind.parse_error),
        ("x = max([1, 2], key=len)\nreturn x", FailureKind.disallowed),
        ("x = min(E0, E0, key=step.Map)\nreturn x", FailureKind.disallowed),
        ("x = 1\x00\nreturn x", FailureKind.parse_error),
    ],
)
def test_hostile_programs_get_a_verdict(pool, src: str, kind: FailureKind) -> None:  # noqa: ANN001
    from stepsmith.tasks.suite import get_task

    v = pool.verify(get_task(TASK), src)
    assert v.kind == kind, v.feedback
    assert v.feedback and len(v.feedback) <= BOUND


def test_the_pool_still_serves_after_hostile_programs(pool) -> None:  # noqa: ANN001
    from stepsmith.tasks.suite import get_task

    task = get_task(TASK)
    assert pool.verify(task, task.impl or "").passed
