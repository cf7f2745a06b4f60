"""Token and cost budgets with reservations, so concurrent calls can never overshoot a limit.

Before a call the client *reserves* its worst case (estimated input tokens + `max_tokens`
output, priced); after it, the reservation is replaced by the real usage. A call whose worst
case does not fit raises `BudgetExceeded` instead of being sent.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field

from .errors import BudgetExceeded


@dataclass
class Budget:
    """Limits for one run (None = unlimited) and what has been spent so far.

    `spent_*` count real (non-cached) calls; `by_task` splits them per task name. A Budget may
    be shared by several clients of one run (e.g. proposer and guardian).
    """

    max_cost_usd: float | None = None
    max_tokens: int | None = None
    spent_cost_usd: float = 0.0
    spent_tokens: int = 0
    by_task: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(_zero))
    _reserved_cost: float = field(default=0.0, init=False, repr=False)
    _reserved_tokens: int = field(default=0, init=False, repr=False)
    _seeded_runs: set[str] = field(default_factory=set, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False,
                                  compare=False)

    def reserve(self, tokens: int, cost_usd: float) -> None:
        """Hold `tokens`/`cost_usd` for an in-flight call, or raise BudgetExceeded."""
        with self._lock:
            if self.max_tokens is not None:
                used = self.spent_tokens + self._reserved_tokens
                if used + tokens > self.max_tokens:
                    raise BudgetExceeded(
                        f"token budget reached: --max-tokens is {self.max_tokens}, "
                        f"{self.spent_tokens} spent and {self._reserved_tokens} reserved by calls "
                        f"in flight; the next call may need up to {tokens} tokens "
                        "(input estimate + max_tokens). Stopping before sending it.",
                        limit="max_tokens",
                        limit_value=self.max_tokens,
                        spent=self.spent_tokens,
                        needed=tokens,
                    )
            if self.max_cost_usd is not None:
                used_c = self.spent_cost_usd + self._reserved_cost
                if used_c + cost_usd > self.max_cost_usd + 1e-12:
                    raise BudgetExceeded(
                        f"cost budget reached: --max-cost is ${self.max_cost_usd:.4f}, "
                        f"${self.spent_cost_usd:.4f} spent and ${self._reserved_cost:.4f} reserved "
                        f"by calls in flight; the next call may cost up to ${cost_usd:.4f}. "
                        "Stopping before sending it.",
                        limit="max_cost_usd",
                        limit_value=self.max_cost_usd,
                        spent=self.spent_cost_usd,
                        needed=cost_usd,
                    )
            self._reserved_tokens += tokens
            self._reserved_cost += cost_usd

    def release(self, tokens: int, cost_usd: float) -> None:
        with self._lock:
            self._reserved_tokens = max(0, self._reserved_tokens - tokens)
            self._reserved_cost = max(0.0, self._reserved_cost - cost_usd)

    def charge(self, tokens: int, cost_usd: float, task: str = "") -> None:
        """Record real usage of one finished call."""
        with self._lock:
            self.spent_tokens += tokens
            self.spent_cost_usd += cost_usd
            entry = self.by_task[task]
            entry["tokens"] += tokens
            entry["cost_usd"] += cost_usd
            entry["calls"] += 1

    def seed(self, run_id: str, tokens: int, cost_usd: float) -> None:
        """Count what an interrupted earlier part of the same run already spent (once per run)."""
        with self._lock:
            if run_id in self._seeded_runs:
                return
            self._seeded_runs.add(run_id)
            self.spent_tokens += tokens
            self.spent_cost_usd += cost_usd

    def summary(self) -> str:
        cost = f"${self.spent_cost_usd:.4f}"
        if self.max_cost_usd is not None:
            cost += f" of ${self.max_cost_usd:.4f}"
        toks = f"{self.spent_tokens} tokens"
        if self.max_tokens is not None:
            toks += f" of {self.max_tokens}"
        return f"spent {cost}, {toks}"


def _zero() -> dict[str, float]:
    return {"tokens": 0, "cost_usd": 0.0, "calls": 0}
