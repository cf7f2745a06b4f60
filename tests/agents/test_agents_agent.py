"""One sample's flow: repair turns, unparsable answers, LLM errors, budgets, the no-IR baseline."""

from __future__ import annotations

import asyncio

import pytest
from agents_programs import R0, R0_WRONG, R1_BAD, R1_FIX, yaml_answer

from stepsmith.agents import Agent, Attempt


def run(agent: Agent, task, demos=(), temperature=0.7, sample_index=3) -> Attempt:
    return asyncio.run(
        agent.attempt(task, list(demos), temperature=temperature, sample_index=sample_index)
    )


def fixer(first: str, fixed: str, trigger: str):
    """Answers `first`, and `fixed` once the conversation contains verifier feedback `trigger`."""

    def fn(messages, temperature, sample_index):
        if (
            messages[-1]["role"] == "user"
            and trigger in messages[-1]["content"]
            and len(messages) > 2
        ):
            return yaml_answer(fixed)
        return first if first.startswith("PROSE:") else yaml_answer(first)

    return fn


def test_repair_turn_fixes_the_program_after_feedback(load, verifier, scripted) -> None:
    task = load("reuse1")
    client = scripted(fixer(R1_BAD, R1_FIX, "consumed"))
    attempt = run(Agent(client, verifier, method="single", repair=2), task)
    assert attempt.passed and attempt.failure_kind is None
    assert attempt.turns == 2 and attempt.calls == 2 and attempt.impl == R1_FIX
    second = client.backend_double.calls[1]["messages"]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    assert "affine" in second[-1]["content"]  # the failure kind ...
    assert "impl: |-" in second[-1]["content"]  # ... and how to answer
    assert R1_BAD.split("\n")[1] in second[2]["content"]  # the model sees its own answer


def test_without_repair_the_same_script_fails(load, verifier, scripted) -> None:
    task = load("reuse1")
    client = scripted(fixer(R1_BAD, R1_FIX, "consumed"))
    attempt = run(Agent(client, verifier, method="single", repair=0), task)
    assert not attempt.passed and attempt.failure_kind == "affine"
    assert attempt.turns == 1 and attempt.calls == 1
    assert "consumed" in attempt.feedback


def test_repair_turns_are_bounded(load, verifier, scripted) -> None:
    task = load("reuse0")
    client = scripted(lambda m, t, i: yaml_answer(R0_WRONG))
    attempt = run(Agent(client, verifier, method="single", repair=2), task)
    assert not attempt.passed and attempt.turns == 3 and attempt.calls == 3
    assert len(verifier.calls) == 3
    assert attempt.failure_kind == attempt.verdict.kind


def test_repair_after_an_unparsable_answer(load, verifier, scripted) -> None:
    task = load("reuse0")
    client = scripted(fixer("PROSE: I would use a Map and then an Accum.", R0, "could not be used"))
    attempt = run(Agent(client, verifier, method="single", repair=1), task)
    assert attempt.passed and attempt.turns == 2 and len(verifier.calls) == 1


def test_unparsable_answer_is_a_failed_sample_not_a_crash(load, verifier, scripted) -> None:
    task = load("reuse0")
    client = scripted(lambda m, t, i: "Sorry, I do not know STeP.")
    attempt = run(Agent(client, verifier, method="agent", guardian="llm"), task)
    assert not attempt.passed and attempt.failure_kind == "unparsable"
    assert attempt.verdict is None and attempt.impl is None
    assert attempt.calls == 1 and verifier.calls == []  # no guardian call, no verification
    assert "impl: |-" in attempt.feedback


def test_llm_error_is_a_failed_sample(load, verifier, scripted) -> None:
    from stepsmith.llm import LLMError

    def broken(messages, temperature, sample_index):
        raise LLMError("HTTP 400: context length exceeded")

    task = load("reuse0")
    attempt = run(Agent(scripted(broken), verifier, method="agent"), task)
    assert not attempt.passed and attempt.failure_kind == "llm_error"
    assert "context length" in attempt.feedback and attempt.calls == 0


def test_budget_exceeded_stops_the_run(load, verifier) -> None:
    from stepsmith.llm import Budget, BudgetExceeded, LLMClient
    from stepsmith.llm.testing import ScriptedBackend

    client = LLMClient(
        ScriptedBackend(lambda m, t, i: yaml_answer(R0)), budget=Budget(max_tokens=10)
    )
    with pytest.raises(BudgetExceeded):
        run(Agent(client, verifier, method="single"), load("reuse0"))


def test_tokens_and_calls_are_summed_over_all_calls(load, verifier, scripted) -> None:
    task = load("reuse1")
    client = scripted(fixer(R1_BAD, R1_FIX, "consumed"))
    attempt = run(Agent(client, verifier, method="agent", guardian="llm", repair=1), task)
    calls = client.backend_double.calls
    assert attempt.calls == len(calls) == 4  # proposer, guardian, repair, guardian
    expected_in = sum(sum(len(m["content"]) // 4 for m in c["messages"]) for c in calls)
    assert attempt.input_tokens == expected_in
    assert attempt.output_tokens > 0
    assert [c["temperature"] for c in calls] == [0.7] * 4
    assert {c["sample_index"] for c in calls} == {3}


def test_verifier_crash_is_recorded_not_raised(load, scripted) -> None:
    class Exploding:
        def verify(self, task, src):
            raise RuntimeError("worker pool closed")

    attempt = run(
        Agent(scripted(lambda m, t, i: yaml_answer(R0)), Exploding(), method="single"),
        load("reuse0"),
    )
    assert not attempt.passed and attempt.failure_kind == "verifier_error"
    assert "worker pool closed" in attempt.feedback


def test_no_ir_baseline_prompt_and_answer(load, verifier, scripted) -> None:
    task = load("reuse0")

    def python_model(messages, temperature, sample_index):
        body = "\n".join("    " + line for line in R0.split("\n"))
        return f"```python\ndef impl(A):\n{body}\n```"

    client = scripted(python_model)
    attempt = run(Agent(client, verifier, method="single-no-ir"), task)
    assert attempt.passed, attempt.feedback
    user = client.backend_double.calls[0]["messages"][1]["content"]
    assert "def impl(A):" in user and "def test_impl" in user
    assert "torch.exp(input_data['A']).sum(-1)" in user  # the PyTorch reference
    assert "task:\n" not in user and "dims: [K, M]" not in user  # no structural IR


def test_bad_arguments_are_clear_errors(verifier, scripted) -> None:
    client = scripted(lambda m, t, i: "")
    with pytest.raises(ValueError, match="method must be one of"):
        Agent(client, verifier, method="self-improve")
    with pytest.raises(ValueError, match="repair must be"):
        Agent(client, verifier, repair=-1)


def test_search_deepen_gives_the_typed_constraint_a_judge_and_restart_budgets(
    scripted, verifier
) -> None:
    from stepsmith.agents.decoding.constraint import DEEPEN_BUDGETS, TaskConstraint
    from stepsmith.llm.testing import echo
    from stepsmith.tasks.suite import get_task

    task = get_task("gemm_bias_relu")
    deep = Agent(scripted(echo), verifier, method="single", constrain="typed", search="deepen")
    prefix = Agent(scripted(echo), verifier, method="single", constrain="typed", search="prefix")
    c, p = deep.constraint(task), prefix.constraint(task)
    assert isinstance(c, TaskConstraint) and isinstance(p, TaskConstraint)
    assert c.budgets == DEEPEN_BUDGETS and p.budgets == ()
    assert DEEPEN_BUDGETS[-1].statements == p.max_statements  # the last attempt has the full budget
    assert c.judge is deep.judges[task.name] and p.judge is prefix.judges[task.name]
    with pytest.raises(ValueError, match="search 'deepen' judges typed prefixes"):
        Agent(scripted(echo), verifier, method="single", constrain="grammar", search="deepen")
