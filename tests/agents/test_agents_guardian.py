"""Guardian modes on programs with 0, 1, 2 (and one thrice-) reused streams, and corruption."""

from __future__ import annotations

import asyncio

import pytest
from agents_programs import (
    CASES,
    R0,
    R0_WRONG,
    R1_BAD,
    R1_FIX,
    is_guardian_call,
    program_in,
    yaml_answer,
)

from stepsmith.agents import Agent, guardian_messages


def run(agent: Agent, task, demos=()):
    return asyncio.run(agent.attempt(task, list(demos), temperature=0.4, sample_index=0))


def proposer_and_guardian(proposal: str, guardian_fix: dict[str, str] | str | None):
    """Proposer always answers `proposal`; the guardian maps the program it sees to a fix."""

    def fn(messages, temperature, sample_index):
        if is_guardian_call(messages):
            shown = program_in(messages[-1]["content"])
            if isinstance(guardian_fix, str):
                return guardian_fix
            return yaml_answer((guardian_fix or {}).get(shown, shown))
        return yaml_answer(proposal)

    return fn


@pytest.mark.parametrize("case", ["reuse0", "reuse1", "reuse2", "reuse3"])
def test_rule_guardian_repairs_every_reuse_count(case, load, verifier, scripted) -> None:
    task = load(case)
    bad, _ = CASES[case]
    client = scripted(proposer_and_guardian(bad, None))
    attempt = run(Agent(client, verifier, method="agent", guardian="rule"), task)
    assert attempt.passed, attempt.feedback
    assert attempt.calls == 1  # the rule guardian costs no LLM call
    assert attempt.guardian_changed == (case != "reuse0")
    assert not attempt.guardian_corrupted
    if case == "reuse0":
        assert attempt.impl == bad and len(verifier.calls) == 1
    else:
        assert "Copy" in attempt.impl and attempt.unguarded_impl == bad
        assert len(verifier.calls) == 2  # verified before and after the change


@pytest.mark.parametrize("case", ["reuse0", "reuse1", "reuse2", "reuse3"])
def test_llm_guardian_applies_the_models_fix(case, load, verifier, scripted) -> None:
    task = load(case)
    bad, fix = CASES[case]
    client = scripted(proposer_and_guardian(bad, {bad: fix}))
    attempt = run(Agent(client, verifier, method="agent", guardian="llm"), task)
    assert attempt.passed, attempt.feedback
    assert attempt.calls == 2
    assert attempt.guardian_changed == (case != "reuse0")
    assert attempt.impl == fix
    guardian_call = client.backend_double.calls[1]["messages"]
    assert is_guardian_call(guardian_call)
    assert program_in(guardian_call[-1]["content"]) == bad


@pytest.mark.parametrize("case", ["reuse1", "reuse2", "reuse3"])
def test_no_guardian_leaves_affine_violations(case, load, verifier, scripted) -> None:
    task = load(case)
    bad, _ = CASES[case]
    client = scripted(proposer_and_guardian(bad, None))
    attempt = run(Agent(client, verifier, method="agent", guardian="none"), task)
    assert not attempt.passed
    assert attempt.failure_kind == "affine"
    assert attempt.verdict is not None and not attempt.verdict.passed
    assert not attempt.guardian_changed and attempt.calls == 1


def test_llm_plus_rule_fixes_what_the_llm_missed(load, verifier, scripted) -> None:
    task = load("reuse2")
    bad, _ = CASES["reuse2"]
    client = scripted(proposer_and_guardian(bad, {}))  # the LLM guardian echoes the program
    attempt = run(Agent(client, verifier, method="agent", guardian="llm+rule"), task)
    assert attempt.passed, attempt.feedback
    assert attempt.calls == 2 and attempt.guardian_changed


def test_llm_guardian_corruption_is_recorded(load, verifier, scripted) -> None:
    task = load("reuse0")
    client = scripted(proposer_and_guardian(R0, {R0: R0_WRONG}))
    attempt = run(Agent(client, verifier, method="agent", guardian="llm"), task)
    assert not attempt.passed
    assert attempt.guardian_changed and attempt.guardian_corrupted
    assert attempt.impl == R0_WRONG and attempt.unguarded_impl == R0
    assert attempt.failure_kind == attempt.verdict.kind
    assert len(verifier.calls) == 2 and set(verifier.calls) == {R0, R0_WRONG}


def test_guardian_that_breaks_a_wrong_program_is_not_corruption(load, verifier, scripted) -> None:
    task = load("reuse1")
    client = scripted(proposer_and_guardian(R1_BAD, {R1_BAD: R0_WRONG}))
    attempt = run(Agent(client, verifier, method="agent", guardian="llm"), task)
    assert not attempt.passed and attempt.guardian_changed
    assert not attempt.guardian_corrupted  # the program was already failing


def test_unparsable_guardian_answer_keeps_the_proposal(load, verifier, scripted) -> None:
    task = load("reuse1")
    client = scripted(proposer_and_guardian(R1_FIX, "I cannot help with that."))
    attempt = run(Agent(client, verifier, method="agent", guardian="llm"), task)
    assert attempt.passed and attempt.impl == R1_FIX
    assert not attempt.guardian_changed
    assert any("guardian answer unparsable" in note for note in attempt.notes)


def test_cosmetic_guardian_rewrite_is_not_a_change(load, verifier, scripted) -> None:
    task = load("reuse0")
    reformatted = "# checked: no reuse\n" + R0.replace("b=1", "b = 1")
    client = scripted(proposer_and_guardian(R0, {R0: reformatted}))
    attempt = run(Agent(client, verifier, method="agent", guardian="llm"), task)
    assert attempt.passed and not attempt.guardian_changed
    assert attempt.impl == R0 and len(verifier.calls) == 1


def test_single_method_never_calls_the_guardian(load, verifier, scripted) -> None:
    task = load("reuse1")
    client = scripted(proposer_and_guardian(R1_BAD, {R1_BAD: R1_FIX}))
    attempt = run(Agent(client, verifier, method="single", guardian="llm"), task)
    assert attempt.calls == 1 and not attempt.passed and attempt.failure_kind == "affine"


def test_guardian_prompt_has_the_rule_and_three_examples() -> None:
    messages = guardian_messages(R1_BAD, ["A"])
    system = messages[0]["content"]
    assert system.count("- case:") == 3
    assert "used twice" in system and "three times" in system and "unchanged" in system
    assert "def impl(A):" in messages[1]["content"]
    assert program_in(messages[1]["content"]) == R1_BAD


def test_guardian_quotes_the_one_affine_rule() -> None:
    """The guardian and the proposer read the same rule (step.docs), not two wordings of it."""
    import yaml

    from stepsmith.step.docs import AFFINE_RULE

    system = guardian_messages(R1_BAD, ["A"])[0]["content"]
    assert yaml.safe_load(system)["affine_rule"] == AFFINE_RULE


def test_bad_guardian_mode_is_a_clear_error(verifier, scripted) -> None:
    with pytest.raises(ValueError, match="guardian must be one of"):
        Agent(scripted(lambda m, t, i: ""), verifier, guardian="llm-rule")
