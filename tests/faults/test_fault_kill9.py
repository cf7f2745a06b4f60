"""kill -9 of a process that owns a verifier pool leaves no worker behind.

The worker runs a candidate stuck in a C-level loop (`max(range(10**18))`), which never
returns to Python: only a kernel-delivered parent-death signal can stop it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from stepsmith.verify.pool import cpu_seconds

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")

_PARENT = textwrap.dedent(
    """
    import os, sys
    from stepsmith.tasks.suite import get_task
    from stepsmith.verify import VerifierPool

    task = get_task("demo_idiom_placeholder_colsum")
    pool = VerifierPool(workers=1, timeout_s=600, grace_s=600)
    pool.warm_up()
    print(pool._workers[0].proc.pid, flush=True)
    pool.verify(task, "x = max(range(10**18))\\nreturn x")
    print("finished", flush=True)
    """
)


def _gone(pid: int) -> bool:
    """Exited (or a zombie nobody reaped yet: it uses no CPU)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return True
    return stat[stat.rfind(b")") + 2 :].split()[0] in (b"Z", b"X")


def _wait_for(condition, what: str, limit_s: float = 120.0) -> None:  # noqa: ANN001
    """Poll until `condition()`; the limit only turns a hang into a failure with a message."""
    end = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"gave up waiting for: {what}")
        time.sleep(0.1)


def test_kill9_of_the_pool_owner_kills_a_worker_spinning_in_c() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT], stdout=subprocess.PIPE, text=True
    )
    worker: int | None = None
    try:
        line = parent.stdout.readline() if parent.stdout else ""
        assert line.strip().isdigit(), f"parent printed {line!r} instead of the worker pid"
        worker = int(line)
        start = cpu_seconds(worker)
        assert start is not None
        # the worker is inside the candidate's C loop once it has burnt a second of CPU
        _wait_for(
            lambda: (cpu_seconds(worker) or 0.0) > start + 1.0, "the worker to start spinning"
        )
        assert not _gone(worker)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        _wait_for(lambda: _gone(worker), f"worker {worker} to die after its owner's kill -9")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if worker is not None and not _gone(worker):
            os.kill(worker, signal.SIGKILL)  # do not leave our own spinning worker behind
