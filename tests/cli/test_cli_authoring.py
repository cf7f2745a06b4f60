"""Authoring a task from the docs alone: the documented example, the scaffold, the reference."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from stepsmith import __version__
from stepsmith.cli import app

DOC = Path(__file__).resolve().parents[2] / "docs" / "task-format.md"


def _run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_the_documented_worked_example_passes_tasks_check(tmp_path: Path) -> None:
    text = DOC.read_text()
    section = text[text.index("## A worked example"):]
    example = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    path = tmp_path / "rms_rows.yaml"
    path.write_text(example)
    result = _run("tasks", "check", str(path))
    assert result.exit_code == 0, result.output
    assert "PASS rms_rows (4 bindings)" in result.output  # as the doc says


def test_the_doc_names_every_schema_field() -> None:
    from stepsmith.tasks.schema import DataGen, FnSpec, OutputSpec, StreamSpec, TaskSpec, Tolerance

    text = DOC.read_text()
    for model in (TaskSpec, StreamSpec, FnSpec, OutputSpec, DataGen, Tolerance):
        for name, f in model.model_fields.items():
            assert f"`{f.alias or name}" in text, f"docs/task-format.md does not explain {name!r}"


def test_tasks_new_writes_a_scaffold_that_passes_check(tmp_path: Path) -> None:
    made = _run("tasks", "new", "my_op", "--dir", str(tmp_path))
    assert made.exit_code == 0, made.output
    path = tmp_path / "my_op.yaml"
    text = path.read_text()
    assert "test_name: my_op" in text and "docs/task-format.md" in text and text.count("#") > 20
    checked = _run("tasks", "check", str(path))
    assert checked.exit_code == 0 and "PASS my_op (3 bindings)" in checked.output
    # the commented optional fields are valid once uncommented
    filled = re.sub(r"^# (bindings:|tolerance:)", r"\1", text, flags=re.M)
    filled = re.sub(r"^#   - \{label", "  - {label", filled, flags=re.M)
    assert filled.count("\n  - {label") == 2 and "\ntolerance: {rtol" in filled
    path.write_text(filled)
    again = _run("tasks", "check", str(path))
    assert again.exit_code == 0 and "PASS my_op (4 bindings)" in again.output, again.output
    refused = _run("tasks", "new", "my_op", "--dir", str(tmp_path))
    assert refused.exit_code == 1 and "already exists" in refused.output
    bad = _run("tasks", "new", "my op", "--dir", str(tmp_path))
    assert bad.exit_code == 1 and "may only use" in bad.output


def test_reference_prints_the_models_system_message() -> None:
    from stepsmith.agents.prompts import base_prompt

    result = _run("reference")
    assert result.exit_code == 0 and result.output.strip() == base_prompt(with_ir=True).strip()
    no_ir = _run("reference", "--no-ir")
    assert no_ir.output.strip() == base_prompt(with_ir=False).strip()
    md = _run("reference", "--markdown")
    assert md.exit_code == 0 and "# STeP primitive reference" in md.output and "Accum" in md.output


def test_version() -> None:
    result = _run("--version")
    assert result.exit_code == 0 and result.output.strip() == f"stepsmith {__version__}"
