"""A pool of warm, sandboxed verifier workers.

Untrusted programs never run in the caller's process. Each worker is a `multiprocessing`
process started from a fork server that has already imported torch and stepsmith (so starting
or respawning one costs milliseconds, not a fresh interpreter's seconds). Workers cap their
address space (`RLIMIT_AS`), use one torch thread, and cache loaded tasks and instantiated data.

Limits are CPU time, not wall time, so a verdict does not depend on what else the machine is
doing (an LLM on the same cores): a soft timer (`ITIMER_PROF`) at `timeout_s` of CPU stops a
runaway Python loop inside the candidate (the verdict names the program line); if the worker
is stuck in a long C call it is killed once it has used `timeout_s + grace_s` of CPU (read from
/proc; a starved worker gets more wall time, up to `WALL_CAP` times the limit) and replaced. A
worker that dies (killed by the OS, crash) is reported as `memory` (SIGKILL, the OOM killer's
signal) or `runtime_error`, and replaced; the pool keeps serving.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from stepsmith.step.session import AffineMode, Executor
from stepsmith.tasks import Task, TaskReferenceError
from stepsmith.verify.runner import AFFINE_MODES
from stepsmith.verify.verdict import BindingResult, FailureKind, Verdict
from stepsmith.verify.worker import Job, TaskPayload, worker_main

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MEMORY_MB = 4096
WALL_CAP = 6.0  # a worker that gets no CPU at all is still killed after WALL_CAP x its limit
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process from /proc (None where /proc is unavailable)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()  # after "pid (comm) "; comm may hold spaces
    try:
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime
    except (IndexError, ValueError):
        return None


_PRELOAD = ["stepsmith.verify.worker"]


class _CpuClock:
    """How much CPU a worker has used since a start point, to tell a stuck worker (burning CPU
    in a C call: kill it) from a starved one (waiting for a core: give it more wall time)."""

    def __init__(self, pid: int, wall0: float) -> None:
        self.pid = pid
        self.wall0 = wall0
        self.cpu0 = cpu_seconds(pid)

    def extension(self, limit: float) -> float | None:
        """Wall seconds to keep waiting, or None when the worker has had its CPU (or we cannot
        tell)."""
        now = cpu_seconds(self.pid)
        if self.cpu0 is None or now is None:
            return None
        left = limit - (now - self.cpu0)
        if left <= 0.01 or time.perf_counter() - self.wall0 >= WALL_CAP * max(limit, 0.1):
            return None
        return max(left, 0.05)


class VerifierError(RuntimeError):
    """The pool itself failed (workers cannot start); not a verdict about a program."""


_START_LOCK = threading.Lock()


@contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Keep workers from re-running the caller's `__main__` script.

    `multiprocessing` (spawn/forkserver) re-imports the parent's main module in every child.
    Workers need nothing from it, and re-running it breaks callers whose script has no
    `if __name__ == "__main__":` guard (or is read from stdin). Hide it while starting.
    """
    main = sys.modules.get("__main__")
    with _START_LOCK:
        if main is None:
            yield
            return
        saved: dict[str, Any] = {k: main.__dict__[k] for k in ("__file__", "__spec__")
                                 if k in main.__dict__}
        try:
            main.__dict__.pop("__file__", None)
            main.__spec__ = None
            yield
        finally:
            main.__dict__.update(saved)


class _Worker:
    """One worker process and the parent's end of its pipe."""

    def __init__(self, ctx: Any, memory_limit_bytes: int | None) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.task_code = ctx.RawValue("b", 0)  # 1 while the worker runs the task's fn bodies
        forkserver = ctx.get_start_method() == "forkserver"
        self.proc = ctx.Process(
            target=worker_main, daemon=True, name="stepsmith-verifier",
            args=(child, memory_limit_bytes, os.getpid(), forkserver, self.task_code))
        with _main_module_hidden():
            self.proc.start()
        child.close()
        self.ready = False

    def wait_ready(self, timeout_s: float) -> None:
        if self.ready:
            return
        if not self.conn.poll(timeout_s):
            raise VerifierError(f"verifier worker did not start within {timeout_s:g} s")
        try:
            msg = self.conn.recv()
        except (EOFError, OSError) as e:
            self.proc.join(1)
            raise VerifierError(f"verifier worker exited during start-up (exit code "
                                f"{self.proc.exitcode})") from e
        if not (isinstance(msg, tuple) and msg and msg[0] == "ready"):
            raise VerifierError(f"verifier worker sent {msg!r} instead of 'ready'")
        self.ready = True

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)
        self.conn.close()

    def stop(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self.conn.send(None)
        self.proc.join(2)
        self.kill()


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


class VerifierPool:
    """Warm sandboxed workers. Thread-safe; use as a context manager or call `close()`."""

    def __init__(self, workers: int = 2, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 memory_limit_mb: int | None = DEFAULT_MEMORY_MB, grace_s: float = 2.0,
                 start_timeout_s: float = 180.0, start_method: str = "forkserver") -> None:
        if workers < 1:
            raise ValueError(f"VerifierPool needs at least 1 worker, got {workers}")
        self.n_workers = workers
        self.timeout_s = timeout_s
        self.grace_s = grace_s
        self.start_timeout_s = start_timeout_s
        self._mem = memory_limit_mb * 1024 * 1024 if memory_limit_mb else None
        self._ctx = mp.get_context(start_method)
        if start_method == "forkserver":
            self._ctx.set_forkserver_preload(_PRELOAD)
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._closed = False
        self.respawns = 0
        for _ in range(workers):
            self._idle.put(self._spawn())

    # -- lifecycle --------------------------------------------------------------------------

    def _spawn(self) -> _Worker:
        w = _Worker(self._ctx, self._mem)
        with self._lock:
            self._workers.append(w)
        return w

    def _replace(self, w: _Worker) -> _Worker:
        w.kill()
        with self._lock:
            if w in self._workers:
                self._workers.remove(w)
            self.respawns += 1
        return self._spawn()

    def warm_up(self) -> None:
        """Block until every idle worker is ready (so timings exclude start-up)."""
        ws = []
        while True:
            try:
                ws.append(self._idle.get_nowait())
            except queue.Empty:
                break
        try:
            for w in ws:
                w.wait_ready(self.start_timeout_s)
        finally:
            for w in ws:
                self._idle.put(w)

    def close(self) -> None:
        """Stop all workers (idempotent)."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            ws = list(self._workers)
            self._workers.clear()
        for w in ws:
            w.stop()

    def __enter__(self) -> VerifierPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # best effort; daemon processes die with us anyway
        with contextlib.suppress(Exception):
            self.close()

    # -- verification -----------------------------------------------------------------------

    def verify(self, task: Task, src: str, *, affine: AffineMode = "strict",
               timeout_s: float | None = None, executor: Executor = "fast") -> Verdict:
        """Verify one candidate in a worker; never raises for faults of the program.

        A fault of the task's own code (its `global`, references or fn bodies raise, hang, or
        end the worker) raises `TaskReferenceError` naming the file: it is not the program's."""
        if not isinstance(src, str):
            return Verdict.failure(FailureKind.unparsable, "The program must be a string of "
                                   f"Python code, found {type(src).__name__}.")
        return self._submit(task, src, affine, timeout_s, executor)

    def check_references(self, task: Task, *,
                         timeout_s: float | None = None) -> list[BindingResult]:
        """Run the task's own code (`global`, references, fn probes) at every binding in a
        worker, under the candidates' limits: the bindings it resolved to, or
        `TaskReferenceError` naming the file."""
        return self._submit(task, None, "strict", timeout_s, "fast").bindings

    def _submit(self, task: Task, src: str | None, affine: AffineMode,
                timeout_s: float | None, executor: Executor) -> Verdict:
        if self._closed:
            raise VerifierError("VerifierPool is closed")
        if not isinstance(task, Task):
            raise TypeError(
                f"the verifier takes a loaded Task, not {type(task).__name__}; resolve a name or "
                "path once with stepsmith.tasks.suite.get_task (or load_task for YAML text)")
        if affine not in AFFINE_MODES:
            raise ValueError(f"affine must be one of {AFFINE_MODES}, got {affine!r}")
        timeout = self.timeout_s if timeout_s is None else timeout_s
        job = Job(next(self._ids), TaskPayload.of(task), src, affine, timeout, executor)
        w = self._idle.get()
        try:
            try:
                w.wait_ready(self.start_timeout_s)
            except VerifierError:
                w = self._replace(w)
                w.wait_ready(self.start_timeout_s)
            outcome, healthy = self._run(w, job)
            if not healthy:
                w = self._replace(w)
        finally:
            self._idle.put(w)
        if isinstance(outcome, TaskReferenceError):
            raise outcome
        return outcome

    def verify_many(self, items: Iterable[tuple[Task, str]], *, affine: AffineMode = "strict",
                    timeout_s: float | None = None) -> list[Verdict]:
        """Verify `(task, src)` pairs in parallel across workers; results in input order."""
        items = list(items)
        if not items:
            return []
        with ThreadPoolExecutor(max_workers=min(self.n_workers, len(items))) as ex:
            futs = [ex.submit(self.verify, t, s, affine=affine, timeout_s=timeout_s)
                    for t, s in items]
            return [f.result() for f in futs]

    def _run(self, w: _Worker, job: Job) -> tuple[Verdict | TaskReferenceError, bool]:
        """Send a job and collect its outcome; (verdict or task error, worker still usable)."""
        t0 = time.perf_counter()
        done: list[BindingResult] = []
        started = False
        # until the worker says the candidate's clock started, the task's own code runs: the
        # same CPU-time limit applies to it
        limit = job.timeout_s + self.grace_s
        clock = _CpuClock(w.proc.pid, t0)
        deadline = t0 + limit
        try:
            w.conn.send(job)
            while True:
                remaining = deadline - time.perf_counter()
                if remaining <= 0 or not w.conn.poll(remaining):
                    extra = clock.extension(limit)
                    if extra is not None:
                        deadline = time.perf_counter() + extra
                        continue
                    if not started:
                        return self._task_fault(job, "did not finish within the verifier's "
                                                f"CPU-time limit of {job.timeout_s:g} s while "
                                                "preparing the data and was stopped (an "
                                                "endless loop?)"), False
                    return _hard_timeout(job, done, t0), False
                msg = w.conn.recv()
                if msg[1] != job.job_id:
                    continue
                if msg[0] == "started":
                    started = True
                    clock = _CpuClock(w.proc.pid, time.perf_counter())
                    deadline = time.perf_counter() + limit
                elif msg[0] == "binding":
                    done.append(BindingResult.model_validate(msg[2]))
                elif msg[0] == "task_error":
                    return TaskReferenceError(
                        msg[2]["message"], source=msg[2]["source"] or job.payload.name,
                        line=msg[2]["line"], field=msg[2]["field"]), True
                elif msg[0] == "done":
                    v = Verdict.model_validate(msg[2])
                    v.seconds = time.perf_counter() - t0
                    return v, True
        except (EOFError, OSError, BrokenPipeError):
            w.proc.join(2)
            code = w.proc.exitcode
            if not started or w.task_code.value:  # it died inside the task's own code
                how = (f"killed by {_signal_name(code)}" if code is not None and code < 0
                       else f"exit code {code}")
                where = ("in a fn body called by the program" if started
                         else "while preparing the data")
                return self._task_fault(job, f"ended the verifier's worker process ({how}) "
                                        f"{where}; task code must not exit or kill its "
                                        "process"), False
            return _died(code, job, done, t0), False

    @staticmethod
    def _task_fault(job: Job, what: str) -> TaskReferenceError:
        return TaskReferenceError(f"the task's own code (global, data_transform snippets, fn "
                                  f"bodies) {what}", source=job.payload.path or job.payload.name)


def _hard_timeout(job: Job, done: Sequence[BindingResult], t0: float) -> Verdict:
    ok = ", ".join(f"{b.label} {'passed' if b.passed else 'FAILED'}" for b in done)
    after = f" Bindings finished before the limit: {ok}." if done else ""
    return Verdict.failure(
        FailureKind.timeout,
        f"Timeout: the program did not finish within {job.timeout_s:g} s of CPU time and was "
        f"killed (stuck in a long tensor operation — check Repeat/Reshape sizes and loop "
        f"bounds).{after}",
        task=job.payload.name, bindings=list(done), seconds=time.perf_counter() - t0)


def _died(code: int | None, job: Job, done: Sequence[BindingResult], t0: float) -> Verdict:
    """The verdict on a worker that ended while the program ran (SIGKILL: the OOM killer's)."""
    kind, why = FailureKind.runtime_error, f"exited unexpectedly (code {code})"
    if code is not None and code < 0 and -code == signal.SIGKILL:
        kind, why = FailureKind.memory, ("was killed by the operating system (SIGKILL), most "
                                         "likely because the program used too much memory")
    elif code is not None and code < 0:
        why = f"crashed ({_signal_name(code)})"
    return Verdict.failure(kind, f"The verifier process running the program {why}.",
                           task=job.payload.name, bindings=list(done),
                           seconds=time.perf_counter() - t0)
