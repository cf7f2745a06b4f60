"""Bench configuration, task selection, budget stops and resume bookkeeping (no model, no sandbox)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from agent_fakes import TASKS, GroupAgent

from stepsmith.evaluate.runner import (
    BenchConfig,
    BenchError,
    _task_ref,
    config_from_run,
    create_run,
    execute,
    parse_temperatures,
    quick_tasks,
    resolve_tasks,
)
from stepsmith.improve.store import ExperienceStore
from stepsmith.llm import BudgetExceeded


@pytest.fixture
def store(tmp_path: Path):
    s = ExperienceStore(tmp_path / "stepsmith.db")
    yield s
    s.close()


def test_parse_temperatures() -> None:
    assert parse_temperatures("0.4, 0.7,1.0") == [0.4, 0.7, 1.0]
    assert parse_temperatures("default") == [None]
    with pytest.raises(BenchError, match="outside 0..2"):
        parse_temperatures("3")
    with pytest.raises(BenchError, match="lists no temperature"):
        parse_temperatures(",")


def test_config_validation_messages() -> None:
    with pytest.raises(BenchError, match="--guardian 'strict'"):
        BenchConfig(model="m", guardian="strict").validate()
    with pytest.raises(BenchError, match="--k 9 is outside 1..6"):
        BenchConfig(model="m", n=2, ks=[1, 9]).validate()
    with pytest.raises(BenchError, match="-n must be >= 1"):
        BenchConfig(model="m", n=0).validate()
    with pytest.raises(BenchError, match="--reference 'tiny' is not a style; choose one of full, compact"):
        BenchConfig(model="m", reference="tiny").validate()


def test_task_selection_names_groups_paths(tmp_path: Path) -> None:
    from stepsmith.tasks.suite import benchmark_tasks, get_task

    default = resolve_tasks([], [])
    groups = {t.group for t in default}
    assert "extra" not in groups and {"attn", "gemm", "etoe"} <= groups  # the paper's 8 groups
    both = resolve_tasks(["gemm_bias_relu"], ["gemm"])
    assert [t.name for t in both] == ["gemm_bias_relu"] + [t.name for t in benchmark_tasks("gemm")
                                                           if t.name != "gemm_bias_relu"]
    own = tmp_path / "my_task.yaml"
    own.write_text(get_task("gemm_bias_relu").text.replace("test_name: gemm_bias_relu", "test_name: my_task"))
    (mine,) = resolve_tasks([str(own)], [])
    assert mine.name == "my_task" and _task_ref(mine) == str(own.resolve())
    assert _task_ref(get_task("gemm_bias_relu")) == "gemm_bias_relu"
    with pytest.raises(BenchError, match="--tasks gemm_bias_relux: .*did you mean gemm_bias_relu"):
        resolve_tasks(["gemm_bias_relux"], [])
    with pytest.raises(BenchError, match="--groups nope: no benchmark tasks"):
        resolve_tasks([], ["nope"])


def test_quick_tasks_are_the_shortest_siblings_of_one_group() -> None:
    """Siblings, so that iteration 0's solve is a relevant demonstration in iteration 1."""
    from stepsmith.evaluate.runner import QUICK_GROUP
    from stepsmith.improve.filtering import pure_code_lines
    from stepsmith.tasks.suite import benchmark_tasks, get_task

    names = quick_tasks(3)
    assert len(names) == 3 and len(set(names)) == 3
    assert {get_task(n).group for n in names} == {QUICK_GROUP}
    longest_quick = max(pure_code_lines(get_task(n).impl) for n in names)
    others = [t for t in benchmark_tasks() if t.name not in names and t.group == QUICK_GROUP]
    assert others and all(pure_code_lines(t.impl) >= longest_quick for t in others)


def test_config_roundtrip_for_resume(store: ExperienceStore, tmp_path: Path) -> None:
    from stepsmith.tasks.suite import get_task

    own = tmp_path / "t.yaml"
    own.write_text(get_task("gemm_bias_relu").text.replace("test_name: gemm_bias_relu", "test_name: t_own"))
    tasks = resolve_tasks(["expert_linear_sum", str(own)], [])
    cfg = BenchConfig(model="scripted:x", method="agent", n=3, temperatures=[0.5], guardian="rule")
    run_id = create_run(cfg, store, tasks)
    again, again_tasks = config_from_run(store, run_id[:10])
    assert again == cfg
    assert [t.name for t in again_tasks] == ["expert_linear_sum", "t_own"]


def test_resume_refuses_a_run_another_live_process_is_executing(store: ExperienceStore) -> None:
    """Two processes on one run would each pay for the same missing samples."""
    import socket
    import subprocess
    import sys

    from stepsmith.evaluate.runner import run_bench

    cfg = BenchConfig(model="scripted:x", method="single", tasks=["expert_linear_sum"], n=1,
                      temperatures=[0.5], guardian="rule")
    run_id = create_run(cfg, store, resolve_tasks(cfg.tasks, []))
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as other:
        try:
            store._conn.execute("UPDATE exp_runs SET owner = ? WHERE run_id = ?",
                                (f"{socket.gethostname()}:{other.pid}", run_id))
            with pytest.raises(BenchError, match=f"still being executed by process .*:{other.pid}"):
                run_bench(store=store, resume=run_id, write_report=False)
        finally:
            other.kill()
    assert store.get_run(run_id).shown_status == "interrupted"  # its process is gone now


def _claim(path: str, run_id: str, start: Any, hold: Any, results: Any) -> None:
    """One process's `--resume` claim; stays alive (a live owner) until every claim is made."""
    from stepsmith.improve.store import ExperienceStore, RunBusyError

    store = ExperienceStore(path)
    start.wait()
    try:
        store.claim_run(run_id)
        results.put("claimed")
    except RunBusyError:
        results.put("busy")
    hold.wait()


def test_concurrent_resumes_claim_a_run_exactly_once(store: ExperienceStore) -> None:
    """The "already running" check and the status update are one transaction: of several
    processes resuming one run at the same moment, exactly one gets it."""
    import multiprocessing as mp

    cfg = BenchConfig(model="scripted:x", method="single", tasks=["expert_linear_sum"], n=1,
                      temperatures=[0.5], guardian="rule")
    run_id = create_run(cfg, store, resolve_tasks(cfg.tasks, []))
    store.set_status(run_id, "interrupted")  # free to resume
    ctx = mp.get_context("fork")
    n = 4
    start, hold, results = ctx.Barrier(n), ctx.Barrier(n + 1), ctx.Queue()
    procs = [ctx.Process(target=_claim, args=(str(store.path), run_id, start, hold, results))
             for _ in range(n)]
    for p in procs:
        p.start()
    try:
        outcomes = sorted(results.get(timeout=120) for _ in range(n))
    finally:
        hold.wait(timeout=120)
        for p in procs:
            p.join(30)
    assert outcomes == ["busy"] * (n - 1) + ["claimed"]


class BudgetAgent(GroupAgent):
    """Raises BudgetExceeded (as the LLM client does) after ``limit`` samples."""

    def __init__(self, limit: int, kind: str = "max_cost_usd") -> None:
        super().__init__()
        self.limit = limit
        self.kind = kind

    async def attempt(self, task, demonstrations, *, temperature, sample_index):
        if self.calls >= self.limit:
            raise BudgetExceeded(f"{self.kind} budget reached", limit=self.kind,
                                 limit_value=0.01, spent=0.01, needed=0.001)
        return await super().attempt(task, demonstrations, temperature=temperature, sample_index=sample_index)


def test_budget_stop_is_clean_and_resumable(store: ExperienceStore) -> None:
    cfg = BenchConfig(model="scripted:x", method="self-improve", n=2, temperatures=[0.4, 1.0], concurrency=1)
    run_id = create_run(cfg, store, TASKS)
    status, result, message = asyncio.run(
        execute(cfg, store, run_id, TASKS, BudgetAgent(5)))
    assert (status, result) == ("budget", None)
    assert f"--resume {run_id}" in message and "--max-cost" in message
    assert store.get_run(run_id).status == "budget"
    assert len(store.samples(run_id)) == 5
    more = GroupAgent()
    status, result, _ = asyncio.run(execute(cfg, store, run_id, TASKS, more))
    assert status == "finished" and result is not None and result.replayed >= 5
    fresh = ExperienceStore(store.path.parent / "fresh.db")
    ref_id = create_run(cfg, fresh, TASKS)
    ref = GroupAgent()
    asyncio.run(execute(cfg, fresh, ref_id, TASKS, ref))
    assert more.calls + 5 == ref.calls
    assert result.solved == {"e1": 0, "e2": 0, "h1": 1}


def test_token_budget_stop_names_the_token_flag(store: ExperienceStore) -> None:
    """The resume hint names the budget that stopped the run (a user who set --max-tokens
    must not be told to raise --max-cost)."""
    cfg = BenchConfig(model="scripted:x", method="single", n=1, temperatures=[0.7], concurrency=1)
    run_id = create_run(cfg, store, TASKS)
    status, _, message = asyncio.run(execute(cfg, store, run_id, TASKS, BudgetAgent(1, "max_tokens")))
    assert status == "budget"
    assert f"--resume {run_id} --max-tokens <higher>" in message and "--max-cost" not in message
