"""The sandboxed verifier end to end: verdict kinds, feedback, limits, pool behaviour."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
from verify_fixtures import ROWSUM_REF, ROWSUM_YAML

from stepsmith.tasks import load_task
from stepsmith.verify import FailureKind, Verdict, VerifierPool, verify, verify_in_process


def test_reference_passes_at_every_binding(pool, rowsum_task) -> None:
    v = pool.verify(rowsum_task, ROWSUM_REF)
    assert v.passed, v.feedback
    assert v.kind is None and v.reward == 1
    labels = [b.label for b in rowsum_task.bindings()]
    assert len(labels) >= 3
    assert [b.label for b in v.bindings] == labels
    assert all(b.passed and b.max_rel_error is not None and b.max_rel_error < 1e-10
               for b in v.bindings)
    assert v.task == "rowsum_squares"


def test_the_verifier_takes_a_loaded_task_resolved_once_by_the_caller(pool, tmp_path) -> None:
    from stepsmith.tasks import load_task
    from stepsmith.tasks.suite import get_task

    p = tmp_path / "rowsum.yaml"
    p.write_text(ROWSUM_YAML)
    assert pool.verify(get_task(str(p)), ROWSUM_REF).passed
    assert pool.verify(load_task(ROWSUM_YAML), ROWSUM_REF).passed
    for not_a_task in (str(p), ROWSUM_YAML):
        with pytest.raises(TypeError, match="takes a loaded Task.*get_task"):
            pool.verify(not_a_task, ROWSUM_REF)


def test_wrong_values_name_output_binding_index_and_values(pool, rowsum_task) -> None:
    src = ROWSUM_REF.replace("fn_sq", "fn_neg")
    v = pool.verify(rowsum_task, src)
    assert not v.passed and v.kind == FailureKind.value_mismatch
    fb = v.feedback
    assert "output 'O'" in fb
    assert f"binding '{rowsum_task.bindings()[0].label}'" in fb
    assert "expected" in fb and "found" in fb and "max abs error" in fb
    assert "[M=" in fb  # the worst element's index is named by dimension
    assert all(not b.passed for b in v.bindings)
    assert v.bindings[0].max_abs_error > 0.1


def test_literal_size_is_caught_by_symbolic_shapes_even_at_the_paper_binding(
    pool, rowsum_task
) -> None:
    """`symbol_to_literal`-style bug: Reshape by 16 instead of D (D=16 at the paper binding).

    The values are right at the paper binding, but the output's symbolic shape is not [N, M].
    """
    src = (
        "E1 = step.Map(fn=fn_sq).apply(X)\n"
        "E2 = step.Flatten(L=[1]).apply(E1)\n"
        "E3 = step.Reshape(L=[0], S=16).apply(E2)\n"
        "return step.Accum(fn=fn_sum, b=1).apply(E3)\n"
    )
    v = pool.verify(rowsum_task, src)
    assert v.kind == FailureKind.output_mismatch, v.feedback
    assert not v.bindings[0].passed
    assert "expected Strm<fp32, rank 1, [N, M]>" in v.feedback and "16" in v.feedback


def test_syntax_error(pool, rowsum_task) -> None:
    v = pool.verify(rowsum_task, "E1 = step.Map(fn=fn_sq).apply(X\nreturn E1\n")
    assert v.kind == FailureKind.parse_error and not v.passed
    assert v.line == 1 and "line 1" in v.feedback
    assert v.bindings == []


def test_disallowed_import(pool, rowsum_task) -> None:
    v = pool.verify(rowsum_task, "import os\nreturn step.Map(fn=fn_sq).apply(X)\n")
    assert v.kind == FailureKind.disallowed
    assert "import" in v.feedback and v.line == 1


def test_dunder_escape_is_disallowed(pool, rowsum_task) -> None:
    v = pool.verify(rowsum_task, "x = step.__class__\nreturn step.Map(fn=fn_sq).apply(X)\n")
    assert v.kind == FailureKind.disallowed


def test_affine_strict_rejects_and_warn_records(pool, rowsum_task) -> None:
    src = (
        "E1 = step.Map(fn=fn_sq).apply(X)\n"
        "E2 = step.Map(fn=fn_neg).apply(X)\n"
        "return step.Accum(fn=fn_sum, b=1).apply(E1)\n"
    )
    v = pool.verify(rowsum_task, src)
    assert v.kind == FailureKind.affine and "'X'" in v.feedback and "Copy" in v.feedback
    w = pool.verify(rowsum_task, src, affine="warn")
    assert w.passed, w.feedback
    assert any("X" in m for m in w.warnings)


def test_copy_makes_reuse_legal(pool, rowsum_task) -> None:
    src = (
        "A, B = step.Copy().apply(X)\n"
        "E1 = step.Map(fn=fn_sq).apply(A)\n"
        "E2 = step.Map(fn=fn_neg).apply(B)\n"
        "return step.Accum(fn=fn_sum, b=1).apply(E1)\n"
    )
    assert pool.verify(rowsum_task, src).passed


def test_wrong_output_type_is_output_mismatch(pool, rowsum_task) -> None:
    src = "E1 = step.Map(fn=fn_sq).apply(X)\nreturn step.Bufferize(a=1).apply(E1)\n"
    v = pool.verify(rowsum_task, src)
    assert v.kind == FailureKind.output_mismatch
    assert "output 'O': expected Strm<fp32, rank 1, [N, M]>" in v.feedback
    assert "found Strm<Buffer(fp32, [D]), rank 1, [N, M]>" in v.feedback


def test_wrong_rank_is_output_mismatch(pool, rowsum_task) -> None:
    v = pool.verify(rowsum_task, "return step.Map(fn=fn_sq).apply(X)\n")
    assert v.kind == FailureKind.output_mismatch
    assert "rank 2" in v.feedback and "rank 1" in v.feedback


def test_wrong_number_of_outputs(pool, rowsum_task) -> None:
    src = (
        "A, B = step.Copy().apply(X)\n"
        "E1 = step.Accum(fn=fn_sum, b=1).apply(step.Map(fn=fn_sq).apply(A))\n"
        "return E1, B\n"
    )
    v = pool.verify(rowsum_task, src)
    assert v.kind == FailureKind.output_mismatch
    assert "expected 1 output stream ('O')" in v.feedback
    v2 = pool.verify(rowsum_task, "E1 = step.Map(fn=fn_sq).apply(X)\n")
    assert v2.kind == FailureKind.output_mismatch and "return" in v2.feedback


def test_rank_error_points_at_the_line(pool, rowsum_task) -> None:
    src = "E1 = step.Map(fn=fn_sq).apply(X)\nE2 = step.Accum(fn=fn_sum, b=5).apply(E1)\nreturn E2\n"
    v = pool.verify(rowsum_task, src)
    assert v.kind == FailureKind.shape_error, v.feedback
    assert v.line == 2
    assert "line 2: E2 = step.Accum(fn=fn_sum, b=5).apply(E1)" in v.feedback
    assert "Accum" in v.feedback


def test_line_numbers_survive_leading_blank_lines_and_indentation(pool, rowsum_task) -> None:
    src = "\n\n    E1 = step.Map(fn=fn_sq).apply(X)\n    E2 = step.Accum(fn=fn_sum, b=5).apply(E1)\n"
    v = pool.verify(rowsum_task, src + "    return E2\n")
    assert v.line == 4 and "line 4: E2 = step.Accum(fn=fn_sum, b=5)" in v.feedback


def test_dtype_error(pool, rowsum_task) -> None:
    src = "return step.Accum(fn=fn_addbuf, b=1).apply(X)\n"
    v = pool.verify(rowsum_task, src)
    assert v.kind == FailureKind.dtype_error, v.feedback
    assert "Buffer(fp32, [D])" in v.feedback and "fp32" in v.feedback


def test_undefined_name_lists_fns(pool, rowsum_task) -> None:
    v = pool.verify(rowsum_task, "return step.Accum(fn=fn_total, b=1).apply(X)\n")
    assert v.kind == FailureKind.runtime_error
    assert "fn_total" in v.feedback and "fn_sq" in v.feedback


def test_runaway_loop_times_out_with_line_and_pool_keeps_serving(rowsum_task) -> None:
    with VerifierPool(workers=1, timeout_s=1.0, grace_s=2.0) as p:
        p.warm_up()
        src = "for i in range(10**12):\n    j = i\nreturn step.Map(fn=fn_sq).apply(X)\n"
        v = p.verify(rowsum_task, src)
        assert v.kind == FailureKind.timeout, v.feedback  # how fast it fires: a bench/ figure
        assert v.line in (1, 2)
        assert p.verify(rowsum_task, ROWSUM_REF, timeout_s=30).passed


def test_huge_allocation_is_memory_and_pool_keeps_serving(rowsum_task) -> None:
    with VerifierPool(workers=1, timeout_s=20.0, memory_limit_mb=1024) as p:
        p.warm_up()
        limits = open(f"/proc/{p._workers[0].proc.pid}/limits").read()
        line = next(x for x in limits.splitlines() if x.startswith("Max address space"))
        assert line.split()[3] == str(1024 * 1024 * 1024)  # RLIMIT_AS soft limit applied
        # ~1.8 GB of float64 at the paper binding: fine for the machine, over the 1 GiB cap
        src = (
            "E1 = step.Repeat(n=400000).apply(X)\n"
            "E2 = step.Map(fn=fn_sq).apply(E1)\n"
            "return step.Accum(fn=fn_sum, b=2).apply(E2)\n"
        )
        v = p.verify(rowsum_task, src)
        assert v.kind == FailureKind.memory, v.feedback
        assert "memory" in v.feedback and v.line in (1, 2, 3)
        assert p.verify(rowsum_task, ROWSUM_REF, timeout_s=30).passed


def test_worker_killed_mid_candidate_is_reported_and_replaced(rowsum_task) -> None:
    with VerifierPool(workers=1, timeout_s=30.0) as p:
        p.warm_up()
        pid = p._workers[0].proc.pid  # the worker this test's pool started

        def kill_soon() -> None:
            time.sleep(0.5)
            os.kill(pid, signal.SIGKILL)

        threading.Thread(target=kill_soon, daemon=True).start()
        src = "for i in range(10**12):\n    j = i\nreturn step.Map(fn=fn_sq).apply(X)\n"
        v = p.verify(rowsum_task, src)
        assert v.kind == FailureKind.memory and "killed by the operating system" in v.feedback
        assert p.respawns == 1
        assert p.verify(rowsum_task, ROWSUM_REF).passed


def test_verify_many_preserves_order(pool, rowsum_task) -> None:
    bad = ROWSUM_REF.replace("fn_sq", "fn_neg")
    items = [(rowsum_task, s) for s in [ROWSUM_REF, bad, "import os", ROWSUM_REF, bad]]
    vs = pool.verify_many(items)
    assert [v.passed for v in vs] == [True, False, False, True, False]
    assert vs[2].kind == FailureKind.disallowed and vs[1].kind == FailureKind.value_mismatch


def test_verdict_json_round_trip(pool, rowsum_task) -> None:
    v = pool.verify(rowsum_task, ROWSUM_REF.replace("fn_sq", "fn_neg"))
    data = json.loads(v.model_dump_json())
    assert data["kind"] == "value_mismatch" and data["verifier_version"]
    assert Verdict.model_validate(data) == v


def test_module_level_verify_and_in_process_agree(rowsum_task) -> None:
    from stepsmith.verify import verify_many

    bad = ROWSUM_REF.replace("fn_sq", "fn_neg")
    many = verify_many([(rowsum_task, ROWSUM_REF), (rowsum_task, bad)])
    for src, m in zip((ROWSUM_REF, bad), many, strict=True):
        a, b = verify(rowsum_task, src), verify_in_process(rowsum_task, src)
        assert (a.passed, a.kind) == (b.passed, b.kind) == (m.passed, m.kind)
    assert many[0].passed and not many[1].passed


def test_bad_arguments_are_clear_errors(pool, rowsum_task) -> None:
    with pytest.raises(ValueError, match="affine must be one of"):
        pool.verify(rowsum_task, ROWSUM_REF, affine="sometimes")
    v = pool.verify(rowsum_task, None)  # type: ignore[arg-type]
    assert v.kind == FailureKind.unparsable
    e = pool.verify(rowsum_task, "   \n")
    assert e.kind == FailureKind.parse_error and "empty" in e.feedback


def test_verify_many_runs_candidates_in_parallel(tmp_path) -> None:
    """Two candidates on two workers overlap in time. Proven by the workers' own stamps, not by a
    wall-clock budget (a loaded machine stretches durations, never turns overlap into none):
    the task's fn records (pid, start, end) of each call from inside the worker process."""
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    task = load_task(ROWSUM_YAML.replace(
        "inputs:",
        f"global: |-\n  import os, time\n  stamp_dir = {str(stamps)!r}\nbindings:\n"
        "  - {label: only}\ninputs:",
    ).replace(
        "      return [input[0] * input[0]]",
        "      t0 = time.time()\n      time.sleep(0.5)\n"
        "      with open(os.path.join(stamp_dir, str(os.getpid())), 'a') as f:\n"
        "          f.write(f'{t0} {time.time()}\\n')\n"
        "      return [input[0] * input[0]]",
    ))
    with VerifierPool(workers=2, timeout_s=30.0) as p:
        p.warm_up()
        pids = {w.proc.pid for w in p._workers}
        vs = p.verify_many([(task, ROWSUM_REF), (task, ROWSUM_REF)])
    assert all(v.passed for v in vs), [v.feedback for v in vs]
    spans = {}
    for f in stamps.iterdir():
        calls = [tuple(map(float, line.split())) for line in f.read_text().splitlines()]
        spans[int(f.name)] = (min(c[0] for c in calls), max(c[1] for c in calls))
    assert set(spans) == pids, "each of the two workers ran one candidate"
    (s1, e1), (s2, e2) = spans.values()
    assert max(s1, s2) < min(e1, e2), f"the workers' runs did not overlap: {spans}"


def test_task_tolerance_field_overrides_the_default(pool) -> None:
    """A tolerance written in the YAML loosens the bound; absent, the strict default applies."""
    from verify_fixtures import ROWSUM_YAML

    eps_yaml = ROWSUM_YAML.replace(
        "      return [input[0] * input[0]]",
        "      return [input[0] * input[0] * (1 + 1e-6)]",  # a 1e-6 relative deviation
    )
    assert not pool.verify(load_task(eps_yaml), ROWSUM_REF).passed
    loose = eps_yaml + "tolerance:\n  rtol: 1.0e-5\n"
    v = pool.verify(load_task(loose), ROWSUM_REF)
    assert v.passed, v.feedback


def test_in_process_oracle_executor_agrees(rowsum_task) -> None:
    assert verify_in_process(rowsum_task, ROWSUM_REF, executor="oracle").passed
    bad = verify_in_process(rowsum_task, ROWSUM_REF.replace("fn_sq", "fn_neg"), executor="oracle")
    assert bad.kind == FailureKind.value_mismatch


def test_indented_program_and_tabs_are_accepted(pool, rowsum_task) -> None:
    src = "    E1 = step.Map(fn=fn_sq).apply(X)\n\tE2 = step.Accum(fn=fn_sum, b=1).apply(E1)\n"
    src = src.replace("\t", "    ") + "    return E2\n"
    assert pool.verify(rowsum_task, src).passed


def test_tuple_and_multiple_outputs(pool) -> None:
    from verify_fixtures import PAIR_YAML

    from stepsmith.tasks import load_task

    task = load_task(PAIR_YAML)
    assert pool.verify(task, task.impl).passed
    # second field of the tuple output wrong
    v = pool.verify(task, task.impl.replace("fn=fn_neg", "fn=fn_sq"))
    assert v.kind == FailureKind.value_mismatch and "output 'T' field 1" in v.feedback
    # outputs in the wrong order
    swapped = task.impl.replace(
        "return step.Zip().apply((s1, s2)), step.Map(fn=fn_sq).apply(A2)",
        "return step.Map(fn=fn_sq).apply(A2), step.Zip().apply((s1, s2))",
    )
    w = pool.verify(task, swapped)
    assert w.kind == FailureKind.output_mismatch and "output 'T'" in w.feedback
    assert "it has the type of output 'S': return the outputs in the order 'T', 'S'" in w.feedback
    # one output missing
    one = task.impl.replace(", step.Map(fn=fn_sq).apply(A2)", "")
    u = pool.verify(task, one)
    assert u.kind == FailureKind.output_mismatch
    assert "expected 2 output streams in this order: 'T', 'S'" in u.feedback


def test_a_broken_reference_is_a_task_error_not_a_verdict(pool) -> None:
    """A task whose own code fails is never charged to the program: the verifier raises a
    TaskReferenceError naming the file and line, and the worker keeps serving."""
    from verify_fixtures import ROWSUM_YAML

    from stepsmith.tasks import TaskFormatError, TaskReferenceError, load_task

    with pytest.raises(TaskFormatError):  # malformed text never reaches the verifier
        load_task(ROWSUM_YAML.replace("dims: [N, M]", "dims: [N, M"))
    line = next(i for i, s in enumerate(ROWSUM_YAML.splitlines(), 1) if "input_data" in s)
    text = ROWSUM_YAML.replace("input_data['X']", "input_data['Y']", 1)
    with pytest.raises(TaskReferenceError, match="KeyError") as info:
        pool.verify(load_task(text), ROWSUM_REF)
    assert info.value.line == line and info.value.source == "<text>"
    assert pool.verify(load_task(ROWSUM_YAML), ROWSUM_REF).passed  # the worker survived


def test_hard_kill_when_the_soft_alarm_cannot_fire(rowsum_task) -> None:
    """Simulate a candidate stuck in C code: the parent's deadline comes before the alarm."""
    with VerifierPool(workers=1, timeout_s=1.0, grace_s=-0.9) as p:
        p.warm_up()
        loop = "for i in range(10**12):\n    j = i\nreturn step.Map(fn=fn_sq).apply(X)\n"
        v = p.verify(rowsum_task, loop)
        assert v.kind == FailureKind.timeout and "was killed" in v.feedback
        assert p.respawns == 1
        assert p.verify(rowsum_task, ROWSUM_REF, timeout_s=30).passed


def test_a_starved_worker_is_not_timed_out(rowsum_task) -> None:
    """Limits are CPU time: a worker that gets no CPU for a while (the machine is busy, e.g. a
    local LLM on the same cores) must not turn a correct program into a timeout."""
    import os
    import signal
    import threading

    from stepsmith.verify.pool import cpu_seconds

    busy = "for i in range(4 * 10**6):\n    j = i\n" + ROWSUM_REF  # ~0.2-0.5 s of CPU
    with VerifierPool(workers=1, timeout_s=1.5, grace_s=0.5) as p:
        p.warm_up()
        assert p.verify(rowsum_task, busy).passed  # data cached: the next run starts at once
        pid = p._workers[0].proc.pid
        assert cpu_seconds(pid) is not None and cpu_seconds(os.getpid()) > 0
        out: list = []
        runner = threading.Thread(target=lambda: out.append(p.verify(rowsum_task, busy)))
        runner.start()
        time.sleep(0.05)
        os.kill(pid, signal.SIGSTOP)  # 3 s of wall time with no CPU: twice the whole limit
        time.sleep(3.0)
        os.kill(pid, signal.SIGCONT)
        runner.join(30)
        assert out and out[0].passed, out[0].feedback if out else "no verdict"
        assert p.respawns == 0


def test_unguarded_caller_script_is_not_rerun_by_workers(tmp_path) -> None:
    """Workers must not re-execute the caller's __main__ (no `if __name__` guard needed)."""
    import subprocess
    import sys

    from verify_fixtures import ROWSUM_YAML

    (tmp_path / "task.yaml").write_text(ROWSUM_YAML)
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import pathlib\n"
        "from stepsmith.tasks import load_task\n"
        "from stepsmith.verify import VerifierPool\n"
        "print('script body ran', flush=True)\n"
        "here = pathlib.Path(__file__).parent\n"
        "with VerifierPool(workers=2) as p:\n"
        "    v = p.verify(load_task(here / 'task.yaml'), 'return step.Accum(fn=fn_sum, b=1)"
        ".apply(step.Map(fn=fn_sq).apply(X))')\n"
        "print('passed', v.passed, flush=True)\n"
    )
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("script body ran") == 1
    assert "passed True" in r.stdout


def test_a_fn_used_by_its_name_gets_told_the_func_name(pool, rowsum_task) -> None:
    """Models confuse a fn's `name` (Square) with a primitive or with its func_name (fn_sq)."""
    as_primitive = pool.verify(rowsum_task, "E1 = step.Square().apply(X)\nreturn E1\n")
    assert as_primitive.kind == FailureKind.disallowed
    assert "Square is one of the task's specialized functions" in as_primitive.feedback
    assert "step.Map(fn=fn_sq).apply(stream)" in as_primitive.feedback
    by_name = pool.verify(rowsum_task, "E1 = step.Map(fn=Square).apply(X)\nreturn E1\n")
    assert by_name.kind == FailureKind.runtime_error
    assert "Square is the name of a fn; pass it by its func_name: fn=fn_sq" in by_name.feedback
    unknown = pool.verify(rowsum_task, "E1 = step.Cube().apply(X)\nreturn E1\n")
    assert "is not a STeP primitive (allowed:" in unknown.feedback
    assert "specialized functions" not in unknown.feedback
