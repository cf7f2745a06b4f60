"""Hostile model answers: extraction is total, a bad answer is one recorded failed sample.

The corpus and the mutations are the ones `bench/fuzz_answers.py` pushes through the pool;
here they run through extraction and the static checks in-process (nothing is executed), so
the suite stays fast.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path

import pytest

from stepsmith.agents import Agent, Unparsable, extract_impl
from stepsmith.agents.extract import MAX_ANSWER_CHARS
from stepsmith.limits import MAX_AST_DEPTH, ProgramTooComplex, parse_untrusted
from stepsmith.verify.execute import compile_candidate, normalise_source, static_checks
from stepsmith.verify.verdict import Verdict

_BENCH = Path(__file__).resolve().parents[2] / "bench" / "fuzz_answers.py"


def _fuzz_module():  # noqa: ANN202 - a module object
    spec = importlib.util.spec_from_file_location("fuzz_answers", _BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


FUZZ = _fuzz_module()
GOOD = "E1 = step.Map(fn=fn_sq).apply(X)\nE2 = step.Accum(fn=fn_sum, b=1).apply(E1)\nreturn E2"


def _extract_or_reason(answer: str) -> str | None:
    """The body, or None for Unparsable; any other exception fails the test."""
    try:
        body = extract_impl(answer)
    except Unparsable as exc:
        assert exc.reason.strip(), "an Unparsable must say why"
        return None
    assert isinstance(body, str) and body.strip()
    return body


def _static_pipeline(body: str) -> None:
    """What the verifier does before running anything; must give a verdict or None, not raise."""
    src = normalise_source(body)
    failed = static_checks(src)
    if failed is None:
        result = compile_candidate(src, ["X"])
        if isinstance(result, Verdict):
            assert not result.passed


@pytest.mark.parametrize("index", range(len(FUZZ.hostile_corpus())))
def test_known_crashing_answers_are_failed_samples(index: int) -> None:
    body = _extract_or_reason(FUZZ.hostile_corpus()[index])
    if body is not None:
        _static_pipeline(body)


def test_600_nested_yaml_brackets_are_unparsable_with_a_reason() -> None:
    with pytest.raises(Unparsable, match="could not find a program"):
        extract_impl("```yaml\nimpl: " + "[" * 600 + "]" * 600 + "\n```")


def test_a_3000_minus_line_is_never_returned_as_the_program() -> None:
    answer = "```python\nx = " + "-" * 3000 + "1\nreturn x\n```"
    body = _extract_or_reason(answer)
    assert body is None or "---" not in body


def test_oversized_answer_is_refused_before_parsing() -> None:
    with pytest.raises(Unparsable, match=f"at most {MAX_ANSWER_CHARS}"):
        extract_impl("```python\n" + "x = 1\n" * (MAX_ANSWER_CHARS // 6 + 10) + "```")


def test_mutated_answers_never_escape_extraction_or_the_static_checks() -> None:
    impls = [GOOD, "a, b = step.Copy().apply(X)\nreturn step.Map(fn=fn_sq).apply(a)"]
    answers = FUZZ.mutated_answers(300, seed=3, impls=impls, spin_rate=0.0)
    bodies = [_extract_or_reason(a) for a in answers]
    for body in bodies:
        if body is not None:
            _static_pipeline(body)
    # the mix must exercise both outcomes, or the fuzz is not testing anything
    assert any(b is None for b in bodies) and any(b is not None for b in bodies)


@pytest.mark.parametrize(
    "src",
    [
        "x = " + "-" * 3000 + "1",
        "x = " + "+".join(["1"] * 5000),
        "x = a" + ".b" * 5000,
        "x = " + "not " * 3000 + "1",
        "x = 1\x00",
    ],
)
def test_parse_untrusted_only_raises_syntax_errors(src: str) -> None:
    with pytest.raises(SyntaxError):
        parse_untrusted(src)


def test_parse_untrusted_keeps_trees_shallow_and_real_programs_parse() -> None:
    parse_untrusted(GOOD)
    deep = "x = " + "(" * 5 + "+".join(["1"] * (MAX_AST_DEPTH + 5)) + ")" * 5
    with pytest.raises(ProgramTooComplex, match="nested more than"):
        parse_untrusted(deep)


class _NeverCalled:
    def verify(self, task, src):  # noqa: ANN001, ANN201
        raise AssertionError("an unparsable answer must not reach the verifier")


def test_agent_records_a_crashing_answer_as_an_unparsable_sample(tmp_path: Path) -> None:
    """The run-level guarantee: the sample is recorded as failed (so `--resume` does not
    replay a crash), and the call is in the log with the answer it got."""
    from stepsmith.llm import CallStore, LLMClient
    from stepsmith.llm.testing import ScriptedBackend
    from stepsmith.tasks import load_task

    yaml_task = (Path(__file__).resolve().parents[1] / "agents" / "data" / "reuse0.yaml")
    task = load_task(yaml_task)
    bomb = "```yaml\nimpl: " + "[" * 600 + "]" * 600 + "\n```"
    store = CallStore(tmp_path / "calls.db")
    client = LLMClient(ScriptedBackend(lambda m, t, i: bomb), store=store, run_id="r",
                       max_retries=0)
    attempt = asyncio.run(
        Agent(client, _NeverCalled(), method="single", repair=1).attempt(
            task, [], temperature=1.0, sample_index=0
        )
    )
    assert attempt.failure_kind == "unparsable" and not attempt.passed
    assert attempt.turns == 2 and "could not be used" in attempt.feedback
    assert [row["status"] for row in store.recent(5)] == ["ok", "ok"]
