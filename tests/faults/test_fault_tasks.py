"""Hostile or careless task files fail with an error naming the file and line, never a hang,
an exit, or a machine-sized allocation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stepsmith.tasks import load_task
from stepsmith.tasks.errors import TaskFormatError, TaskReferenceError

TASK = """\
test_name: faults_rowsum
inputs:
  - name: X
    dtype: fp32
    dims: [D, M]
    data_gen: torch.randn
fns:
  - name: Square
    func_name: fn_sq
    input_dtype: fp32
    output_dtype: fp32
    apply: |-
      return [input[0] * input[0]]
  - name: Sum
    func_name: fn_sum
    init: [0]
    input_dtype: fp32
    output_dtype: fp32
    apply: |-
      return [state[0] + input[0]]
outputs:
  - name: O
    dtype: fp32
    dims: [M]
    data_transform:
      - |-
        (input_data['X'] ** 2).sum(-1)
impl: |-
  E1 = step.Map(fn=fn_sq).apply(X)
  return step.Accum(fn=fn_sum, b=1).apply(E1)
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "task.yaml"
    path.write_text(text)
    return path


def line_of(exc: TaskFormatError, path: Path) -> str:
    assert exc.source == str(path), f"the error names {exc.source!r}, not the file"
    assert exc.line is not None
    return path.read_text().splitlines()[exc.line - 1].strip()


def with_global(code: str) -> str:
    return TASK.replace("outputs:", "global: |-\n" + "".join(
        f"  {line}\n" for line in code.splitlines()) + "outputs:")


def test_the_base_task_loads(tmp_path: Path) -> None:
    task = load_task(write(tmp_path, TASK))
    task.instantiate(task.bindings()[0])


def test_an_alias_bomb_is_refused_before_expansion(tmp_path: Path) -> None:
    bomb = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    bomb += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    path = write(tmp_path, "\n".join(bomb) + "\n" + TASK)
    with pytest.raises(TaskFormatError, match="alias bomb") as info:
        load_task(path)
    assert info.value.source == str(path)


def test_moderate_aliases_still_work(tmp_path: Path) -> None:
    text = TASK.replace("    input_dtype: fp32\n", "    input_dtype: &t fp32\n", 1)
    text = text.replace("    output_dtype: fp32\n", "    output_dtype: *t\n")
    assert text.count("*t") == 2
    load_task(write(tmp_path, text))


def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TaskFormatError, match="refers to itself|recursive"):
        load_task(write(tmp_path, "a: &a [*a]\n" + TASK))


def test_deep_nesting_is_a_format_error(tmp_path: Path) -> None:
    with pytest.raises(TaskFormatError, match="nested"):
        load_task(write(tmp_path, "deep: " + "[" * 3000 + "]" * 3000 + "\n" + TASK))


@pytest.mark.parametrize("code", ["raise SystemExit(3)", "import sys\nsys.exit(0)", "exit(0)",
                                  "import os\nos._exit(0)", "import os\nos.abort()"])
def test_exiting_global_is_an_error_naming_the_line(tmp_path: Path, code: str) -> None:
    """In process (trusted callers such as the self-audit): a guard, not a sandbox."""
    import os

    exit_before = os._exit
    path = write(tmp_path, with_global(code))
    task = load_task(path)  # loading runs none of the file's code
    with pytest.raises(TaskReferenceError, match="tried to (exit|end the process)") as info:
        task.bindings()
    assert line_of(info.value, path).lower().startswith(("raise", "sys.exit", "exit", "os."))
    assert os._exit is exit_before  # restored


def test_an_endless_global_is_an_error_not_a_hang(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import stepsmith.tasks.snippets as snippets

    monkeypatch.setattr(snippets, "TASK_CODE_LIMIT_S", 0.3)
    path = write(tmp_path, with_global("a = 0\nwhile True:\n    a += 1"))
    with pytest.raises(TaskReferenceError, match="did not finish") as info:
        load_task(path).bindings()
    assert line_of(info.value, path).startswith(("while", "a += 1"))


def test_global_as_a_list_points_at_the_failing_item(tmp_path: Path) -> None:
    path = write(tmp_path, TASK.replace("outputs:", "global:\n  - a = 1\n  - b = 1/0\noutputs:"))
    with pytest.raises(TaskReferenceError, match="ZeroDivisionError") as info:
        load_task(path).bindings()
    assert line_of(info.value, path) == "- b = 1/0"


def test_multiline_reference_expression_runs_and_errors_name_its_line(tmp_path: Path) -> None:
    good = TASK.replace("        (input_data['X'] ** 2).sum(-1)",
                        "        y = 2\n        ((input_data['X'] ** y)\n          .sum(-1))")
    task = load_task(write(tmp_path, good))
    task.instantiate(task.bindings()[0])
    bad = TASK.replace("        (input_data['X'] ** 2).sum(-1)",
                       "        y = 2\n        ((input_data['X'] ** y).sum(-1)\n          + nope)")
    path = write(tmp_path, bad)
    task = load_task(path)
    with pytest.raises(TaskReferenceError, match="NameError") as info:
        task.instantiate(task.bindings()[0])
    assert line_of(info.value, path) == "+ nope)"


def test_reference_errors_in_a_worker_name_the_file(tmp_path: Path) -> None:
    from stepsmith.verify import VerifierPool

    bad = TASK.replace("        (input_data['X'] ** 2).sum(-1)",
                       "        y = 1\n        (input_data['X'] ** 2).sum(-1) + nope")
    path = write(tmp_path, bad)
    with VerifierPool(workers=1) as pool, pytest.raises(TaskReferenceError, match="NameError") as info:
        pool.verify(load_task(path), IMPL)
    line = bad.splitlines().index("        (input_data['X'] ** 2).sum(-1) + nope") + 1
    assert (info.value.source, info.value.line) == (str(path), line)
    assert str(info.value).startswith(f"{path}:{line}: ")


IMPL = "E1 = step.Map(fn=fn_sq).apply(X)\nreturn step.Accum(fn=fn_sum, b=1).apply(E1)"
REFERENCE = "        (input_data['X'] ** 2).sum(-1)"


def with_reference(code: str) -> str:
    """The task with `code` run in its data_transform snippet before the reference value."""
    lines = "".join(f"        {line}\n" for line in code.splitlines())
    return TASK.replace(REFERENCE, lines + REFERENCE)


def _cli(*args: str) -> Any:
    from typer.testing import CliRunner

    from stepsmith.cli import app

    return CliRunner().invoke(app, list(args))


# Task code runs in the verifier's worker under the candidates' CPU-time limit: a hang, an exit
# or a kill there is an error naming the file (exit 2), never a hang or a false success.
@pytest.mark.parametrize(("where", "code", "says"), [
    ("global", "a = 0\nwhile True:\n    a += 1", "CPU-time limit"),
    ("global", "x = max(range(10**18))", "CPU-time limit"),  # a C loop: the worker is killed
    ("reference", "import os\nos._exit(0)", "tried to end the process"),
    ("reference", "import posix\nposix._exit(0)", "ended the verifier's worker process"),
    ("reference", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "worker process"),
    ("reference", "raise SystemExit(3)", "SystemExit(3)"),
    ("global", "import sys\nsys.exit(0)", "SystemExit(0)"),
])
def test_hostile_task_code_in_verify_is_a_clear_error(tmp_path: Path, where: str, code: str,
                                                      says: str) -> None:
    text = with_global(code) if where == "global" else with_reference(code)
    path = write(tmp_path, text)
    result = _cli("verify", str(path), "--timeout", "1")
    assert result.exit_code == 2, result.output
    out = " ".join(result.output.split())
    assert "task error (not the program's)" in out and str(path) in out and says in out, out


def test_a_task_whose_fn_body_exits_is_never_a_success(tmp_path: Path) -> None:
    """fn bodies are task code too; they run under the candidate's clock."""
    path = write(tmp_path, TASK.replace("      return [input[0] * input[0]]",
                                        "      import os\n      os._exit(0)"))
    result = _cli("verify", str(path), "--timeout", "2")
    assert result.exit_code != 0, result.output


@pytest.fixture(scope="module")
def pool() -> Iterator[Any]:
    from stepsmith.verify import VerifierPool

    with VerifierPool(workers=1) as p:
        yield p


def with_fn_exit_on_second_call(code: str) -> str:
    """The task with `fn_sq` running `code` from its second call on: the data preparation's
    one probe call passes, so the exit happens while the model's program runs."""
    body = ("      import os, posix, signal\n      calls[0] += 1\n      if calls[0] > 1:\n"
            + "".join(f"        {line}\n" for line in code.splitlines())
            + "      return [input[0] * input[0]]")
    return with_global("calls = [0]").replace("      return [input[0] * input[0]]", body)


@pytest.mark.parametrize(("code", "says"), [
    ("os._exit(0)", "exit code 0"),
    ("posix._exit(5)", "exit code 5"),
    ("os.kill(os.getpid(), signal.SIGKILL)", "SIGKILL"),
    ("raise SystemExit(3)", "SystemExit(3)"),
])
def test_a_fn_body_that_exits_while_the_program_runs_is_a_task_error(
        tmp_path: Path, pool: Any, code: str, says: str) -> None:
    """The program only called the task's fn: the worker's death is the task's fault, named
    by its file, never a failure (or a memory verdict) charged to the program."""
    path = write(tmp_path, with_fn_exit_on_second_call(code))
    task = load_task(path)
    with pytest.raises(TaskReferenceError) as info:
        pool.verify(task, IMPL, timeout_s=2)
    assert info.value.source == str(path) and says in str(info.value), str(info.value)
    assert pool.verify(load_task(TASK), IMPL).passed  # the pool replaced the worker


HOSTILE_GLOBAL = "open({marker!r}, 'w').write('ran')\nimport os\nos._exit(7)"


@pytest.mark.parametrize("command", [["prompt"], ["prompt", "--no-ir"], ["tasks", "show"]])
def test_rendering_a_task_runs_none_of_its_code(tmp_path: Path, command: list[str]) -> None:
    """A hostile `global` (and reference) that would leave a marker and end the process: the
    command renders the task and exits 0, and the marker is never written."""
    marker = tmp_path / "task_code_ran"
    text = with_global(HOSTILE_GLOBAL.format(marker=str(marker)))
    path = write(tmp_path, text.replace(REFERENCE, f"        open({str(marker)!r}, 'w')\n"
                                                   + REFERENCE))
    result = _cli(*command, str(path))
    assert result.exit_code == 0, result.output
    assert "os._exit(7)" in result.output  # the global is shown, as text
    assert not marker.exists(), "rendering the task ran its code"


def test_bench_estimate_checks_a_hostile_task_in_the_sandbox(tmp_path: Path) -> None:
    """`--estimate` refuses a task whose code exits; the exit happens in a worker, not here."""
    marker = tmp_path / "global_ran"
    path = write(tmp_path, with_global(HOSTILE_GLOBAL.format(marker=str(marker))))
    result = _cli("bench", "--model", "scripted:test", "--method", "single", "-n", "1",
                  "--tasks", str(path), "--db", str(tmp_path / "db.sqlite"), "--estimate")
    assert result.exit_code == 2, result.output
    assert "refusing to start" in " ".join(result.output.split())


def test_a_non_utf8_impl_file_is_a_clear_cli_error(tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from stepsmith.verify.cli import register

    app = typer.Typer()
    register(app)

    @app.command("noop")
    def _noop() -> None:  # a second command keeps `verify` a named sub-command
        """Nothing."""

    impl = tmp_path / "impl.py"
    impl.write_bytes(b"E1 = step.Map(fn=fn_sq).apply(X)\n\xff\xfe return E1\n")
    result = CliRunner().invoke(app, ["verify", str(write(tmp_path, TASK)), "--impl", str(impl)])
    assert result.exit_code == 2 and "not UTF-8" in " ".join(result.output.split())
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_tasks_check_reports_task_code_that_exits_as_a_failure(tmp_path: Path) -> None:
    """`tasks check` runs the file's code in a worker: an exiting reference is a FAIL naming
    the file, the other tasks are still checked, and the command itself does not end."""
    path = write(tmp_path, with_reference("import posix\nposix._exit(0)"))
    result = _cli("tasks", "check", str(path), "demo_map_silu")
    assert result.exit_code == 1, result.output
    out = " ".join(result.output.split())
    assert "FAIL faults_rowsum" in out and str(path) in out and "worker process" in out
    assert "PASS demo_map_silu" in out and "1/2 tasks passed" in out
