"""The agent against the real sandboxed verifier pool (blocking verify calls run off the loop)."""

from __future__ import annotations

import asyncio

import pytest
from agents_programs import R0_WRONG, R1_BAD, yaml_answer

from stepsmith.agents import Agent


@pytest.fixture(scope="module")
def pool():
    from stepsmith.verify import VerifierPool

    with VerifierPool(workers=1) as p:
        yield p


def test_concurrent_attempts_through_the_sandboxed_pool(pool, load, scripted) -> None:
    task = load("reuse1")
    answers = {0: R1_BAD, 1: R0_WRONG, 2: R1_BAD}

    def model(messages, temperature, sample_index):
        return yaml_answer(answers[sample_index])

    agent = Agent(scripted(model), pool, method="agent", guardian="rule")

    async def many():
        return await asyncio.gather(
            *(agent.attempt(task, [], temperature=1.0, sample_index=i) for i in answers)
        )

    first, wrong, third = asyncio.run(many())
    assert first.passed and third.passed and first.guardian_changed
    assert not wrong.passed and wrong.failure_kind in {"runtime_error", "type_error"}
    assert "fn_sum" in wrong.feedback  # the verifier's LLM-facing message comes through
    assert first.verdict.verifier_version
