"""The one executor of STeP programs against a task: used by the verifier (in its sandboxed
workers), `tasks check` (through the verifier), the mutant self-audit and the tests.

`run_program(task, source, binding)` = static checks (allow-list) → compile as
`def impl(<task inputs>):` → instantiate the task at the binding (cached) → call with fresh
input streams inside a `step.Session`. Compiling and calling are the language's own core
(`stepsmith.step.program`, which the examples and docs use too); this module adds the
allow-list, the task's instance, the restricted builtins and the wording of failures. It never
raises for faults of the program: they come back in `ProgramRun.error`. Faults of the task's
own code (a broken reference) do raise (`TaskReferenceError`): they are not the program's to
answer for. Unsandboxed: in this process only trusted code runs here directly; untrusted
programs reach it inside a worker (`pool.py`).
"""

from __future__ import annotations

import builtins
import hashlib
import textwrap
from dataclasses import dataclass, field
from types import CodeType
from typing import Any

import torch

from stepsmith.step.program import IMPL_FILENAME, call_impl, compile_body, define_impl
from stepsmith.step.session import AffineMode, Executor
from stepsmith.tasks import Binding, Instance, Task
from stepsmith.tasks.snippets import error_line
from stepsmith.verify import allowlist
from stepsmith.verify.feedback import at_line, with_line
from stepsmith.verify.verdict import FailureKind, Verdict

SAFE_BUILTINS: dict[str, Any] = {n: getattr(builtins, n) for n in (
    "range len zip enumerate list tuple dict int float bool min max sum abs reversed sorted "
    "round divmod pow any all isinstance slice map filter True False None "
    "Exception ValueError TypeError IndexError KeyError NameError"
).split()}


def normalise_source(src: str) -> str:
    """Dedent and untab a program body (LLMs often indent it as inside a def)."""
    src = src.expandtabs(4).replace("\r\n", "\n")
    return textwrap.dedent(src).rstrip() + "\n"


def fn_aliases(task: Task) -> dict[str, str]:
    """The task's fn names -> func_names where they differ (for messages about misused names)."""
    return {f.name: f.func_name for f in task.spec.fns
            if f.name and f.func_name and f.name != f.func_name}


def static_checks(src: str, aliases: dict[str, str] | None = None) -> Verdict | None:
    """Allow-list check; returns a failed verdict or None."""
    if not src.strip():
        return Verdict.failure(FailureKind.parse_error, "The program is empty: write the body "
                               "of the function, ending with `return <output stream>`.")
    try:
        allowlist.check_program(src, aliases)
    except allowlist.ProgramCheckError as e:
        syntax = isinstance(e, allowlist.ProgramSyntaxError)
        kind = FailureKind.parse_error if syntax else FailureKind.disallowed
        title = "Syntax error" if syntax else "Disallowed construct"
        return Verdict.failure(kind, f"{title}: {with_line(src.splitlines(), e.line, e)}",
                               line=e.line)
    return None


def compile_candidate(src: str, params: list[str]) -> CodeType | Verdict:
    """Wrap the body as `def impl(<params>):` and compile; a failed verdict on syntax errors."""
    try:
        return compile_body(src, params)
    except SyntaxError as e:
        line = (e.lineno - 1) if e.lineno else None
        return Verdict.failure(FailureKind.parse_error,
                               f"Syntax error: {at_line(src.splitlines(), line)}{e.msg}", line=line)
    except (RecursionError, MemoryError, ValueError) as e:  # too deep / NUL bytes: not a crash
        return Verdict.failure(FailureKind.parse_error, f"The program cannot be compiled "
                               f"({type(e).__name__}); write it as a sequence of plain assignments")


def impl_line(exc: BaseException) -> int | None:
    """Deepest program line (1-based, in the body) in the exception's traceback."""
    line = error_line(exc, IMPL_FILENAME)
    return None if line is None else line - 1  # code line 1 is `def impl(...)`


# ---------------------------------------------------------------------------------------------
# instantiated-task cache (the fast path: repeated candidates don't regenerate data)

_INSTANCES: dict[tuple[str, str, str], Instance] = {}
_MAX_INSTANCES = 512


def task_key(task: Task) -> str:
    """Content hash of a task file: the cache key of its instances, in any process."""
    return hashlib.sha256(task.text.encode("utf-8")).hexdigest()


def get_instance(task: Task, binding: Binding, dtype: torch.dtype = torch.float64) -> Instance:
    """`task.instantiate(binding, dtype=...)`, cached per (task content, binding, dtype)."""
    ck = (task_key(task), f"{binding.label}|{sorted(binding.values.items())}|{binding.seed}",
          str(dtype))
    inst = _INSTANCES.get(ck)
    if inst is None:
        inst = task.instantiate(binding, dtype=dtype)
        if len(_INSTANCES) >= _MAX_INSTANCES:
            _INSTANCES.pop(next(iter(_INSTANCES)))
        _INSTANCES[ck] = inst
    return inst


def call_compiled(compiled: CodeType, instance: Instance, *, executor: Executor = "fast",
                  affine: AffineMode = "strict",
                  namespace: dict[str, Any] | None = None) -> tuple[Any, list[str]]:
    """Run a compiled program on fresh inputs of `instance`: (its return value, affine warnings).

    Raises whatever the program raises. `namespace`, when given, is filled in place (the
    caller words a `NameError` with the fns it defines)."""
    ns = namespace if namespace is not None else {}
    ns.update(instance.namespace)
    ns["__builtins__"] = SAFE_BUILTINS
    impl = define_impl(compiled, ns)
    return call_impl(impl, instance.fresh_inputs, binding=instance.binding.values,
                     executor=executor, affine=affine)


class ProgramRejected(Exception):  # noqa: N818 - a verdict, carried as an exception value
    """The program did not pass the static checks or did not compile (see `verdict`)."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.feedback)
        self.verdict = verdict


@dataclass
class ProgramRun:
    """One program run at one binding: its outputs, or the error it raised (never both)."""

    binding: Binding
    instance: Instance | None
    result: Any = None
    error: BaseException | None = None
    line: int | None = None  # program line of the error, 1-based in the body
    warnings: list[str] = field(default_factory=list)
    namespace: dict[str, Any] = field(default_factory=dict, repr=False)  # the program's globals

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def outputs(self) -> list[Any]:
        """The return value as a list (one entry for a single stream)."""
        if isinstance(self.result, tuple | list):
            return list(self.result)
        return [self.result]


def run_compiled(task: Task, compiled: CodeType, binding: Binding, *,
                 executor: Executor = "fast", affine: AffineMode = "strict",
                 dtype: torch.dtype = torch.float64) -> ProgramRun:
    """Run an already checked and compiled program at one binding (the verifier checks and
    compiles once, then runs every binding through here). The CPU-time alarm
    (`CandidateTimeout`) and task faults (`TaskReferenceError`) propagate."""
    instance = get_instance(task, binding, dtype)
    ns: dict[str, Any] = {}
    try:
        result, warnings = call_compiled(compiled, instance, executor=executor, affine=affine,
                                         namespace=ns)
    except Exception as e:  # noqa: BLE001 - any fault of the program is a result
        return ProgramRun(binding, instance, error=e, line=impl_line(e), namespace=ns)
    return ProgramRun(binding, instance, result=result, warnings=warnings, namespace=ns)


def run_program(task: Task, source: str, binding: Binding | None = None, *,
                executor: Executor = "fast", affine: AffineMode = "strict",
                dtype: torch.dtype = torch.float64) -> ProgramRun:
    """Run `source` (an `impl` body) on `task` at `binding` (default: the paper's), in process.

    Faults of the program are returned (`ProgramRun.error`, a `ProgramRejected` for static
    failures); faults of the task's own code raise `TaskReferenceError`."""
    b = binding or task.bindings()[0]
    src = normalise_source(source)
    compiled = static_checks(src, fn_aliases(task)) or compile_candidate(src, task.input_names)
    if isinstance(compiled, Verdict):
        return ProgramRun(b, None, error=ProgramRejected(compiled), line=compiled.line)
    return run_compiled(task, compiled, b, executor=executor, affine=affine, dtype=dtype)
