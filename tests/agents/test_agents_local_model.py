"""End to end with the embedded local model (slow): the real prompt, model, extraction, verifier."""

from __future__ import annotations

import asyncio

import pytest

from stepsmith.agents import Agent

pytestmark = pytest.mark.slow

KNOWN_KINDS = {
    "unparsable",
    "parse_error",
    "disallowed",
    "type_error",
    "shape_error",
    "dtype_error",
    "affine",
    "runtime_error",
    "timeout",
    "memory",
    "output_mismatch",
    "value_mismatch",
}


def test_local_model_sample_goes_through_the_whole_pipeline(tmp_path) -> None:
    pytest.importorskip("llama_cpp", reason="the [local] extra (llama-cpp-python) is not installed")
    from stepsmith.llm import DEFAULT_MODEL, CallStore, LLMClient
    from stepsmith.tasks.suite import get_task
    from stepsmith.verify import VerifierPool

    task = get_task("demo_map_silu")  # the easiest operator: one Map
    client = LLMClient(
        DEFAULT_MODEL,
        store=CallStore(tmp_path / "calls.db"),
        run_id="slow",
        timeout_s=1800,
        max_retries=0,
    )
    with VerifierPool(workers=1) as pool:
        agent = Agent(client, pool, method="agent", guardian="rule", repair=1, max_tokens=256)
        attempt = asyncio.run(agent.attempt(task, [], temperature=0.4, sample_index=0))
    assert attempt.calls in (1, 2)
    assert attempt.input_tokens > 3000  # the whole reference prompt reached the model
    assert attempt.output_tokens > 0 and attempt.answer
    if attempt.passed:
        assert attempt.failure_kind is None and attempt.verdict.passed
    else:
        assert attempt.failure_kind in KNOWN_KINDS, attempt.failure_kind
        assert attempt.feedback
