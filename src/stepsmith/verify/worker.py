"""The sandboxed worker process: limits itself, imports torch + stepsmith once, serves jobs.

Protocol over a duplex `multiprocessing` pipe (parent → worker: a `Job` or None to stop;
worker → parent: ("ready", pid), ("binding", job_id, BindingResult dict) after each binding,
("done", job_id, Verdict dict)). A soft `SIGALRM` timeout raises `CandidateTimeout` inside the
candidate, which gives a verdict with the offending program line and keeps the worker alive; the
parent hard-kills the worker only if that does not work (a long C call) or the worker dies.
"""

from __future__ import annotations

import os
import resource
import signal
from dataclasses import dataclass
from typing import Any

import torch  # noqa: F401 - imported once here so every candidate finds it warm

from stepsmith.verify.payload import TaskPayload, load_payload
from stepsmith.verify.runner import CandidateTimeout, check_candidate
from stepsmith.verify.verdict import FailureKind, Verdict

try:  # warm the language and the loader too (written concurrently; tolerate absence)
    import stepsmith.step  # noqa: F401
    import stepsmith.tasks  # noqa: F401
except ImportError:  # pragma: no cover
    pass


@dataclass(frozen=True)
class Job:
    """One candidate to check."""

    job_id: int
    payload: TaskPayload
    src: str
    affine: str
    timeout_s: float
    executor: str = "fast"


def limit_memory(limit_bytes: int | None) -> None:
    """Cap the address space so a huge allocation fails inside the candidate, not the machine."""
    if not limit_bytes:
        return
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    new_hard = hard if hard == resource.RLIM_INFINITY or hard >= limit_bytes else hard
    resource.setrlimit(resource.RLIMIT_AS, (min(limit_bytes, new_hard), new_hard))


_current_limit_s = [0.0]


def _on_alarm(_signum: int, _frame: Any) -> None:
    raise CandidateTimeout(
        f"The program exceeded the verifier's time limit of {_current_limit_s[0]:g} s "
        "(look for a loop or Repeat with a huge count)"
    )


def run_job(job: Job, send: Any) -> Verdict:
    """Run one job under the soft alarm; stream per-binding results through `send`."""
    _current_limit_s[0] = job.timeout_s
    signal.setitimer(signal.ITIMER_REAL, max(job.timeout_s, 0.001))
    try:
        task = load_payload(job.payload)
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
            "program ran (while loading the task data or checking the program).",
            task=job.payload.name,
        )
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def worker_main(conn: Any, memory_limit_bytes: int | None) -> None:
    """Entry point of a worker process."""
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set (inherited from the fork server)
    limit_memory(memory_limit_bytes)
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
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
                f"Verifier error while checking the program: {type(e).__name__}: {e}",
                task=job.payload.name,
            )
        try:
            conn.send(("done", job.job_id, verdict.model_dump(mode="json")))
        except (BrokenPipeError, OSError):
            return
