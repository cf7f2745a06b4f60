"""`stepsmith prompt`: the exact proposer messages, with the leakage guard on a library."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from stepsmith.cli import app
from stepsmith.demos import export_library
from stepsmith.improve.store import DemoRecord
from stepsmith.tasks.suite import get_task


def _demo(task_name: str, impl: str) -> DemoRecord:
    task = get_task(task_name)
    return DemoRecord(task_name=task_name, group=task.group, task_ir="inputs: []\n", impl=impl, model="m",
                      iteration=1, temperature=0.7, verifier_version="v", success_count=1, n=2)


def test_prompt_prints_the_messages_bench_would_send() -> None:
    from stepsmith.agents.prompts import compose_messages

    res = CliRunner().invoke(app, ["prompt", "gemm_bias_relu", "--json"])
    assert res.exit_code == 0, res.output
    messages = json.loads(res.stdout)
    assert messages == compose_messages(get_task("gemm_bias_relu"), [])
    plain = CliRunner().invoke(app, ["prompt", "gemm_bias_relu"])
    assert "===== system (~" in plain.stdout and "===== user (~" in plain.stdout
    assert messages[1]["content"] in plain.stdout and "0 demonstration(s)" in plain.stderr
    no_ir = json.loads(CliRunner().invoke(app, ["prompt", "gemm_bias_relu", "--no-ir", "--json"]).stdout)
    assert no_ir == compose_messages(get_task("gemm_bias_relu"), [], with_ir=False) and no_ir != messages


def test_prompt_withholds_the_tasks_own_solution(tmp_path: Path) -> None:
    own = get_task("gemm_bias_relu")
    other = get_task("expert_linear_sum")
    lib = export_library([_demo("gemm_bias_relu", own.impl), _demo("expert_linear_sum", other.impl)],
                         tmp_path / "lib.yaml")
    res = CliRunner().invoke(app, ["prompt", "gemm_bias_relu", "--demos", str(lib)])
    assert res.exit_code == 0, res.output
    assert "1 demonstration(s); 1 demonstration(s) withheld by the leakage guard" in res.stderr
    user = res.stdout.split("===== user")[1]
    assert other.impl.splitlines()[0].strip() in user


def test_prompt_shows_the_sibling_bench_would_repeat(tmp_path: Path) -> None:
    from stepsmith.agents.prompts import compose_messages
    from stepsmith.demos import load_library

    sibling = get_task("gemm_outer_k")
    lib = export_library([_demo("gemm_outer_k", sibling.impl)], tmp_path / "lib.yaml")
    res = CliRunner().invoke(app, ["prompt", "gemm_bias_relu", "--demos", str(lib), "--sibling",
                                   "--json"])
    assert res.exit_code == 0, res.output
    messages = json.loads(res.stdout)
    assert messages == compose_messages(get_task("gemm_bias_relu"), load_library(lib), sibling=True)
    assert "# The solved task most like yours" in messages[1]["content"]


def test_prompt_errors_are_clear(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["prompt", "no_such_task"])
    assert res.exit_code == 2 and "no_such_task" in res.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("demos: [1, 2\n")
    res = CliRunner().invoke(app, ["prompt", "gemm_bias_relu", "--demos", str(bad)])
    assert res.exit_code == 2 and "bad.yaml" in res.stderr
