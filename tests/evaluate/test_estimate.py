"""`bench --estimate`: the first pass's calls, tokens and cost, computed from the real prompts."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from stepsmith.agents.prompts import compose_messages
from stepsmith.cli import app
from stepsmith.evaluate.estimate import estimate_bench, history_for, render_estimate
from stepsmith.evaluate.runner import BenchConfig, resolve_tasks
from stepsmith.improve.store import DemoRecord, ExperienceStore
from stepsmith.llm import CallStore, price_for
from stepsmith.llm.base import prompt_tokens_upper

NAMES = ["gemm_bias_relu", "expert_linear_sum"]
GPT4O = "openai:gpt-4o-2024-11-20"


def _cfg(**kw) -> BenchConfig:
    base = dict(model=GPT4O, method="single", tasks=NAMES, n=2, temperatures=[0.7], guardian="llm")
    base.update(kw)
    return BenchConfig(**base)


def test_single_counts_the_real_prompts_and_prices_them() -> None:
    tasks = resolve_tasks(NAMES, [])
    est = estimate_bench(_cfg(), tasks)
    prompts = [prompt_tokens_upper(compose_messages(t, [])) for t in tasks]
    assert est.calls == 4 and [x.what for x in est.lines] == ["proposer"]
    assert est.input_tokens == 2 * sum(prompts) and est.output_tokens_max == 4 * 1024
    price = price_for(GPT4O)
    worst = est.cost(output_tokens=est.output_tokens_max, provider_cache=False)
    assert worst == pytest.approx(price.cost(est.input_tokens, 4 * 1024))
    system = prompt_tokens_upper(compose_messages(tasks[-1], [])[:1])
    cached = est.cost(output_tokens=est.output_tokens_max, provider_cache=True)
    assert cached == pytest.approx(price.cost(est.input_tokens, 4 * 1024, 3 * system, system))
    assert cached < worst


def test_guardian_and_repair_calls_are_counted_only_when_made() -> None:
    tasks = resolve_tasks(NAMES, [])
    agent = estimate_bench(_cfg(method="agent", guardian="llm"), tasks)
    assert [x.what for x in agent.lines] == ["proposer", "guardian (LLM)"] and agent.calls == 8
    assert [x.what for x in estimate_bench(_cfg(method="agent", guardian="rule"), tasks).lines] == ["proposer"]
    assert estimate_bench(_cfg(method="single", guardian="llm"), tasks).calls == 4  # single has no guardian
    repaired = estimate_bench(_cfg(repair=2), tasks)
    assert repaired.lines[1].calls == 2 * 2 * 2 and repaired.lines[1].input_tokens > repaired.lines[0].input_tokens
    si = render_estimate(estimate_bench(_cfg(method="self-improve", max_iterations=4), tasks))
    assert any("at most 4 iterations" in line for line in si)


def test_imported_demos_lengthen_prompts_but_a_tasks_own_solution_is_withheld() -> None:
    tasks = resolve_tasks(["gemm_bias_relu"], [])
    own = DemoRecord(task_name="gemm_bias_relu", group="gemm", task_ir="inputs: []\n", impl=tasks[0].impl,
                     model="m", iteration=0, temperature=0.7, verifier_version="v", success_count=1, n=1)
    other = DemoRecord(task_name="x", group="g", task_ir="inputs: [a]\n", impl="y = step.Map(fn=f).apply(a)\nreturn y\n",
                       model="m", iteration=0, temperature=0.7, verifier_version="v", success_count=1, n=1)
    plain = estimate_bench(_cfg(tasks=["gemm_bias_relu"]), tasks).input_tokens
    assert estimate_bench(_cfg(tasks=["gemm_bias_relu"]), tasks, [own]).input_tokens == plain
    assert estimate_bench(_cfg(tasks=["gemm_bias_relu"]), tasks, [other]).input_tokens > plain


def test_history_gives_the_models_average_answer(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    assert history_for(db, GPT4O) == (0, None)
    calls = CallStore(db)
    msgs = [{"role": "user", "content": "hi"}]
    for i, (model, status, cached, out) in enumerate([
            (GPT4O, "ok", False, 100), (GPT4O, "ok", False, 300), (GPT4O, "ok", True, 5000),
            (GPT4O, "error", False, 0), ("other", "ok", False, 9)]):
        calls.record(model=model, provider="openai", messages=msgs, params={}, sample_index=i, key=f"k{i}",
                     status=status, output_tokens=out, cached=cached)
    calls.close()
    assert history_for(db, GPT4O) == (2, 200.0)
    est = estimate_bench(_cfg(), resolve_tasks(NAMES, []), history=history_for(db, GPT4O))
    assert est.expected_output_tokens() == 800
    assert any("answers of ~200 tokens" in line and "2 logged calls" in line for line in render_estimate(est))


def test_cli_estimate_runs_nothing(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    res = CliRunner().invoke(app, ["bench", "--model", GPT4O, "--method", "single", "--tasks", ",".join(NAMES),
                                   "-n", "2", "--temperatures", "0.7", "--estimate", "--db", str(db)])
    assert res.exit_code == 0, res.output
    assert "first pass 4 calls" in res.stdout and "cost at most $" in res.stdout
    assert ExperienceStore(db).list_runs() == []
    unknown = CliRunner().invoke(app, ["bench", "--model", "openai:mystery-model", "--tasks", NAMES[0],
                                       "--estimate", "--db", str(db)])
    assert unknown.exit_code == 0 and "no price for this model (add one under [prices]" in unknown.stdout
    assert "decoding: none" in res.stdout  # an API model answers free-form


def test_local_models_decode_typed_with_the_nearby_search_by_default(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["bench", "--model", "llamacpp:qwen2.5-coder-1.5b", "--tasks",
                                   NAMES[0], "--estimate", "--db", str(tmp_path / "s.db")])
    assert res.exit_code == 0, res.output
    assert "decoding: typed+nearby" in res.stdout
    chosen = CliRunner().invoke(app, ["bench", "--model", "llamacpp:qwen2.5-coder-1.5b", "--tasks",
                                      NAMES[0], "--search", "deepen", "--estimate", "--db",
                                      str(tmp_path / "s.db")])
    assert chosen.exit_code == 0 and "decoding: typed+deepen" in chosen.stdout


def test_local_models_get_a_time_estimate_from_their_logged_calls(tmp_path) -> None:
    from stepsmith.evaluate.estimate import seconds_for
    from stepsmith.llm.store import CallStore

    tasks = resolve_tasks(["gemm_bias_relu"], [])
    cfg = _cfg(model="llamacpp:qwen2.5-coder-1.5b", tasks=["gemm_bias_relu"])
    est = estimate_bench(cfg, tasks)
    assert any("time: unknown" in line for line in render_estimate(est))
    store = CallStore(tmp_path / "c.db")
    for i, secs in enumerate((30.0, 10.0, 20.0)):
        store.record(model=cfg.model, provider="llamacpp", messages=[{"role": "user", "content": "x"}],
                     params={}, sample_index=i, key=f"k{i}", started_at="2026-11-30T00:00:00",
                     status="ok", response="r", latency_s=secs, input_tokens=1, output_tokens=1)
    est.call_seconds = seconds_for(tmp_path / "c.db", cfg.model)
    assert est.call_seconds == 20.0
    line = next(x for x in render_estimate(est) if "time:" in x)
    assert f"~{20.0 * est.calls / 60:,.0f} min" in line
