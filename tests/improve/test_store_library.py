"""Experience store, demonstration library files and re-verification."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from stepsmith.demos import (
    DemoLibraryError,
    DemoRecord,
    export_library,
    leaks,
    load_library,
    visible_demos,
)
from stepsmith.improve.reverify import reverify_run
from stepsmith.improve.store import ExperienceStore, SampleRecord, default_db_path


def demo(name: str = "gemm_bias_relu", impl: str = "y = step.Map(fn=F).apply(x)\nreturn y\n", **kw) -> DemoRecord:
    base = dict(task_name=name, group="gemm", task_ir="inputs: []\n", impl=impl, model="m", iteration=2,
                temperature=0.7, verifier_version="v1", success_count=3, n=8)
    base.update(kw)
    return DemoRecord(**base)


def test_default_db_path_follows_stepsmith_home(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STEPSMITH_HOME", str(tmp_path / "home"))
    assert default_db_path() == tmp_path / "home" / "stepsmith.db"


def test_runs_prefix_lookup_and_duplicates(store: ExperienceStore) -> None:
    store.create_run("20250101-aaaa", method="single", model="m", config={"n": 1})
    store.create_run("20250101-aabb", method="agent", model="m", config={})
    assert store.find_run("20250101-aaaa").method == "single"
    assert store.find_run("20250101-aab").method == "agent"
    with pytest.raises(KeyError, match="ambiguous"):
        store.find_run("20250101-aa")
    with pytest.raises(KeyError, match="no run 'zzz'"):
        store.find_run("zzz")
    with pytest.raises(ValueError, match="--resume 20250101-aaaa"):
        store.create_run("20250101-aaaa", method="single", model="m", config={})
    store.set_status("20250101-aaaa", "finished", summary={"wall_seconds": 3.0}, note="done")
    row = store.get_run("20250101-aaaa")
    assert (row.status, row.summary, row.note, row.config) == ("finished", {"wall_seconds": 3.0}, "done", {"n": 1})


def test_samples_roundtrip_and_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    s = ExperienceStore(path)
    s.create_run("r", method="single", model="m", config={})
    rec = SampleRecord("r", 0, 0, "t", "g", None, 3, "return x", False, "timeout", "slow", 10, 2, 0.5, 1,
                       True, False, 1.5, ["d1"], "v1")
    s.record_sample(rec)
    s.close()
    again = ExperienceStore(path)
    (got,) = again.samples("r")
    assert got == rec and got.temp_key == "default"
    assert again.sample_map("r", 0)[("t", "default", 3)] == rec


def test_library_roundtrip_json_and_yaml(tmp_path: Path) -> None:
    demos = [demo(), demo("attn_x", "z = step.Map(fn=G).apply(x)\nreturn z\n", temperature=None)]
    for suffix in (".json", ".yaml"):
        path = export_library(demos, tmp_path / f"lib{suffix}", run_id="r9")
        loaded = load_library(path)
        assert [(d.task_name, d.impl, d.temperature, d.success_count, d.n, d.iteration) for d in loaded] == [
            (d.task_name, d.impl, d.temperature, d.success_count, d.n, d.iteration) for d in demos]
        assert all(d.source == "import" and d.provenance["source_run"] == "r9" for d in loaded)


def test_library_errors_name_entry_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "stepsmith-demos/1", "demos": [{"task_name": "a", "group": "g"}]}))
    with pytest.raises(DemoLibraryError, match=r"demos\[0\] \(a\) is missing field\(s\) task_ir, impl"):
        load_library(bad)
    bad.write_text("{not json")
    with pytest.raises(DemoLibraryError, match="not valid JSON/YAML"):
        load_library(bad)
    with pytest.raises(DemoLibraryError, match="cannot read"):
        load_library(tmp_path / "missing.yaml")
    bad.write_text(json.dumps({"format": "other/2", "demos": []}))
    with pytest.raises(DemoLibraryError, match="other/2"):
        load_library(bad)


def test_leakage_guard_by_name_and_isomorphism() -> None:
    task = SimpleNamespace(name="t1", impl="a = step.Map(fn=F).apply(x)\nreturn a\n")
    own = demo("t1", "q = step.Map(fn=H).apply(x)\nreturn q\n")
    twin = demo("other", "b = step.Map(fn=F).apply(x)\n# same program\nreturn b\n")
    fine = demo("other2", "b = step.Map(fn=G).apply(x)\nreturn b\n")
    assert leaks(task, own) and leaks(task, twin) and not leaks(task, fine)
    assert visible_demos(task, [own, twin, fine]) == [fine]


def test_reverify_marks_failing_demos_stale(store: ExperienceStore) -> None:
    from stepsmith.tasks.suite import get_task
    from stepsmith.tasks.task import Task
    from stepsmith.verify.verdict import FailureKind, Verdict

    ref = get_task("gemm_bias_relu").impl
    store.create_run("r", method="self-improve", model="m", config={})
    store.add_demos("r", [demo("gemm_bias_relu", ref), demo("expert_linear_sum", "return E0\n", group="expert")])
    calls = []

    def fake_verify(task: Task, impl: str) -> Verdict:  # the new "verifier version" accepts only the true reference
        calls.append(task.name)
        ok = impl == ref
        return Verdict(passed=ok, kind=None if ok else FailureKind.output_mismatch, feedback="nope",
                       verifier_version="v2")

    results = {r.task_name: r for r in reverify_run(store, "r", fake_verify)}
    assert sorted(calls) == ["expert_linear_sum", "gemm_bias_relu"]
    assert results["gemm_bias_relu"].passed and not results["expert_linear_sum"].passed
    active = store.demos("r", active_only=True)
    assert [(d.task_name, d.verifier_version) for d in active] == [("gemm_bias_relu", "v2")]
    stale = [d for d in store.demos("r") if d.status == "stale"]
    assert stale[0].provenance["stale_reason"].startswith("output_mismatch")
    assert active[0].provenance["reverified"] == [{"from": "v1", "to": "v2", "passed": True}]


def test_reverify_with_the_real_verifier(store: ExperienceStore) -> None:
    from stepsmith.tasks.suite import get_task
    from stepsmith.verify import verify_in_process

    ref = get_task("gemm_bias_relu").impl
    store.create_run("r", method="self-improve", model="m", config={})
    store.add_demos("r", [demo("gemm_bias_relu", ref), demo("bmm_mnk_mkd", "return E0\n", group="bmm")])
    results = {r.task_name: r for r in reverify_run(store, "r", verify_in_process)}
    assert results["gemm_bias_relu"].passed is True
    assert results["bmm_mnk_mkd"].passed is False and results["bmm_mnk_mkd"].kind


def test_dead_owner_shows_interrupted_and_old_databases_migrate(tmp_path: Path) -> None:
    """A run killed with -9 never records its end; `stepsmith runs` must not call it running."""
    import socket
    import sqlite3
    import subprocess
    import sys

    path = tmp_path / "old.db"
    old = sqlite3.connect(path)  # a store created before the owner column existed
    old.execute("CREATE TABLE exp_runs (run_id TEXT PRIMARY KEY, created REAL NOT NULL, updated REAL NOT NULL,"
                " status TEXT NOT NULL, method TEXT NOT NULL, model TEXT NOT NULL, config TEXT NOT NULL,"
                " summary TEXT, note TEXT)")
    old.execute("INSERT INTO exp_runs VALUES ('old', 1, 1, 'running', 'single', 'm', '{}', NULL, NULL)")
    old.commit()
    old.close()
    store = ExperienceStore(path)
    assert store.get_run("old").owner is None and store.get_run("old").shown_status == "running"

    store.create_run("live", method="single", model="m", config={})
    live = store.get_run("live")
    assert live.owner == f"{socket.gethostname()}:{os.getpid()}" and live.shown_status == "running"

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    store._conn.execute("UPDATE exp_runs SET owner = ? WHERE run_id = 'live'",
                        (f"{socket.gethostname()}:{dead}",))
    assert store.get_run("live").shown_status == "interrupted"
    store.set_status("live", "finished")
    assert store.get_run("live").owner is None and store.get_run("live").shown_status == "finished"
    store.close()
