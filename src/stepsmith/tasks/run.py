"""In-process helpers to run a program on a task and compare it with the reference.

These are for tests and quick checks (no sandbox, no timeout); ``stepsmith.verify`` is the real
reward. ``compare_tensor`` applies the same policy as the verifier with the task's tolerance:
``|out_i - ref_i| <= atol + rtol * max(1, max_j |ref_j|)``; non-finite values must match
exactly (same infinities, NaN where the reference has NaN).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .bindings import Binding
from .instance import ExpectedOutput, Instance
from .schema import Tolerance
from .task import Task


def compile_program(task: Task, impl_src: str, namespace: dict[str, Any]) -> Any:
    """Compile ``impl_src`` as the body of ``def impl(<inputs>)`` in a copy of ``namespace``."""
    body = textwrap.indent(impl_src.rstrip() or "pass", "    ")
    src = f"def impl({', '.join(task.input_names)}):\n{body}\n"
    ns = dict(namespace)
    exec(compile(src, "<impl>", "exec"), ns)
    return ns["impl"]


def run_instance(task: Task, impl_src: str, instance: Instance, executor: str = "fast",
                 affine: str = "strict") -> list[Any]:
    """Run the program on a prepared instance (with fresh input streams, so an instance can be
    reused); returns the output streams as a list."""
    from stepsmith import step
    from stepsmith.step.session import is_affine_mode, is_executor

    if not is_executor(executor) or not is_affine_mode(affine):
        raise ValueError(f"unknown executor {executor!r} or affine mode {affine!r}")
    fn = compile_program(task, impl_src, instance.namespace)
    inputs = instance.fresh_inputs()
    with step.Session(binding=dict(instance.binding.values), executor=executor, affine=affine):
        result = fn(*[inputs[n] for n in task.input_names])
    if isinstance(result, tuple | list):
        return list(result)
    return [result]


def run_program(task: Task, impl_src: str, binding: Binding | None = None,
                executor: str = "fast", affine: str = "strict", dtype: torch.dtype = torch.float64) -> list[Any]:
    """Instantiate ``task`` at ``binding`` (default: the paper's) and run ``impl_src`` on it."""
    instance = task.instantiate(binding or task.bindings()[0], dtype=dtype)
    return run_instance(task, impl_src, instance, executor=executor, affine=affine)


def compare_tensor(found: torch.Tensor, ref: torch.Tensor, tol: Tolerance) -> str | None:
    """None if equal within tolerance, else a short description of the worst mismatch.

    Delegates to the verifier's comparison so that reference checks and verdicts agree.
    """
    from stepsmith.verify.tolerance import compare  # lazy: verify imports tasks

    if tuple(found.shape) != tuple(ref.shape):
        return f"data shape {tuple(found.shape)} but expected {tuple(ref.shape)}"
    c = compare(found, ref, rtol=tol.rtol, atol=tol.atol)
    if c.ok:
        return None
    return (f"{c.n_bad} of {c.n_total} values differ; max |error| {c.max_abs_error:.3g} "
            f"(worst at index {c.index}: got {c.found_value:.6g}, expected {c.expected_value:.6g})")


def compare_outputs(outputs: Sequence[Any], expected: Sequence[ExpectedOutput], tol: Tolerance,
                    binding: Binding) -> list[str]:
    """Problems found comparing program outputs (``step.Stream``) with the references."""
    problems: list[str] = []
    if len(outputs) != len(expected):
        return [f"the program returned {len(outputs)} stream(s) but the task has {len(expected)} "
                f"output(s): {', '.join(e.name for e in expected)}"]
    for out, exp in zip(outputs, expected, strict=True):
        where = f"output {exp.name!r} at binding {binding}"
        if not hasattr(out, "dtype") or not hasattr(out, "data"):
            problems.append(f"{where}: expected a stream, found {type(out).__name__}")
            continue
        if out.dtype != exp.dtype:
            problems.append(f"{where}: element type {out.dtype} but expected {exp.dtype}")
            continue
        concrete = tuple(out.concrete_shape())
        if concrete != exp.concrete_shape:
            shape = ", ".join(str(d) for d in exp.shape)
            problems.append(f"{where}: stream shape {list(concrete)} but expected "
                            f"{list(exp.concrete_shape)} ([{shape}])")
            continue
        data = out.data if isinstance(out.data, tuple | list) else (out.data,)
        for j, (got, ref) in enumerate(zip(data, exp.values, strict=True)):
            msg = compare_tensor(got, ref, tol)
            if msg:
                problems.append(f"{where}, field {j}: {msg}")
    return problems


@dataclass
class ReferenceCheck:
    """Result of running a task's reference impl at one binding."""

    binding: Binding
    problems: list[str]

    @property
    def passed(self) -> bool:
        return not self.problems


def check_reference(task: Task, *, executor: str = "fast", dtype: torch.dtype = torch.float64,
                    bindings: Sequence[Binding] | None = None) -> list[ReferenceCheck]:
    """Run the task's own ``impl`` at every binding and compare with its ``data_transform``."""
    if not task.impl:
        raise ValueError(f"task {task.name!r} has no reference impl")
    out = []
    for b in bindings or task.bindings():
        instance = task.instantiate(b, dtype=dtype)
        try:
            outputs = run_instance(task, task.impl, instance, executor=executor)
            problems = compare_outputs(outputs, instance.expected, instance.tolerance, b)
        except Exception as exc:  # report, don't crash: the caller asserts on .passed
            problems = [f"{type(exc).__name__}: {exc}"]
        out.append(ReferenceCheck(b, problems))
    return out
