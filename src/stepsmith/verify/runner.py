"""Check one candidate program against one task, in the current process.

This is what a sandboxed worker runs (see `pool.py`); it is also usable directly, unsandboxed,
for trusted code such as the reference programs and the mutant self-audit. Steps: allow-list,
static affine rule, compile, then for every binding of the task: fresh inputs, run inside a
`step.Session`, check output count/types/shapes, compare values (`tolerance.py`).
"""

from __future__ import annotations

import builtins
import re
import textwrap
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from stepsmith.limits import clip
from stepsmith.step.affine import AffineViolation, check_source
from stepsmith.step.session import AffineMode, Executor
from stepsmith.verify import allowlist
from stepsmith.verify.verdict import BindingResult, FailureKind, Verdict

if TYPE_CHECKING:
    from stepsmith.tasks import Binding, Task
    from stepsmith.tasks.instance import Instance

IMPL_FILENAME = "<stepsmith-impl>"
AFFINE_MODES = ("strict", "warn")


class CandidateTimeout(BaseException):  # noqa: N818 - BaseException so library `except Exception` can't swallow it
    """Raised inside a worker by the soft wall-clock alarm."""


_SAFE_BUILTIN_NAMES = (
    "range len zip enumerate list tuple dict int float bool min max sum abs reversed sorted "
    "round divmod pow any all isinstance slice map filter True False None"
).split()
SAFE_BUILTINS: dict[str, Any] = {n: getattr(builtins, n) for n in _SAFE_BUILTIN_NAMES}
for _exc in ("Exception", "ValueError", "TypeError", "IndexError", "KeyError", "NameError"):
    SAFE_BUILTINS[_exc] = getattr(builtins, _exc)


@dataclass
class Compiled:
    """A candidate compiled into a code object defining `impl(<inputs>)`."""

    code: Any
    body_lines: list[str]
    params: list[str]


def _line_text(lines: list[str], line: int | None) -> str:
    if line is None or not (1 <= line <= len(lines)):
        return ""
    return lines[line - 1].strip()


def _at_line(lines: list[str], line: int | None) -> str:
    text = _line_text(lines, line)
    return f"line {line}: {text}\n" if text else ""


def _with_line(lines: list[str], line: int | None, e: BaseException) -> str:
    """The error text, prefixed with the offending line unless it already names it."""
    msg = str(e)
    if line is not None and msg.startswith(f"line {line}"):
        return msg
    return f"{_at_line(lines, line)}{msg}"


def normalise_source(src: str) -> str:
    """Dedent and untab a program body (LLMs often indent it as inside a def)."""
    src = src.expandtabs(4).replace("\r\n", "\n")
    return textwrap.dedent(src).rstrip() + "\n"


def fn_aliases(task: Task) -> dict[str, str]:
    """The task's fn names -> func_names where they differ (for messages about misused names)."""
    fns = task.spec.fns
    return {f.name: f.func_name for f in fns if f.name and f.func_name and f.name != f.func_name}


def static_checks(src: str, aliases: dict[str, str] | None = None) -> Verdict | None:
    """Allow-list check; returns a failed verdict or None."""
    lines = src.splitlines()
    if not src.strip():
        return Verdict.failure(
            FailureKind.parse_error,
            "The program is empty: write the body of the function, ending with "
            "`return <output stream>`.",
        )
    try:
        allowlist.check_program(src, aliases)
    except allowlist.ProgramSyntaxError as e:
        return Verdict.failure(
            FailureKind.parse_error, f"Syntax error: {_with_line(lines, e.line, e)}", line=e.line
        )
    except allowlist.DisallowedConstruct as e:
        return Verdict.failure(
            FailureKind.disallowed,
            f"Disallowed construct: {_with_line(lines, e.line, e)}",
            line=e.line,
        )
    return None


def compile_candidate(src: str, params: list[str]) -> Compiled | Verdict:
    """Wrap the body as `def impl(<params>):` and compile; a failed verdict on syntax errors."""
    lines = src.splitlines()
    header = f"def impl({', '.join(params)}):\n"
    code_text = header + textwrap.indent(src, "    ", lambda _line: True)
    try:
        code = compile(code_text, IMPL_FILENAME, "exec", dont_inherit=True)
    except SyntaxError as e:
        line = (e.lineno - 1) if e.lineno else None
        return Verdict.failure(
            FailureKind.parse_error,
            f"Syntax error: {_at_line(lines, line)}{e.msg}",
            line=line,
        )
    except (RecursionError, MemoryError, ValueError) as e:  # too deep / NUL bytes: not a crash
        return Verdict.failure(
            FailureKind.parse_error,
            f"The program cannot be compiled ({type(e).__name__}); write it as a sequence of "
            "plain assignments",
        )
    return Compiled(code=code, body_lines=lines, params=params)


def _impl_line(exc: BaseException) -> int | None:
    """Deepest program line (1-based, in the body) in the exception's traceback."""
    line = None
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_filename == IMPL_FILENAME:
            line = lineno - 1
    return line


_MEMORY_MARKERS = (
    "can't allocate memory",
    "cannot allocate memory",
    "out of memory",
    "defaultcpuallocator",
    "bad_alloc",
    "not enough memory",
)


def classify(exc: BaseException) -> FailureKind:
    """Map an exception raised by a candidate to a failure kind."""
    from stepsmith import step

    if isinstance(exc, CandidateTimeout):
        return FailureKind.timeout
    if isinstance(exc, MemoryError):
        return FailureKind.memory
    if isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in _MEMORY_MARKERS):
        return FailureKind.memory
    def cls(*names: str) -> tuple[type, ...]:
        return tuple(c for n in names if isinstance(c := getattr(step, n, None), type))

    if isinstance(exc, cls("StepAffineError")):
        return FailureKind.affine
    if isinstance(exc, cls("StepShapeError", "StepRankError")):
        return FailureKind.shape_error
    if isinstance(exc, cls("StepDtypeError")):
        return FailureKind.dtype_error
    if isinstance(exc, cls("StepRuntimeError")):
        return FailureKind.runtime_error
    if isinstance(exc, cls("StepError")):
        return FailureKind.type_error
    if isinstance(exc, TypeError):
        return FailureKind.type_error
    return FailureKind.runtime_error


def _exc_text(exc: BaseException, namespace: dict[str, Any] | None) -> str:
    name = type(exc).__name__
    msg = clip(exc) or name  # a 61-character program can raise a 200 MB message
    if isinstance(exc, CandidateTimeout):
        return msg
    if isinstance(exc, NameError) and namespace is not None:
        fns = {k: v for k, v in namespace.items() if type(v).__name__ == "Fn"}
        missing = getattr(exc, "name", None)
        by_name = {getattr(v, "name", None): k for k, v in fns.items()}
        if missing in by_name and missing not in fns:
            msg += (f" — {missing} is the name of a fn; pass it by its func_name: "
                    f"fn={by_name[missing]}")
        msg += f" (defined fns: {', '.join(sorted(fns)) or 'none'}; inputs are the function parameters)"
    if isinstance(exc, MemoryError | RuntimeError) and classify_memory(exc):
        m = re.search(r"tried to allocate (\d+) bytes", msg)
        what = f"tried to allocate {int(m.group(1)) / 1e9:.3g} GB" if m else "ran out of memory"
        return (
            f"MemoryError: the program {what}, more than the verifier's memory limit allows; "
            "check Repeat counts and Reshape sizes (a correct program needs only a few MB at "
            "these bindings)"
        )
    return f"{name}: {msg}"


def classify_memory(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or any(m in str(exc).lower() for m in _MEMORY_MARKERS)


def binding_desc(values: dict[str, int], seed: int | None = None) -> str:
    parts = [f"{k}={v}" for k, v in values.items()]
    if seed is not None:
        parts.append(f"seed {seed}")
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------------
# instantiated-task cache (the fast path: repeated candidates don't regenerate data)

_INSTANCES: dict[tuple[str, str, str], Instance] = {}
_MAX_INSTANCES = 512


def get_instance(task: Task, binding: Binding, key: str | None, dtype: torch.dtype) -> Instance:
    """`task.instantiate(binding, dtype=...)`, cached per (task hash, binding, dtype)."""
    if key is None:
        return task.instantiate(binding, dtype=dtype)
    ck = (key, f"{binding.label}|{sorted(binding.values.items())}|{binding.seed}", str(dtype))
    inst = _INSTANCES.get(ck)
    if inst is None:
        inst = task.instantiate(binding, dtype=dtype)
        if len(_INSTANCES) >= _MAX_INSTANCES:
            _INSTANCES.pop(next(iter(_INSTANCES)))
        _INSTANCES[ck] = inst
    return inst


def fresh_inputs(instance: Instance) -> dict[str, Any]:
    """New input `Stream`s (affine state is per stream object) over cloned data."""
    from stepsmith import step

    out = {}
    for name, s in instance.inputs.items():
        data = s.data
        data = tuple(t.clone() for t in data) if isinstance(data, tuple) else data.clone()
        out[name] = step.Stream.input(name, s.dtype, s.shape, data)
    return out


# ---------------------------------------------------------------------------------------------
# output checks


def stream_sig(dtype: Any, shape: Any) -> str:
    """`Strm<Buffer(fp32, [D]), rank 1, [N, M]>`, the notation of the language spec."""
    shape = list(shape)
    return f"Strm<{dtype}, rank {len(shape) - 1}, [{', '.join(str(d) for d in shape)}]>"


def _dim_names(dtype: Any, shape: Any) -> list[str]:
    names = [str(d) for d in reversed(list(shape))]
    bshape = getattr(dtype, "shape", None)
    if bshape is not None:
        names += [str(d) for d in reversed(list(bshape))]
        elem = getattr(dtype, "elem", None)
    else:
        elem = dtype
    n = getattr(elem, "n", None)
    if n is not None and type(elem).__name__ == "Multihot":
        names.append(str(n))
    return names


def _as_output_list(result: Any) -> list[Any] | None:
    from stepsmith import step

    if isinstance(result, step.Stream):
        return [result]
    if isinstance(result, tuple | list):
        return list(result)
    return None


def _describe(x: Any) -> str:
    from stepsmith import step

    if isinstance(x, step.Stream):
        return stream_sig(x.dtype, x.shape)
    if isinstance(x, list | tuple):
        return f"a {type(x).__name__} of {len(x)} items"
    if hasattr(x, "apply") and type(x).__name__ in getattr(step, "REGISTRY", {}):
        return (
            f"the primitive step.{type(x).__name__}(...) itself, not a stream "
            "(call `.apply(...)` on it)"
        )
    article = "an" if type(x).__name__[:1].lower() in "aeiou" else "a"
    return f"{article} {type(x).__name__} ({x!r:.60})"


@dataclass
class OutputCheck:
    """Failure of one binding's outputs (None when they match)."""

    kind: FailureKind
    message: str
    max_abs: float | None = None
    max_rel: float | None = None


def check_outputs(
    result: Any, expected: list[Any], rtol: float, atol: float, where: str
) -> tuple[OutputCheck | None, float | None, float | None]:
    """Compare the program's return value with the expected outputs of one binding."""
    from stepsmith import step
    from stepsmith.verify.hints import value_hint
    from stepsmith.verify.tolerance import compare, fmt_value, format_index

    names = ", ".join(f"'{e.name}'" for e in expected)
    outs = _as_output_list(result)
    if result is None:
        return (
            OutputCheck(
                FailureKind.output_mismatch,
                f"The program returned nothing; it must `return` the output stream(s) {names}.",
            ),
            None,
            None,
        )
    if outs is None or len(outs) != len(expected):
        found = "nothing" if outs is None and result is None else _describe(result)
        want = (
            f"1 output stream ({names})"
            if len(expected) == 1
            else f"{len(expected)} output streams in this order: {names}"
        )
        return (
            OutputCheck(
                FailureKind.output_mismatch,
                f"Wrong number of outputs: expected {want}, found {found}.",
            ),
            None,
            None,
        )
    worst_abs = worst_rel = 0.0
    for pos, (out, exp) in enumerate(zip(outs, expected, strict=True)):
        exp_sig = stream_sig(exp.dtype, exp.shape)
        if not isinstance(out, step.Stream):
            return (
                OutputCheck(
                    FailureKind.output_mismatch,
                    f"output '{exp.name}' (return position {pos}): expected {exp_sig}, "
                    f"found {_describe(out)}.",
                ),
                None,
                None,
            )
        if out.dtype != exp.dtype or tuple(out.shape) != tuple(exp.shape):
            what = []
            if out.dtype != exp.dtype:
                what.append(f"element type {out.dtype} instead of {exp.dtype}")
            if len(out.shape) != len(exp.shape):
                what.append(f"rank {len(out.shape) - 1} instead of {len(exp.shape) - 1}")
            elif tuple(out.shape) != tuple(exp.shape):
                what.append("shape differs (shapes are innermost first)")
            other = next(
                (
                    o.name
                    for o in expected
                    if o is not exp and o.dtype == out.dtype and tuple(o.shape) == tuple(out.shape)
                ),
                None,
            )
            if other is not None:
                what.append(
                    f"it has the type of output '{other}': return the outputs in the order {names}"
                )
            return (
                OutputCheck(
                    FailureKind.output_mismatch,
                    f"output '{exp.name}': expected {exp_sig}, found "
                    f"{stream_sig(out.dtype, out.shape)} ({'; '.join(what)}).",
                ),
                None,
                None,
            )
        found_fields = out.data if isinstance(out.data, tuple) else (out.data,)
        exp_fields = tuple(exp.values)
        fields = list(getattr(exp.dtype, "fields", None) or [exp.dtype])
        if len(found_fields) != len(exp_fields):
            return (
                OutputCheck(
                    FailureKind.output_mismatch,
                    f"output '{exp.name}': expected {len(exp_fields)} tuple field(s), "
                    f"found {len(found_fields)}.",
                ),
                None,
                None,
            )
        for fi, (f, e) in enumerate(zip(found_fields, exp_fields, strict=True)):
            label = f"output '{exp.name}'" + (f" field {fi}" if len(exp_fields) > 1 else "")
            if tuple(f.shape) != tuple(e.shape):
                return (
                    OutputCheck(
                        FailureKind.output_mismatch,
                        f"{label}: data has shape {tuple(f.shape)} but the reference has "
                        f"{tuple(e.shape)} at {where} (type {exp_sig}).",
                    ),
                    None,
                    None,
                )
            c = compare(f, e, rtol=rtol, atol=atol)
            worst_abs = max(worst_abs, c.max_abs_error)
            worst_rel = max(worst_rel, c.max_rel_error)
            if not c.ok:
                dn = _dim_names(fields[fi] if fi < len(fields) else exp.dtype, exp.shape)
                msg = (
                    f"{label} differs from the reference at {where}: {c.n_bad} of {c.n_total} "
                    f"elements are outside the tolerance |found - expected| <= "
                    f"{atol:g} + {rtol:g} * {fmt_value(c.scale)} (max |expected|). "
                    f"Worst element at {format_index(c.index, dn)} (tensor index, outermost "
                    f"first): expected {fmt_value(c.expected_value)}, found "
                    f"{fmt_value(c.found_value)}; max abs error {fmt_value(c.max_abs_error)}, "
                    f"max error relative to max |expected| {fmt_value(c.max_rel_error)}."
                )
                hint = value_hint(f, e, c.bound)
                if hint:
                    msg += " " + hint
                return (
                    OutputCheck(FailureKind.value_mismatch, msg, c.max_abs_error, c.max_rel_error),
                    worst_abs,
                    worst_rel,
                )
    return None, worst_abs, worst_rel


def input_names(task: Task) -> list[str]:
    """The program's parameters: the task's input names, in order."""
    return task.input_names


# ---------------------------------------------------------------------------------------------
# the check


def _affine_static(src: str, params: list[str]) -> list[AffineViolation]:
    try:
        return list(check_source(src, params=params))
    except Exception:  # noqa: BLE001 - the runtime tracking in Session still enforces the rule
        return []


def check_candidate(
    task: Task,
    src: str,
    *,
    affine: AffineMode = "strict",
    executor: Executor = "fast",
    key: str | None = None,
    dtype: torch.dtype = torch.float64,
    bindings: list[Binding] | None = None,
    on_binding: Callable[[BindingResult], None] | None = None,
) -> Verdict:
    """Verify `src` (an `impl` body) against `task`. Never raises for faults of the program."""
    from stepsmith import step

    if affine not in AFFINE_MODES:
        raise ValueError(f"affine must be one of {AFFINE_MODES}, got {affine!r}")
    t0 = time.perf_counter()
    name = task.name
    src = normalise_source(src)

    def done(v: Verdict) -> Verdict:
        v.task = name
        v.seconds = time.perf_counter() - t0
        return v

    failed = static_checks(src, fn_aliases(task))
    if failed is not None:
        return done(failed)
    params = input_names(task)
    lines = src.splitlines()
    warnings: list[str] = []
    violations = _affine_static(src, params)
    if violations:
        msgs = [v.message for v in violations]
        if affine == "strict":
            vlines = violations[0].lines
            line = vlines[1] if len(vlines) > 1 else (vlines[0] if vlines else None)
            return done(
                Verdict.failure(
                    FailureKind.affine,
                    "Affine rule violated (a stream can be consumed by only one primitive):\n"
                    + "\n".join(msgs),
                    line=line,
                )
            )
        warnings.extend(msgs)
    compiled = compile_candidate(src, params)
    if isinstance(compiled, Verdict):
        return done(compiled)

    results: list[BindingResult] = []
    first: tuple[FailureKind, str, int | None] | None = None
    for binding in bindings if bindings is not None else task.bindings():
        values = dict(binding.values)
        where = f"binding '{binding.label}' ({binding_desc(values, binding.seed)})"
        br = BindingResult(label=binding.label, passed=False, values=values, seed=binding.seed)
        tb = time.perf_counter()
        line = None
        namespace: dict[str, Any] | None = None
        try:
            inst = get_instance(task, binding, key, dtype)
        except CandidateTimeout:
            raise
        except Exception as e:  # noqa: BLE001 - the task, not the program, is at fault
            br.kind = FailureKind.runtime_error
            br.error = (
                f"Verifier/task error, not caused by the program: the task data could not be "
                f"generated at {where}: {type(e).__name__}: {e}"
            )
            results.append(br)
            if on_binding is not None:
                on_binding(br)
            first = first or (br.kind, br.error, None)
            break
        try:
            namespace = dict(inst.namespace)
            namespace["__builtins__"] = SAFE_BUILTINS
            exec(compiled.code, namespace)
            with step.Session(binding=values, executor=executor, affine=affine) as sess:
                inputs = fresh_inputs(inst)
                result = namespace["impl"](**inputs)
                tol = inst.tolerance  # the task's fields over its precision's defaults
                bad, max_abs, max_rel = check_outputs(result, inst.expected, tol.rtol, tol.atol,
                                                      where)
                for w in sess.warnings:
                    if str(w) not in warnings:
                        warnings.append(str(w))
            br.max_abs_error, br.max_rel_error = max_abs, max_rel
            if bad is None:
                br.passed = True
            else:
                br.kind, br.error = bad.kind, bad.message
        except CandidateTimeout as e:
            line = _impl_line(e)
            br.kind = FailureKind.timeout
            br.error = f"{e} while running {where}"
        except Exception as e:  # noqa: BLE001 - any fault of the candidate becomes a verdict
            line = _impl_line(e)
            br.kind = classify(e)
            br.error = _exc_text(e, namespace)
        br.seconds = time.perf_counter() - tb
        results.append(br)
        if on_binding is not None:
            on_binding(br)
        if not br.passed and first is None:
            first = (br.kind or FailureKind.runtime_error, br.error or "", line)
        if br.kind in (FailureKind.timeout, FailureKind.memory):
            break  # the remaining bindings would only burn the time/memory budget again

    if not results:
        return done(
            Verdict.failure(
                FailureKind.runtime_error,
                "Verifier/task error, not caused by the program: the task has no bindings to "
                "verify at.",
            )
        )
    passed = first is None and all(r.passed for r in results)
    if passed:
        return done(Verdict(passed=True, bindings=results, warnings=warnings))
    kind, err, line = first or (FailureKind.runtime_error, "unknown failure", None)
    feedback = _feedback(kind, err, line, lines, results)
    return done(
        Verdict.failure(kind, feedback, line=line, bindings=results, warnings=warnings)
    )


_KIND_TITLE = {
    FailureKind.type_error: "Type error",
    FailureKind.shape_error: "Shape error",
    FailureKind.dtype_error: "Element type error",
    FailureKind.affine: "Affine rule violated (a stream consumed twice)",
    FailureKind.runtime_error: "Runtime error",
    FailureKind.timeout: "Timeout",
    FailureKind.memory: "Memory limit exceeded",
    FailureKind.output_mismatch: "Output type/shape mismatch",
    FailureKind.value_mismatch: "Wrong values",
}


def _feedback(
    kind: FailureKind,
    err: str,
    line: int | None,
    lines: list[str],
    results: list[BindingResult],
) -> str:
    """The LLM-facing message: what failed, where in the program, and at which bindings."""
    failing = next((r for r in results if not r.passed), None)
    head = _KIND_TITLE.get(kind, kind.value)
    if failing is not None and kind not in (FailureKind.value_mismatch, FailureKind.timeout):
        head += f" at binding '{failing.label}' ({binding_desc(failing.values)})"
    parts = [head + ":"]
    if line is not None:
        parts.append(_at_line(lines, line).rstrip())
    parts.append(clip(err))
    if len(results) > 1 or any(r.passed for r in results):
        summary = ", ".join(f"{r.label} {'passed' if r.passed else 'FAILED'}" for r in results)
        parts.append(f"Bindings: {summary}.")
    return "\n".join(p for p in parts if p)
