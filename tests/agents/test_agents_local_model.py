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


def test_typed_decoding_on_the_local_model_writes_only_well_typed_programs(tmp_path,
                                                                          monkeypatch) -> None:
    """The real model under the typed constraint: every line it kept is an offered statement,
    and a finished program passes every static check of the verifier."""
    from stepsmith.agents.decoding.constraint import constraint_for
    from stepsmith.agents.extract import extract_impl
    from stepsmith.agents.prompts import compose_messages
    from stepsmith.llm import DEFAULT_MODEL, CallStore, LLMClient
    from stepsmith.tasks.suite import get_task
    from stepsmith.verify import verify

    monkeypatch.setenv("STEPSMITH_HOME", str(tmp_path))  # a fresh on-disk prefix cache
    task = get_task("gemm_bias_relu")
    constraint = constraint_for(task, "typed")
    assert constraint is not None
    client = LLMClient(DEFAULT_MODEL, store=CallStore(tmp_path / "calls.db"), timeout_s=1800,
                       max_retries=0)
    msgs = compose_messages(task, [], with_ir=True)
    comp = client.sample_sync(msgs, temperature=0.7, sample_index=0, max_tokens=384,
                              constraint=constraint)
    assert comp.text.startswith(constraint.prefix)
    impl = extract_impl(comp.text if comp.text.endswith("```") else comp.text + "\n```")
    cursor = constraint.lines()
    for line in impl.splitlines():
        cursor = cursor.feed(line)  # raises if a kept line was not offered
    assert list((tmp_path / "kvcache").glob("*.kv")), "the system prompt state was saved"
    if comp.finish_reason == "stop":
        assert cursor.complete
        verdict = verify(task, impl)
        kind = verdict.kind.value if verdict.kind is not None else None
        assert kind not in {"unparsable", "parse_error", "disallowed", "type_error",
                            "shape_error", "dtype_error", "affine", "output_mismatch"}, (
            verdict.feedback)
    # the same request again is a cache hit, and the unconstrained one is not
    assert client.sample_sync(msgs, temperature=0.7, sample_index=0, max_tokens=384,
                              constraint=constraint).cached
