"""The issue's smaller items, each through the real CLI."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml
from llm_fake_server import FakeLLMServer, Reply
from typer.testing import CliRunner

from stepsmith.cli import app
from stepsmith.evaluate.runner import BenchConfig, create_run
from stepsmith.improve.store import DemoRecord, ExperienceStore
from stepsmith.llm.store import CallStore, cache_key
from stepsmith.tasks.suite import get_task


def _run(*args: str, **kw):
    return CliRunner().invoke(app, list(args), **kw)


def _recorded_run(db: Path) -> str:
    store = ExperienceStore(db)
    task = get_task("gemm_bias_relu")
    run_id = create_run(BenchConfig(model="scripted:test", method="single", tasks=[task.name], n=2,
                                    temperatures=[0.7]), store, [task])
    store.add_demos(run_id, [DemoRecord(task_name=task.name, group=task.group, task_ir="a: 1\nb: 2\n",
                                        impl=task.impl or "", model="m", iteration=0, temperature=0.7,
                                        verifier_version="v", success_count=1, n=2)])
    store.set_status(run_id, "finished")
    return run_id


def test_k_takes_comma_lists(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    run_id = _recorded_run(db)
    result = _run("report", run_id, "--k", "2,5", "--k", "10", "--db", str(db), "--out", str(tmp_path / "r"))
    assert result.exit_code == 0, result.output
    md = (tmp_path / "r" / "report.md").read_text()
    assert "pass@2" in md and "pass@5" in md and "pass@10" in md
    bad = _run("report", run_id, "--k", "2,x", "--db", str(db))
    assert bad.exit_code == 2 and "'x' is not an integer" in bad.output


def test_levels_is_the_long_name_of_m(tmp_path: Path) -> None:
    result = _run("bench", "--help", env={"COLUMNS": "200"})
    assert "--levels" in result.output and "-m" in result.output
    est = _run("bench", "--model", "openai:gpt-4o-2024-11-20", "--tasks", "gemm_bias_relu", "-n", "1",
               "--levels", "2", "--estimate", "--db", str(tmp_path / "db.sqlite"))
    assert est.exit_code == 0, est.output


def test_export_demos_writes_programs_as_block_scalars(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    run_id = _recorded_run(db)
    out = tmp_path / "demos.yaml"
    assert _run("export-demos", run_id, str(out), "--db", str(db)).exit_code == 0
    text = out.read_text()
    impl = get_task("gemm_bias_relu").impl or ""
    assert "impl: |" in text and textwrap.indent(impl, "  ").splitlines()[0] in text
    assert "\\n" not in text  # no escaped one-line programs
    assert yaml.safe_load(text)["demos"][0]["impl"].rstrip() == impl.rstrip()


def test_verify_impl_accepts_the_fenced_answer_format(tmp_path: Path) -> None:
    impl = get_task("demo_map_silu").impl or ""
    answer = tmp_path / "answer.md"
    answer.write_text("Here is my program:\n```yaml\nimpl: |-\n" + textwrap.indent(impl, "  ") + "\n```\n")
    bare = tmp_path / "bare.py"
    bare.write_text(impl)
    for path in (answer, bare):
        result = _run("verify", "demo_map_silu", "--impl", str(path))
        assert result.exit_code == 0, result.output
    prose = tmp_path / "prose.md"
    prose.write_text("```yaml\nnot a program\n```\n")
    result = _run("verify", "demo_map_silu", "--impl", str(prose))
    assert result.exit_code == 2 and "no program found" in result.output


def test_verify_timeout_help_says_cpu_time() -> None:
    result = _run("verify", "--help", env={"COLUMNS": "200"})
    text = " ".join(result.output.split())
    assert "CPU-time limit" in text and "Wall-clock" not in text


def test_log_table_shows_full_ids_even_when_narrow(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    store = CallStore(db)
    msgs = [{"role": "user", "content": "x"}]
    run_id = "20261130-120000-abcd-a-long-run-id"
    for i in range(3):
        store.record(model="openai-compatible:some-rather-long-model-name", provider="openai-compatible",
                     messages=msgs, params={}, sample_index=i, key=cache_key("m", msgs, {}, i),
                     status="ok", run_id=run_id, task="gemm_bias_relu", response="y" * 200,
                     started_at="2026-11-30T12:00:00.000+00:00", input_tokens=10, output_tokens=5)
    result = _run("log", "--db", str(db), env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert result.output.count(run_id) == 3  # every row's full run id, never "20261130-1…"
    ids = [line.split()[1] for line in result.output.splitlines() if line.startswith("│ ")]
    assert ids[:3] == ["3", "2", "1"]


@pytest.mark.timeout(120)
def test_unpriced_model_shows_unknown_cost(server: FakeLLMServer, tmp_path: Path) -> None:
    server.push(Reply(text="no program"))
    result = _run("bench", "--model", "openai-compatible:fake", "--method", "single", "-n", "1",
                  "--temperatures", "0.7", "--tasks", "demo_map_silu", "--db", str(tmp_path / "db.sqlite"),
                  "--out", str(tmp_path / "r"), env={"OPENAI_BASE_URL": f"{server.url}/v1"})
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if "cost $" in x)
    assert "unknown" in line and "0.0000" not in line
    assert "| unknown |" in (tmp_path / "r" / "report.md").read_text()


def test_naming_the_default_model_says_it_runs_the_full_protocol(tmp_path: Path) -> None:
    from stepsmith.llm import DEFAULT_MODEL

    db = str(tmp_path / "db.sqlite")
    named = _run("bench", "--model", DEFAULT_MODEL, "--estimate", "--db", db, env={"COLUMNS": "200"})
    assert named.exit_code == 0, named.output
    assert "runs the full protocol" in named.output and "without --model" in named.output
    quick = _run("bench", "--estimate", "--db", db)
    assert quick.exit_code == 0 and "full protocol" not in quick.output and "4 tasks" in quick.output


@pytest.mark.timeout(120)
def test_reference_compact_is_what_the_server_reads(server: FakeLLMServer, tmp_path: Path) -> None:
    from stepsmith.agents.prompts import base_prompt

    server.push(Reply(text="no program"))
    result = _run("bench", "--model", "openai-compatible:fake", "--method", "single", "-n", "1",
                  "--temperatures", "0.7", "--tasks", "demo_map_silu", "--reference", "compact",
                  "--db", str(tmp_path / "db.sqlite"), "--out", str(tmp_path / "r"),
                  env={"OPENAI_BASE_URL": f"{server.url}/v1", "COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    (request,) = server.requests
    assert request["body"]["messages"][0]["content"] == base_prompt(True, style="compact")
    assert "compact reference" in result.output
    bad = _run("bench", "--model", "openai-compatible:fake", "--reference", "tiny", "--db",
               str(tmp_path / "db.sqlite"))
    assert bad.exit_code == 2 and "--reference 'tiny' is not a style" in bad.output
