"""Algorithm 1 bookkeeping with a scripted agent whose successes depend on the demonstrations."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

import pytest
from agent_fakes import Killed, Rule, ScriptedAgent, map_task

from stepsmith.demos import isomorphic as is_isomorphic
from stepsmith.improve.filtering import pure_code_lines
from stepsmith.improve.loop import LoopConfig, SelfImprover
from stepsmith.improve.store import DemoRecord, ExperienceStore

N = 4
TEMPS = (0.5, 1.0)


def tasks():
    return [map_task("A", "g1", "FA"), map_task("B", "g1", "FB"), map_task("C", "g2", "FC"),
            map_task("D", "g3", "FD"), map_task("E", "g4", "FE")]


def rules(e_solvable: bool = False) -> dict[str, Rule]:
    return {
        "A": Rule(successes=1),                 # hard: 1 of 4
        "B": Rule(successes=4),                 # easy: 4 of 4
        "C": Rule(needs=("g1",), successes=2),  # needs any g1 demonstration
        "D": Rule(needs=("g2",), successes=4),  # needs C's group
        "E": Rule(needs=("g3",), successes=1) if e_solvable else Rule(never=True),
    }


def run(store: ExperienceStore, agent: ScriptedAgent, run_id: str = "r1", *, concurrency: int = 1,
        max_iterations: int | None = None, initial=(), task_list=None):
    cfg = LoopConfig(n=N, temperatures=TEMPS, m=3, concurrency=concurrency, model="scripted",
                     max_iterations=max_iterations)
    if not any(r.run_id == run_id for r in store.list_runs()):
        store.create_run(run_id, method="self-improve", model="scripted", config={})
    improver = SelfImprover(store, run_id, agent, cfg)
    return asyncio.run(improver.run(task_list or tasks(), initial))


def test_iteration_order_restratification_and_no_progress_termination(store: ExperienceStore) -> None:
    agent = ScriptedAgent(rules(), n=N)
    result = run(store, agent)
    got = [(it.iteration, it.level, it.demo_tasks, it.tasks, it.solved) for it in result.iterations]
    assert got == [
        (0, 0, [], ["A", "B", "C", "D", "E"], ["A", "B"]),
        (1, 0, ["A"], ["C", "D", "E"], ["C"]),            # H = hardest solved task
        (2, 0, ["A"], ["D", "E"], []),                     # restart from H after a new solve
        (3, 1, ["A", "C"], ["D", "E"], ["D"]),             # H → HM
        (4, 0, ["A", "C"], ["E"], []),                     # re-binned: ties B, D share a level
        (5, 1, ["A", "C", "B", "D"], ["E"], []),           # d_j = D, nothing new → stop
    ]
    assert [lvl for lvl in result.iterations[4].levels] == [["A", "C"], ["B", "D"]]
    assert result.reason == "no_progress"
    assert result.unsolved == ["E"]
    assert result.solved == {"A": 0, "B": 0, "C": 1, "D": 3}
    # the store agrees with the in-memory result
    assert [it.solved for it in store.iterations("r1")] == [it.solved for it in result.iterations]


def test_only_unsolved_tasks_are_resampled_n_per_temperature(store: ExperienceStore) -> None:
    agent = ScriptedAgent(rules(), n=N)
    result = run(store, agent)
    per_iteration: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for c in agent.calls:
        per_iteration[c["index"] // N][c["task"]] += 1
    for it in result.iterations:
        assert dict(per_iteration[it.iteration]) == {t: N * len(TEMPS) for t in it.tasks}
    # each (task, temperature) gets fresh sample indices t*n .. t*n+n-1
    indices = {(c["task"], c["temperature"], c["index"]) for c in agent.calls}
    assert len(indices) == len(agent.calls)


def test_all_solved_termination_and_demo_provenance(store: ExperienceStore) -> None:
    agent = ScriptedAgent(rules(e_solvable=True), n=N)
    result = run(store, agent)
    assert result.reason == "all_solved"
    assert result.unsolved == []
    assert result.solved["E"] == 5
    demos = {d.task_name: d for d in store.demos("r1")}
    assert set(demos) == {"A", "B", "C", "D", "E"}
    b = demos["B"]
    # σ: isomorphic to the reference, fewest pure lines among the two classes it produced
    assert is_isomorphic(b.impl, "out = step.Map(fn=FB).apply(x)\nreturn out\n")
    assert pure_code_lines(b.impl) == 2
    assert b.provenance["classes"] == 2
    assert (b.success_count, b.n, b.iteration, b.model, b.source) == (4, N, 0, "scripted", "earned")
    assert b.temperature in TEMPS
    assert (demos["A"].success_count, demos["C"].success_count) == (1, 2)
    assert "test_name" not in b.task_ir and "impl" not in b.task_ir


def test_max_iterations_stops(store: ExperienceStore) -> None:
    result = run(store, ScriptedAgent(rules(), n=N), max_iterations=2)
    assert result.reason == "max_iterations"
    assert [it.iteration for it in result.iterations] == [0, 1]


def test_leakage_guard_hides_own_and_isomorphic_solutions(store: ExperienceStore) -> None:
    own = DemoRecord("C", "g2", "inputs: []\n", "y = step.Map(fn=FC).apply(x)\nreturn y\n", "strong", 0,
                     0.4, "v1", 1, 4, source="import")
    # a different name but the same program as D's reference (renamed variable)
    twin = DemoRecord("D-copy", "g9", "inputs: []\n", "z = step.Map(fn=FD).apply(x)\nreturn z\n", "strong",
                      0, 0.4, "v1", 1, 4, source="import")
    agent = ScriptedAgent(rules(), n=N)
    run(store, agent, initial=[own, twin])
    assert agent.leaks == []
    seen_by = defaultdict(set)
    for c in agent.calls:
        seen_by[c["task"]].update(c["demos"])
    assert "C" not in seen_by["C"] and "D-copy" not in seen_by["D"]
    assert "C" in seen_by["D"] and "D-copy" in seen_by["C"]  # others may see them
    # the imported C demonstration (group g2) lets D be solved at the very first iteration
    assert store.iterations("r1")[0].solved == ["A", "B", "D"]


def _fingerprint(store: ExperienceStore, run_id: str):
    samples = [(s.iteration, s.level, s.task, s.temp_key, s.sample_index, s.passed, s.impl, tuple(s.demos))
               for s in store.samples(run_id)]
    iterations = [(i.iteration, i.level, i.demo_tasks, i.tasks, i.solved) for i in store.iterations(run_id)]
    demos = sorted((d.task_name, d.impl, d.iteration, d.success_count) for d in store.demos(run_id))
    return samples, iterations, demos


@pytest.mark.parametrize("seed", range(6))
def test_resume_after_kill_matches_uninterrupted_run(tmp_path, seed: int) -> None:
    ref_store = ExperienceStore(tmp_path / "ref.db")
    ref_agent = ScriptedAgent(rules(e_solvable=True), n=N)
    run(ref_store, ref_agent)
    total = len(ref_agent.calls)

    store = ExperienceStore(tmp_path / "killed.db")
    rng = random.Random(seed)
    calls = 0
    kills = 0
    done = False
    while not done:  # kill at random points, possibly several times, then finish
        kill_after = rng.randrange(1, total // 2) if kills < 2 else None
        agent = ScriptedAgent(rules(e_solvable=True), n=N, kill_after=kill_after)
        try:
            result = run(store, agent)
            done = True
        except Killed:
            kills += 1
        calls += len(agent.calls)
    assert kills == 2
    assert calls == total  # no sample was requested twice
    assert result.reason == "all_solved"
    assert _fingerprint(store, "r1") == _fingerprint(ref_store, "r1")


def test_resume_with_concurrency_loses_only_in_flight_samples(tmp_path) -> None:
    ref_store = ExperienceStore(tmp_path / "ref.db")
    ref_agent = ScriptedAgent(rules(), n=N)
    run(ref_store, ref_agent, concurrency=4)
    store = ExperienceStore(tmp_path / "k.db")
    first = ScriptedAgent(rules(), n=N, kill_after=13)
    with pytest.raises(Killed):
        run(store, first, concurrency=4)
    recorded = len(store.samples("r1"))
    assert recorded <= 13
    second = ScriptedAgent(rules(), n=N)
    run(store, second, concurrency=4)
    assert len(second.calls) == len(ref_agent.calls) - recorded
    assert _fingerprint(store, "r1")[1] == _fingerprint(ref_store, "r1")[1]


def test_llm_errors_are_retried_on_resume(store: ExperienceStore) -> None:
    class Flaky(ScriptedAgent):
        async def attempt(self, task, demonstrations, *, temperature, sample_index):
            a = await super().attempt(task, demonstrations, temperature=temperature, sample_index=sample_index)
            if task.name == "B" and sample_index == 3:
                a.passed, a.failure_kind, a.impl = False, "llm_error", None
            return a

    run(store, Flaky(rules(), n=N), max_iterations=1)
    again = ScriptedAgent(rules(), n=N)
    run(store, again, max_iterations=1)
    assert [(c["task"], c["index"]) for c in again.calls] == [("B", 3), ("B", 3)]  # one per temperature
    assert not any(s.failure_kind == "llm_error" for s in store.samples("r1"))


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="n"):
        LoopConfig(n=0)
    with pytest.raises(ValueError, match="temperature"):
        LoopConfig(temperatures=())


def test_duplicate_task_names_rejected(store: ExperienceStore) -> None:
    t = tasks()
    with pytest.raises(ValueError, match="unique"):
        run(store, ScriptedAgent(rules(), n=N), task_list=t + [t[0]])


def test_dead_backend_aborts_early_and_resumes(store: ExperienceStore) -> None:
    from stepsmith.improve.loop import RunAborted

    class Dead(ScriptedAgent):
        async def attempt(self, task, demonstrations, *, temperature, sample_index):
            self.calls.append({"task": task.name})
            from agent_fakes import make_attempt

            return make_attempt(None, False, "llm_error", 0, 0, feedback="connection refused")

    dead = Dead(rules(), n=N)
    with pytest.raises(RunAborted, match=r"8 samples in a row failed with llm_error.*connection refused.*--resume r1"):
        run(store, dead)
    assert len(dead.calls) == 8
    healthy = ScriptedAgent(rules(), n=N)
    result = run(store, healthy)
    assert result.reason == "no_progress" and result.solved == {"A": 0, "B": 0, "C": 1, "D": 3}
    assert sum(1 for c in healthy.calls if c["index"] < N) == 5 * N * len(TEMPS)  # all retried
