"""The sandboxed worker process: limits itself, imports torch + stepsmith once, serves jobs.

Protocol over a duplex `multiprocessing` pipe (parent → worker: a `Job` or None to stop;
worker → parent: ("ready", pid) once, then per job ("started", job_id) when the task data is
ready and the candidate's clock starts, ("binding", job_id, BindingResult dict) after each
binding, ("done", job_id, Verdict dict)). A soft CPU-time timer (`ITIMER_PROF`: machine load
does not change verdicts) raises `CandidateTimeout` inside the candidate, which gives a verdict with the offending program line and keeps the worker alive; the
parent hard-kills the worker only if that does not work (a long C call) or the worker dies.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import sys
from dataclasses import dataclass
from typing import Any

import torch  # noqa: F401 - imported once here so every candidate finds it warm

from stepsmith.step.session import AffineMode, Executor
from stepsmith.verify.payload import TaskPayload, load_payload
from stepsmith.verify.runner import CandidateTimeout, check_candidate, get_instance
from stepsmith.verify.verdict import FailureKind, Verdict

try:  # warm the language, loader and static checks too (imported once in the fork server)
    import stepsmith.step  # noqa: F401
    import stepsmith.step.affine  # noqa: F401
    import stepsmith.tasks  # noqa: F401
    import stepsmith.verify.allowlist  # noqa: F401
except ImportError:  # pragma: no cover
    pass


PREPARE_LIMIT_S = 120.0  # loading + instantiating a task (not the candidate's time)


@dataclass(frozen=True)
class Job:
    """One candidate to check."""

    job_id: int
    payload: TaskPayload
    src: str
    affine: AffineMode
    timeout_s: float
    executor: Executor = "fast"


_PR_SET_PDEATHSIG = 1


def die_with_parent(owner_pid: int | None, *, forkserver_child: bool) -> bool:
    """Have the kernel SIGKILL this worker when the pool's owner ends, however it ends.

    A candidate stuck in a C loop (`max(range(10**18))`) holds the GIL and never returns to
    Python, so no thread or pipe check in the worker can notice a dead owner; only a signal the
    kernel delivers works. A forkserver child's parent is the fork server, which exits when the
    owner ends (even by `kill -9`) once no worker holds its "alive" pipe, so the worker closes
    its inherited copy and arms `PR_SET_PDEATHSIG`: owner -> fork server -> worker. (The
    signal follows the parent *thread*; with fork/spawn the parent may be a short-lived pool
    thread, so it is only armed for forkserver children.) Returns whether it is armed.
    """
    armed = False
    if forkserver_child:
        _close_forkserver_alive_fd()
    if forkserver_child and sys.platform.startswith("linux"):
        parent = os.getppid()
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(0)
    if owner_pid is not None and not _alive(owner_pid):
        os._exit(0)
    return armed


def _close_forkserver_alive_fd() -> None:
    """Drop the fork server's keep-alive pipe end that multiprocessing hands every child.

    While any worker holds it the fork server outlives the owner, and so do the workers.
    Workers never start processes of their own, so they do not need it.
    """
    try:
        from multiprocessing import forkserver

        server = forkserver._forkserver  # noqa: SLF001 - the only handle on the inherited fd
        fd = getattr(server, "_forkserver_alive_fd", None)
        if fd is not None:
            os.close(fd)
            server._forkserver_alive_fd = None  # type: ignore[attr-defined]  # private stdlib attr
    except (ImportError, AttributeError, OSError):
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def limit_memory(limit_bytes: int | None) -> None:
    """Cap the address space so a huge allocation fails inside the candidate, not the machine."""
    if not limit_bytes:
        return
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    soft = limit_bytes if hard == resource.RLIM_INFINITY else min(limit_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


_current_limit_s = [0.0]


def _on_alarm(_signum: int, _frame: Any) -> None:
    raise CandidateTimeout(
        f"The program exceeded the verifier's time limit of {_current_limit_s[0]:g} s of CPU time "
        "(look for a loop or Repeat with a huge count)"
    )


def _prefetch(job: Job) -> Any:
    """Load the task and instantiate every binding (cached) before the candidate's clock runs."""
    task = load_payload(job.payload)
    for binding in task.bindings():
        try:
            get_instance(task, binding, job.payload.key, torch.float64)
        except Exception:  # noqa: BLE001 - check_candidate reports it per binding
            break
    return task


def run_job(job: Job, send: Any) -> Verdict:
    """Prepare the task data, then run the candidate under the soft alarm.

    Sends ("started", id) when the candidate's clock starts, and one ("binding", id, result)
    per binding, so the parent's hard deadline excludes data preparation.
    """
    _current_limit_s[0] = PREPARE_LIMIT_S
    signal.setitimer(signal.ITIMER_PROF, PREPARE_LIMIT_S)
    try:
        try:
            task = _prefetch(job)
        except CandidateTimeout:
            return Verdict.failure(
                FailureKind.timeout,
                f"Verifier/task error, not caused by the program: preparing the task data took "
                f"more than {PREPARE_LIMIT_S:g} s.",
                task=job.payload.name,
            )
        send(("started", job.job_id))
        _current_limit_s[0] = job.timeout_s
        signal.setitimer(signal.ITIMER_PROF, max(job.timeout_s, 0.001))
        return check_candidate(
            task,
            job.src,
            affine=job.affine,
            executor=job.executor,
            key=job.payload.key,
            on_binding=lambda br: send(("binding", job.job_id, br.model_dump(mode="json"))),
        )
    except CandidateTimeout:
        return Verdict.failure(
            FailureKind.timeout,
            f"Timeout: the verifier's limit of {job.timeout_s:g} s was exceeded before the "
            "program ran (while checking the program).",
            task=job.payload.name,
        )
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
    try:
        from stepsmith.tasks import load_task

        task = load_task(_WARMUP_YAML)
        check_candidate(task, task.impl or "")
    except Exception:  # noqa: BLE001 - warm-up is best effort
        pass


def worker_main(
    conn: Any,
    memory_limit_bytes: int | None,
    owner_pid: int | None = None,
    forkserver_child: bool = False,
) -> None:
    """Entry point of a worker process (`owner_pid`: the process that owns the pool)."""
    die_with_parent(owner_pid, forkserver_child=forkserver_child)
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set (inherited from the fork server)
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
        try:
            verdict = run_job(job, conn.send)
        except CandidateTimeout:  # alarm fired outside the candidate (between bindings)
            verdict = Verdict.failure(
                FailureKind.timeout,
                f"Timeout: the verifier's limit of {job.timeout_s:g} s was exceeded.",
                task=job.payload.name,
            )
        except Exception as e:  # noqa: BLE001 - report, never die silently
            verdict = Verdict.failure(
                FailureKind.runtime_error,
                f"Verifier/task error, not caused by the program: {type(e).__name__}: {e}",
                task=job.payload.name,
            )
        try:
            conn.send(("done", job.job_id, verdict.model_dump(mode="json")))
        except (BrokenPipeError, OSError):
            return
