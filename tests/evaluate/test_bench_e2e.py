"""The whole stack with a scripted LLM: real tasks, real agent, real sandboxed verifier, real store.

The scripted model answers with a task's *reference* program (so the verifier really accepts it)
only when the demonstrations in its prompt allow it: ``expert_linear_sum`` is solved from the
base prompt, ``gemm_bias_relu`` only once an ``expert`` demonstration is shown, ``bmm_mnk_mkd``
never (wrong programs and prose). A kill is a BaseException raised from inside the model call.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from stepsmith.demos import isomorphic as is_isomorphic
from stepsmith.evaluate.runner import BenchConfig, run_bench
from stepsmith.improve.store import ExperienceStore
from stepsmith.llm.testing import ScriptedBackend
from stepsmith.tasks.suite import get_task

NAMES = ["expert_linear_sum", "gemm_bias_relu", "bmm_mnk_mkd"]


class Killed(BaseException):
    pass


def _marker(task) -> str:
    return " ".join(task.description.split())[:60]


class Model:
    """Demonstration-sensitive scripted model; counts the calls that returned an answer."""

    def __init__(self, kill_after: int | None = None) -> None:
        self.tasks = {n: get_task(n) for n in NAMES}
        self.kill_after = kill_after
        self.answered = 0
        self.seen: list[tuple[str, tuple[str, ...]]] = []

    def __call__(self, messages, temperature, sample_index) -> str:
        if self.kill_after is not None and self.answered >= self.kill_after:
            raise Killed("simulated kill inside a model call")
        text = " ".join(" ".join(m["content"] for m in messages if m["role"] != "system").split())
        found = {n: text.rfind(_marker(t)) for n, t in self.tasks.items()}
        asked = max(found, key=lambda n: found[n])
        demos = tuple(sorted(n for n, pos in found.items() if pos >= 0 and n != asked))
        self.seen.append((asked, demos))
        self.answered += 1
        groups = {self.tasks[d].group for d in demos}
        ok = (asked == "expert_linear_sum" and sample_index % 2 == 0) or (
            asked == "gemm_bias_relu" and "expert" in groups
        )
        task = self.tasks[asked]
        if ok:
            return "Here you go:\n```yaml\nimpl: |-\n" + textwrap.indent(task.impl, "  ") + "\n```\n"
        if sample_index % 2:
            return "I am not sure how to write this program."
        wrong = task.impl.strip().splitlines()[0]
        return f"```python\n{wrong}\nreturn E0\n```"


def _cfg(**kw) -> BenchConfig:
    base = dict(model="scripted:test", method="self-improve", tasks=list(NAMES), n=2,
                temperatures=[0.7], guardian="rule", workers=1, concurrency=2, ks=[1, 2])
    base.update(kw)
    return BenchConfig(**base)


def _fingerprint(store: ExperienceStore, run_id: str):
    samples = sorted((s.iteration, s.task, s.sample_index, s.passed, s.failure_kind, s.impl)
                     for s in store.samples(run_id))
    its = [(i.iteration, i.level, i.demo_tasks, i.tasks, i.solved) for i in store.iterations(run_id)]
    return samples, its


@pytest.mark.timeout(240)
def test_self_improve_end_to_end_with_kill_and_resume(tmp_path: Path) -> None:
    ref_store = ExperienceStore(tmp_path / "ref.db")
    ref_model = Model()
    ref = run_bench(_cfg(), store=ref_store, backend=ScriptedBackend(ref_model),
                    report_dir=tmp_path / "rep")
    assert ref.status == "finished" and ref.result is not None
    assert ref.result.solved == {"expert_linear_sum": 0, "gemm_bias_relu": 1}
    assert ref.result.unsolved == ["bmm_mnk_mkd"] and ref.result.reason == "no_progress"
    # unsolved-only resampling: iteration t>0 never asks for a solved task
    its = ref_store.iterations(ref.run_id)
    assert its[0].tasks == NAMES and its[1].tasks == ["gemm_bias_relu", "bmm_mnk_mkd"]
    assert all(it.tasks == ["bmm_mnk_mkd"] for it in its[2:])
    # the leakage guard: no prompt ever showed a task its own solution
    assert all(asked not in demos for asked, demos in ref_model.seen)
    samples = ref_store.samples(ref.run_id)
    assert all(s.verifier_version for s in samples if s.failure_kind not in ("unparsable",))
    kinds = {s.failure_kind for s in samples if not s.passed}
    assert "unparsable" in kinds and len(kinds - {"unparsable"}) >= 1
    demos = {d.task_name: d for d in ref_store.demos(ref.run_id)}
    assert is_isomorphic(demos["expert_linear_sum"].impl, get_task("expert_linear_sum").impl)
    assert demos["gemm_bias_relu"].iteration == 1 and demos["gemm_bias_relu"].verifier_version
    md, html = ref.report
    assert "data:image/png;base64," in html.read_text() and "gemm_bias_relu" in md.read_text()

    # kill mid-run (twice), resume, and compare with the uninterrupted run
    store = ExperienceStore(tmp_path / "killed.db")
    first = Model(kill_after=5)
    with pytest.raises(Killed):
        run_bench(_cfg(), store=store, backend=ScriptedBackend(first), write_report=False)
    run_id = store.list_runs()[0].run_id
    second = Model(kill_after=4)
    with pytest.raises(Killed):
        run_bench(store=store, resume=run_id, backend=ScriptedBackend(second), write_report=False)
    third = Model()
    done = run_bench(store=store, resume=run_id, backend=ScriptedBackend(third), write_report=False)
    assert done.status == "finished"
    assert first.answered + second.answered + third.answered == ref_model.answered  # nothing paid twice
    assert _fingerprint(store, run_id) == _fingerprint(ref_store, ref.run_id)


def test_baseline_single_with_imported_demos(tmp_path: Path) -> None:
    """A library earned elsewhere lifts a baseline: gemm_bias_relu is solved only with it."""
    from stepsmith.demos import export_library

    store = ExperienceStore(tmp_path / "s.db")
    plain = run_bench(_cfg(method="single", tasks=["gemm_bias_relu"]), store=store,
                      backend=ScriptedBackend(Model()), write_report=False)
    assert plain.result.solved == {}
    earned = run_bench(_cfg(tasks=["expert_linear_sum"]), store=store,
                       backend=ScriptedBackend(Model()), write_report=False)
    lib = export_library(store.demos(earned.run_id), tmp_path / "lib.yaml", run_id=earned.run_id)
    lifted = run_bench(_cfg(method="single", tasks=["gemm_bias_relu"], demos_file=str(lib)),
                       store=store, backend=ScriptedBackend(Model()), write_report=False)
    assert lifted.result.solved == {"gemm_bias_relu": 0}
    imported = store.demos(lifted.run_id, source="import")
    assert [d.task_name for d in imported] == ["expert_linear_sum"]
    assert imported[0].provenance["source_run"] == earned.run_id


def test_token_budget_stops_cleanly_and_replay_runs_offline(tmp_path: Path) -> None:
    """`--max-tokens` stops a run with status 'budget'; `--cache replay` re-runs it from the call
    log alone, and fails on the first prompt that was never paid for."""
    store = ExperienceStore(tmp_path / "b.db")
    model = Model()
    stopped = run_bench(_cfg(method="single", token_budget=20_000), store=store,
                        backend=ScriptedBackend(model), write_report=False)
    assert stopped.status == "budget"
    assert 0 < model.answered < len(NAMES) * 2  # some samples were paid for, not all of them

    full = run_bench(_cfg(method="single"), store=store, backend=ScriptedBackend(Model()),
                     write_report=False)
    assert full.status == "finished"
    offline = Model()
    replayed = run_bench(_cfg(method="single", cache_mode="replay"), store=store,
                         backend=ScriptedBackend(offline), write_report=False)
    assert replayed.status == "finished" and offline.answered == 0  # every answer from the cache
    assert replayed.result.solved == full.result.solved

    with pytest.raises(Exception, match="(?i)cache|replay"):
        run_bench(_cfg(method="single", cache_mode="replay", n=3), store=store,
                  backend=ScriptedBackend(Model()), write_report=False)


def test_compact_reference_reaches_the_model_and_the_summary(tmp_path: Path) -> None:
    from stepsmith.agents.prompts import base_prompt
    from stepsmith.evaluate.report import decoding_label

    store = ExperienceStore(tmp_path / "s.db")
    backend = ScriptedBackend(Model())
    done = run_bench(_cfg(method="single", tasks=["expert_linear_sum"], reference="compact"),
                     store=store, backend=backend, write_report=False)
    assert done.result.solved == {"expert_linear_sum": 0}
    assert {c["messages"][0]["content"] for c in backend.calls} == {base_prompt(True, style="compact")}
    config = store.get_run(done.run_id).config
    assert config["reference"] == "compact"
    assert decoding_label(config) == "none, compact reference"
    assert decoding_label({"constrain": "typed", "search": "prefix"}) == "typed+prefix"
    assert (decoding_label({"constrain": "typed", "search": "deepen", "sibling": True})
            == "typed+deepen, sibling")


def test_sibling_repeats_the_nearest_demonstration_before_the_task(tmp_path: Path) -> None:
    """`sibling=True` reaches the prompt: the earned expert demonstration comes again right
    before a task of the expert group (and the run's config and summary say so)."""
    from stepsmith.demos import export_library
    from stepsmith.evaluate.report import decoding_label

    store = ExperienceStore(tmp_path / "s.db")
    earned = run_bench(_cfg(tasks=["expert_linear_sum"]), store=store,
                       backend=ScriptedBackend(Model()), write_report=False)
    lib = export_library(store.demos(earned.run_id), tmp_path / "lib.yaml", run_id=earned.run_id)
    users: list[str] = []

    def record(messages, temperature, sample_index) -> str:
        users.append(messages[1]["content"])
        return "no program"

    for sibling in (False, True):
        done = run_bench(_cfg(method="single", tasks=["expert_gate_weighted"], n=1, ks=[1],
                              demos_file=str(lib), sibling=sibling),
                         store=store, backend=ScriptedBackend(record), write_report=False)
        assert done.status == "finished"
    plain, with_sibling = users
    head = "# The solved task most like yours"
    assert head not in plain and head in with_sibling
    assert with_sibling.index(head) < with_sibling.index("# Your task")
    assert decoding_label(store.get_run(done.run_id).config) == "none, sibling"
