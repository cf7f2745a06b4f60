"""The simulator as judge of a program prefix (`--search prefix`).

Under typed decoding every prefix is well typed, and after each line the decoder knows which
streams already have the task's declared output type. Returning one of them is a complete
program; the judge runs it in the sandboxed verifier, and the first that verifies ends the
sample. Small models often write the right stream and then keep writing past it; the judge
costs no model time (a sample that stops early costs less), only verifier runs.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable
from dataclasses import dataclass, field

from stepsmith.agents.extract import Unparsable, extract_impl
from stepsmith.llm.constraint import Constraint
from stepsmith.tasks.task import Task
from stepsmith.verify.verdict import Verdict, Verifier

from .constraint import DEEPEN_BUDGETS, constraint_for
from .nearby import MAX_NEARBY

# none: one attempt; prefix: the judge may end an attempt early; deepen: the judge also checks
# each complete attempt, and a failed one restarts with a larger statement budget
# (`constraint.DEEPEN_BUDGETS`) while the sample's token budget lasts; nearby: deepen, and
# before a restart the judge tries the failed program's one-line neighbours (`nearby.py`).
SEARCH_MODES = ("none", "prefix", "deepen", "nearby")


@dataclass
class PrefixJudge:
    """Verifies whole answers for one task; counts what it did (thread-safe)."""

    task: Task
    verifier: Verifier
    calls: int = 0
    passed: int = 0
    errors: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __call__(self, answer: str) -> bool:
        try:
            impl = extract_impl(answer)
        except Unparsable:
            return False
        try:
            result = self.verifier.verify(self.task, impl)
            # the decoder runs in a worker thread with no event loop of its own
            verdict = asyncio.run(_wait(result)) if inspect.isawaitable(result) else result
        except Exception:  # noqa: BLE001 - a verifier failure is "not verified", never a crash
            with self._lock:
                self.errors += 1
            return False
        ok = bool(verdict.passed)
        with self._lock:
            self.calls += 1
            self.passed += ok
        return ok


async def _wait(result: Awaitable[Verdict]) -> Verdict:
    return await result


def searched_constraint(task: Task, constrain: str, search: str,
                        verifier: Verifier) -> tuple[Constraint | None, PrefixJudge | None]:
    """The constraint a `search` mode decodes `task` under, and its judge (None for "none")."""
    if search not in SEARCH_MODES:
        raise ValueError(f"search must be one of {', '.join(SEARCH_MODES)}; got {search!r}")
    judge = PrefixJudge(task, verifier) if search != "none" else None
    budgets = DEEPEN_BUDGETS if search in ("deepen", "nearby") else ()
    nearby = MAX_NEARBY if search == "nearby" and constrain == "typed" else 0
    return constraint_for(task, constrain, judge, budgets, nearby), judge
