"""The sandboxed worker process: limits itself, imports torch + stepsmith once, serves jobs.

Protocol over a duplex `multiprocessing` pipe (parent → worker: a `Job` or None to stop;
worker → parent: ("ready", pid) once, then per job ("started", job_id) when the task data is
ready and the candidate's clock starts, ("binding", job_id, BindingResult dict) after each
binding, and either ("done", job_id, Verdict dict) or ("task_error", job_id, error fields)
when the task's own code failed). A soft CPU-time timer (`ITIMER_PROF`: machine load does not
change verdicts) raises `CandidateTimeout` inside the candidate, which gives a verdict with the
offending program line and keeps the worker alive; the parent hard-kills the worker only if
that does not work (a long C call) or the worker dies.

Task files are code: their `global`, reference snippets and fn bodies run here too, never in
the caller's process, under the same CPU-time and memory limits as a candidate (the
preparation before "started" has its own `timeout_s` of CPU). Whatever goes wrong there is a
task error naming the file, never a verdict about the program. The task's fn bodies also run
*while* the program runs: a byte shared with the pool is raised for the length of each call,
so a worker that dies inside one (`os._exit`, a signal) is the task's fault, not the program's.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import sys
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import stepsmith.step.affine  # noqa: F401 - warm the language, loader and static checks once
import stepsmith.verify.allowlist  # noqa: F401
from stepsmith.limits import CpuTimeExceeded, clip
from stepsmith.step.fn import Fn
from stepsmith.step.session import AffineMode, Executor
from stepsmith.tasks import Binding, Instance, Task, TaskFormatError, load_task
from stepsmith.verify.execute import get_instance, task_key
from stepsmith.verify.feedback import CandidateTimeout
from stepsmith.verify.runner import check_candidate
from stepsmith.verify.verdict import BindingResult, FailureKind, Verdict


@dataclass(frozen=True)
class TaskPayload:
    """A task as it crosses the process boundary: its file text (+ path), so the worker's errors
    name the same file and lines; `key` is the sha256 of `text`, the cache key in workers."""

    text: str
    path: str | None
    name: str
    key: str

    @classmethod
    def of(cls, task: Task) -> TaskPayload:
        """The payload of a loaded task (names and paths are resolved by the caller, once)."""
        path = str(task.source_path) if task.source_path else None
        return cls(text=task.text, path=path, name=task.name, key=task_key(task))


_TASKS: dict[str, Task] = {}


def load_payload(payload: TaskPayload) -> Task:
    """The `Task` for a payload, loaded once per process (loading runs none of its code), so
    verifying many candidates for one task costs one load."""
    task = _TASKS.get(payload.key)
    if task is None:
        task = load_task(payload.text, source=payload.path)  # errors name the file
        if payload.path:
            task.source_path = Path(payload.path)  # the group falls back to the file's folder
        _TASKS[payload.key] = task
    return task


@dataclass(frozen=True)
class Job:
    """One candidate to check (`src` None: only prepare the task, i.e. check its references)."""

    job_id: int
    payload: TaskPayload
    src: str | None
    affine: AffineMode
    timeout_s: float
    executor: Executor = "fast"


_PR_SET_PDEATHSIG = 1


def die_with_parent(owner_pid: int | None, *, forkserver_child: bool) -> None:
    """Have the kernel SIGKILL this worker when the pool's owner ends, however it ends.

    A candidate stuck in a C loop (`max(range(10**18))`) holds the GIL and never returns to
    Python, so no thread or pipe check in the worker can notice a dead owner; only a signal the
    kernel delivers works. A forkserver child's parent is the fork server, which exits when the
    owner ends (even by `kill -9`) once no worker holds its "alive" pipe, so the worker closes
    its inherited copy and arms `PR_SET_PDEATHSIG`: owner -> fork server -> worker. (The
    signal follows the parent *thread*; with fork/spawn the parent may be a short-lived pool
    thread, so it is only armed for forkserver children.)
    """
    if forkserver_child:
        _close_forkserver_alive_fd()
    if forkserver_child and sys.platform.startswith("linux"):
        parent = os.getppid()
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(0)
    if owner_pid is not None and not _alive(owner_pid):
        os._exit(0)


def _close_forkserver_alive_fd() -> None:
    """Drop the fork server's keep-alive pipe end that multiprocessing hands every child.

    While any worker holds it the fork server outlives the owner, and so do the workers.
    Workers never start processes of their own, so they do not need it.
    """
    with contextlib.suppress(ImportError, AttributeError, OSError):
        from multiprocessing import forkserver

        server = forkserver._forkserver  # noqa: SLF001 - the only handle on the inherited fd
        fd = getattr(server, "_forkserver_alive_fd", None)
        if fd is not None:
            os.close(fd)
            server._forkserver_alive_fd = None  # type: ignore[attr-defined]  # private stdlib attr


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        pass
    return True


def limit_memory(limit_bytes: int | None) -> None:
    """Cap the address space so a huge allocation fails inside the candidate, not the machine."""
    if not limit_bytes:
        return
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    soft = limit_bytes if hard == resource.RLIM_INFINITY else min(limit_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


_alarm = {"limit": 0.0, "candidate": False}


def _on_alarm(_signum: int, _frame: Any) -> None:
    if not _alarm["candidate"]:  # the task's own code, while its data is prepared
        raise CpuTimeExceeded(f"{_alarm['limit']:g} s of CPU time")
    raise CandidateTimeout(f"The program exceeded the verifier's time limit of "
                           f"{_alarm['limit']:g} s of CPU time (look for a loop or Repeat with "
                           "a huge count)")


def _arm(limit_s: float, *, candidate: bool) -> None:
    _alarm["limit"], _alarm["candidate"] = limit_s, candidate
    signal.setitimer(signal.ITIMER_PROF, max(limit_s, 0.001))


def task_error_fields(exc: BaseException, payload: TaskPayload) -> dict[str, Any]:
    """A fault of the task's own code as picklable fields of a `TaskReferenceError`."""
    if isinstance(exc, TaskFormatError):
        return {"message": exc.detail, "source": exc.source, "line": exc.line, "field": exc.field}
    if isinstance(exc, SystemExit):
        why = (f"the task's own code tried to exit the process (SystemExit({exc.code!r})); "
               "task code must not call exit()")
    elif isinstance(exc, CpuTimeExceeded):
        why = (f"the task's own code (global, data_transform snippets, fn bodies) did not finish "
               f"within the verifier's CPU-time limit of {exc} while preparing the data (an "
               "endless loop?)")
    else:
        why = (f"the task's own code failed while preparing the data: "
               f"{type(exc).__name__}: {clip(exc, 1000)}")
    return {"message": why, "source": payload.path or payload.name, "line": None, "field": None}


#: Set by `worker_main`: the byte the pool reads when this worker dies (1 = in task code).
_task_code: Any = None
_marked: weakref.WeakSet[Fn] = weakref.WeakSet()


def _flagged(body: Callable[..., Any], flag: Any) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        before, flag.value = flag.value, 1
        try:
            return body(*args, **kwargs)
        finally:
            flag.value = before
    return run


def mark_task_fns(instance: Instance, flag: Any) -> None:
    """Raise `flag` while any of the task's fn bodies runs (each fn wrapped once; instances
    are cached, so their fns are shared by every candidate)."""
    for fn in instance.namespace.values():
        if isinstance(fn, Fn) and fn not in _marked:
            fn.body = _flagged(fn.body, flag)
            _marked.add(fn)


def prepare(job: Job) -> tuple[Task, list[Binding]]:
    """Load the task, run its `global` and references at every binding (cached): its own code,
    under the CPU-time alarm, before the candidate's clock starts. Raises on a task fault."""
    task = load_payload(job.payload)
    bindings = task.bindings()
    for binding in bindings:
        instance = get_instance(task, binding, torch.float64)
        if _task_code is not None:
            mark_task_fns(instance, _task_code)
    return task, bindings


def run_job(job: Job, send: Any) -> Verdict | dict[str, Any]:
    """Prepare the task data, then run the candidate under the soft alarm.

    Sends ("started", id) when the candidate's clock starts, and one ("binding", id, result)
    per binding, so the parent's hard deadline excludes data preparation. Returns the verdict,
    or the fields of a task error."""
    _arm(job.timeout_s, candidate=False)
    try:
        try:
            task, bindings = prepare(job)
        except (CandidateTimeout, KeyboardInterrupt):
            raise
        except BaseException as e:  # noqa: BLE001 - SystemExit too: task code must not end us
            return task_error_fields(e, job.payload)
        if job.src is None:  # a references check: say which bindings were prepared
            return Verdict(passed=True, task=task.name, bindings=[
                BindingResult(label=b.label, passed=True, values=dict(b.values), seed=b.seed)
                for b in bindings])
        send(("started", job.job_id))
        _arm(job.timeout_s, candidate=True)
        return check_candidate(
            task, job.src, affine=job.affine, executor=job.executor,
            on_binding=lambda br: send(("binding", job.job_id, br.model_dump(mode="json"))))
    except CandidateTimeout:
        return Verdict.failure(FailureKind.timeout, f"Timeout: the verifier's limit of "
                               f"{job.timeout_s:g} s was exceeded before the program ran (while "
                               "checking the program).", task=job.payload.name)
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)


_WARMUP_YAML = """\
test_name: verifier_warmup
inputs:
  - {name: X, dtype: fp32, dims: [D, M], data_gen: torch.randn}
  - {name: B, dtype: "Buffer(fp32, [D])", dims: [M], data_gen: torch.randn}
fns:
  - {name: Sq, func_name: fn_sq, input_dtype: fp32, output_dtype: fp32, apply: "return [input[0] * input[0]]"}
  - {name: Sum, func_name: fn_sum, init: [0], input_dtype: fp32, output_dtype: fp32, apply: "return [state[0] + input[0]]"}
  - {name: AddB, func_name: fn_addb, init: [zeros], input_dtype: "Buffer(fp32, [D])", output_dtype: "Buffer(fp32, [D])", apply: "return [state[0] + input[0]]"}
outputs:
  - {name: O, dtype: fp32, dims: [M], data_transform: ["(input_data['X'] ** 2).sum(-1)"]}
  - {name: P, dtype: "Buffer(fp32, [D])", dims: [1], data_transform: ["input_data['B'].sum(0, keepdim=True)"]}
impl: |-
  a, b = step.Copy().apply(X)
  s = step.Accum(fn=fn_sum, b=1).apply(step.Map(fn=fn_sq).apply(a))
  p = step.Accum(fn=fn_addb, b=1).apply(step.Promote(b=1).apply(B))
  return s, p
"""


def warm_up() -> None:
    """Pay first-use costs (vmap, allow-list, affine analysis) before serving candidates."""
    with contextlib.suppress(Exception):  # best effort
        task = load_task(_WARMUP_YAML)
        check_candidate(task, task.impl or "")


def worker_main(conn: Any, memory_limit_bytes: int | None, owner_pid: int | None = None,
                forkserver_child: bool = False, task_code: Any = None) -> None:
    """Entry point of a worker process (`owner_pid`: the process that owns the pool;
    `task_code`: a shared byte, raised while the task's fn bodies run)."""
    global _task_code
    _task_code = task_code
    die_with_parent(owner_pid, forkserver_child=forkserver_child)
    torch.set_num_threads(1)
    with contextlib.suppress(RuntimeError):  # already set (inherited from the fork server)
        torch.set_num_interop_threads(1)
    limit_memory(memory_limit_bytes)
    signal.signal(signal.SIGPROF, _on_alarm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    warm_up()
    conn.send(("ready", os.getpid()))
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            return
        if job is None:
            return
        outcome: Verdict | dict[str, Any]
        try:
            outcome = run_job(job, conn.send)
        except CpuTimeExceeded:  # alarm fired outside the candidate (between bindings)
            outcome = Verdict.failure(FailureKind.timeout, f"Timeout: the verifier's limit of "
                                      f"{job.timeout_s:g} s was exceeded.", task=job.payload.name)
        except (TaskFormatError, SystemExit) as e:  # the task's fn code failed while called
            outcome = task_error_fields(e, job.payload)
        except Exception as e:  # noqa: BLE001 - report, never die silently
            outcome = Verdict.failure(FailureKind.runtime_error, "Verifier error, not caused by "
                                      f"the program: {type(e).__name__}: {clip(e)}",
                                      task=job.payload.name)
        if isinstance(outcome, Verdict):
            reply = ("done", job.job_id, outcome.model_dump(mode="json"))
        else:
            reply = ("task_error", job.job_id, outcome)
        try:
            conn.send(reply)
        except (BrokenPipeError, OSError):
            return
