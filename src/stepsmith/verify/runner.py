"""Check one candidate program against one task, in the current process: the verdict.

This is what a sandboxed worker runs (see `pool.py`); `verify_in_process` calls it directly
for trusted programs. Three parts, three modules: running the program (`execute.py`, the one
executor), comparing its outputs (`checking.py`) and the words the model reads
(`feedback.py`). This module only sequences them: allow-list, static affine rule, compile,
then for every binding of the task: run, check, and stop at the first timeout or memory fault.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import CodeType

import torch

from stepsmith.step.affine import check_source
from stepsmith.step.session import AffineMode, Executor
from stepsmith.tasks import Binding, Task
from stepsmith.verify.checking import check_outputs
from stepsmith.verify.execute import (
    compile_candidate,
    fn_aliases,
    impl_line,
    normalise_source,
    run_compiled,
    static_checks,
)
from stepsmith.verify.feedback import (
    KIND_TITLE,
    CandidateTimeout,
    binding_desc,
    classify,
    exc_text,
    feedback,
)
from stepsmith.verify.verdict import BindingResult, FailureKind, Verdict

AFFINE_MODES = ("strict", "warn")


def _run_binding(task: Task, compiled: CodeType, binding: Binding, *, executor: Executor,
                 affine: AffineMode, dtype: torch.dtype,
                 warnings: list[str]) -> tuple[BindingResult, int | None]:
    """Run (the one executor) and check at one binding: (its result, the program line of a
    failure). A broken reference raises: it is not the program's fault."""
    values = dict(binding.values)
    where = f"binding '{binding.label}' ({binding_desc(values, binding.seed)})"
    br = BindingResult(label=binding.label, passed=False, values=values, seed=binding.seed)
    tb = time.perf_counter()
    line = None
    try:
        run = run_compiled(task, compiled, binding, executor=executor, affine=affine, dtype=dtype)
        if run.error is not None or run.instance is None:
            line = run.line
            br.kind = classify(run.error) if run.error else FailureKind.runtime_error
            br.error = exc_text(run.error, run.namespace) if run.error else "no instance"
        else:
            tol = run.instance.tolerance  # the task's fields over its precision's defaults
            bad, br.max_abs_error, br.max_rel_error = check_outputs(
                run.result, run.instance.expected, tol.rtol, tol.atol, where)
            warnings.extend(w for w in run.warnings if w not in warnings)
            if bad is None:
                br.passed = True
            else:
                br.kind, br.error = bad.kind, bad.message
    except CandidateTimeout as e:
        line = impl_line(e)
        br.kind = FailureKind.timeout
        br.error = f"{e} while running {where}"
    br.seconds = time.perf_counter() - tb
    return br, line


def check_candidate(task: Task, src: str, *, affine: AffineMode = "strict",
                    executor: Executor = "fast", dtype: torch.dtype = torch.float64,
                    bindings: list[Binding] | None = None,
                    on_binding: Callable[[BindingResult], None] | None = None) -> Verdict:
    """Verify `src` (an `impl` body) against `task`. Never raises for faults of the program;
    a fault of the task's own code raises `TaskReferenceError` (it is not the program's)."""
    if affine not in AFFINE_MODES:
        raise ValueError(f"affine must be one of {AFFINE_MODES}, got {affine!r}")
    t0 = time.perf_counter()
    src = normalise_source(src)

    def done(v: Verdict) -> Verdict:
        v.task = task.name
        v.seconds = time.perf_counter() - t0
        return v

    failed = static_checks(src, fn_aliases(task))
    if failed is not None:
        return done(failed)
    params = task.input_names
    lines = src.splitlines()
    warnings: list[str] = []
    try:
        violations = list(check_source(src, params=params))
    except Exception:  # noqa: BLE001 - the runtime tracking in Session still enforces the rule
        violations = []
    if violations:
        msgs = [v.message for v in violations]
        if affine == "strict":
            vlines = violations[0].lines
            line = vlines[1] if len(vlines) > 1 else (vlines[0] if vlines else None)
            text = f"{KIND_TITLE[FailureKind.affine]}:\n" + "\n".join(msgs)
            return done(Verdict.failure(FailureKind.affine, text, line=line))
        warnings.extend(msgs)
    compiled = compile_candidate(src, params)
    if isinstance(compiled, Verdict):
        return done(compiled)

    results: list[BindingResult] = []
    first: tuple[FailureKind, str, int | None] | None = None
    for binding in bindings if bindings is not None else task.bindings():
        br, line = _run_binding(task, compiled, binding, executor=executor, affine=affine,
                                dtype=dtype, warnings=warnings)
        results.append(br)
        if on_binding is not None:
            on_binding(br)
        if not br.passed and first is None:
            first = (br.kind or FailureKind.runtime_error, br.error or "", line)
        if br.kind in (FailureKind.timeout, FailureKind.memory):
            break  # the remaining bindings would only burn the time/memory budget again

    if not results:
        raise ValueError(f"task {task.name!r} has no bindings to verify at")
    if first is None:
        return done(Verdict(passed=True, bindings=results, warnings=warnings))
    kind, err, line = first
    return done(Verdict.failure(kind, feedback(kind, err, line, lines, results), line=line,
                                bindings=results, warnings=warnings))
