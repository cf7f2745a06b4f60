"""``stepsmith bench --estimate``: calls, tokens and cost of a run before any paid call.

The prompts are composed exactly as the run would compose them (same composer, same imported
demonstrations); token counts err high (``prompt_tokens_upper``). Output is priced at
``max_tokens`` per call (the worst case) and, when the call log knows this model, at its average
answer length. Provider prompt caching is shown separately: the system reference is identical
across calls, so after the first call it is a cache read where the provider prices one.
Self-improvement iterations after the first pass sample only unsolved tasks, with longer prompts
(the demonstrations); their number is not known in advance, so the estimate gives the cost of
one further iteration at most and asks for ``--max-cost`` to bound the total.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from stepsmith.agents.guardian import LLM_GUARDIAN_MODES
from stepsmith.demos import DemoRecord
from stepsmith.evaluate.runner import BenchConfig
from stepsmith.llm.prices import Price

if TYPE_CHECKING:
    from stepsmith.tasks.task import Task

DEMO_TOKENS = 500  # a demonstration (task IR + program) in the prompt, as in the paper
FEEDBACK_TOKENS = 400  # verifier feedback in a repair turn


@dataclass
class CallLine:
    """One kind of call in the first pass: how many, and their tokens in total."""

    what: str
    calls: int
    input_tokens: int
    output_tokens_max: int
    system_tokens: int  # the part of each prompt that is the same for every call (cacheable)


@dataclass
class BenchEstimate:
    model: str
    method: str
    tasks: int
    lines: list[CallLine]
    price: Price | None  # None: no known price for the model
    avg_output_tokens: float | None  # this model's average answer length in the call log
    history_calls: int
    demo_count: int
    notes: list[str] = field(default_factory=list)
    call_seconds: float | None = None  # median seconds per call of this model in the call log

    @property
    def calls(self) -> int:
        return sum(x.calls for x in self.lines)

    @property
    def input_tokens(self) -> int:
        return sum(x.input_tokens for x in self.lines)

    @property
    def output_tokens_max(self) -> int:
        return sum(x.output_tokens_max for x in self.lines)

    def expected_output_tokens(self) -> int | None:
        if self.avg_output_tokens is None:
            return None
        return round(self.avg_output_tokens * self.calls)

    def cost(self, *, output_tokens: int, provider_cache: bool) -> float | None:
        """USD for the first pass, or None when the model has no known price."""
        if self.price is None:
            return None
        read = write = 0
        if provider_cache:
            for line in self.lines:
                if line.calls:
                    write += line.system_tokens
                    read += line.system_tokens * (line.calls - 1)
        return self.price.cost(self.input_tokens, output_tokens, read, write)


def estimate_bench(cfg: BenchConfig, tasks: Sequence[Task], demos: Sequence[DemoRecord] = (),
                   history: tuple[int, float | None] = (0, None)) -> BenchEstimate:
    """Count the first pass of `cfg` over `tasks` (`demos`: an imported library)."""
    from stepsmith.agents.guardian import guardian_messages
    from stepsmith.agents.prompts import compose_messages
    from stepsmith.demos import visible_demos
    from stepsmith.llm import price_for
    from stepsmith.llm.base import prompt_tokens_upper

    per_task = cfg.n * len(cfg.temperatures)
    with_ir = cfg.method != "single-no-ir"
    proposer = CallLine("proposer", 0, 0, 0, 0)
    guardian = CallLine("guardian (LLM)", 0, 0, 0, 0)
    repair = CallLine(f"repair turns (at most {cfg.repair} per failed sample)", 0, 0, 0, 0)
    llm_guardian = cfg.method in ("agent", "self-improve") and cfg.guardian in LLM_GUARDIAN_MODES
    for task in tasks:
        messages = compose_messages(
            task, visible_demos(task, list(demos)), with_ir=with_ir, reference=cfg.reference,
            sibling=cfg.sibling
        )
        prompt = prompt_tokens_upper(messages)
        proposer.calls += per_task
        proposer.input_tokens += prompt * per_task
        proposer.output_tokens_max += cfg.max_tokens * per_task
        proposer.system_tokens = prompt_tokens_upper(messages[:1])
        if llm_guardian:
            g = guardian_messages(task.impl or "", task.input_names)
            guardian.calls += per_task
            guardian.input_tokens += prompt_tokens_upper(g) * per_task
            guardian.output_tokens_max += cfg.max_tokens * per_task
            guardian.system_tokens = prompt_tokens_upper(g[:1])
        if cfg.repair:
            turns = per_task * cfg.repair
            repair.calls += turns
            repair.input_tokens += (prompt + cfg.max_tokens + FEEDBACK_TOKENS) * turns
            repair.output_tokens_max += cfg.max_tokens * turns
            repair.system_tokens = proposer.system_tokens
    lines = [x for x in (proposer, guardian, repair) if x.calls]
    est = BenchEstimate(cfg.model, cfg.method, len(tasks), lines, price_for(cfg.model),
                        history[1], history[0], len(demos))
    if cfg.method == "self-improve":
        extra = per_task * len(tasks) * DEMO_TOKENS
        est.notes.append(
            "self-improve: each further iteration resamples only the unsolved tasks; one iteration "
            f"costs at most the first pass plus ~{extra:,} input tokens per demonstration shown"
            + (f" (at most {cfg.max_iterations} iterations)." if cfg.max_iterations
               else "; bound the total with --max-cost or --max-iterations.")
        )
    if cfg.cache_mode != "refresh":
        est.notes.append("Calls already in the local call cache (a resumed or repeated run) are free.")
    return est


def history_for(db_path: str | Path | None, model: str) -> tuple[int, float | None]:
    """(answered calls, average output tokens) of this model in the call log."""
    from stepsmith.llm import CallStore

    store = CallStore(db_path)
    try:
        return store.answer_lengths(model)
    finally:
        store.close()


def seconds_for(db_path: str | Path | None, model: str) -> float | None:
    """Median seconds per answered call of this model in the call log."""
    from stepsmith.llm import CallStore

    store = CallStore(db_path)
    try:
        return store.call_seconds(model)
    finally:
        store.close()


def render_estimate(est: BenchEstimate) -> list[str]:
    """Plain lines for the terminal (the CLI prints them; tests read them)."""
    out = [f"estimate for {est.method} on {est.model}: {est.tasks} tasks, first pass "
           f"{est.calls:,} calls" + (f", {est.demo_count} imported demonstrations" if est.demo_count else "")]
    for x in est.lines:
        out.append(f"  {x.what}: {x.calls:,} calls, ~{x.input_tokens:,} input tokens, "
                   f"<= {x.output_tokens_max:,} output tokens")
    expected_out = est.expected_output_tokens()
    if est.price is None:
        out.append("  cost: unknown — no price for this model (add one under [prices] in config.toml)")
    elif est.price.input_per_m == 0 and est.price.output_per_m == 0:
        out.append("  cost: none (a local model); the time is the cost — see `stepsmith models bench`")
    else:
        worst = est.cost(output_tokens=est.output_tokens_max, provider_cache=False)
        cached = est.cost(output_tokens=est.output_tokens_max, provider_cache=True)
        out.append(f"  cost at most ${worst:,.2f} (every answer at max tokens); "
                   f"with provider prompt caching ${cached:,.2f}")
        if expected_out is not None:
            typical = est.cost(output_tokens=expected_out, provider_cache=True)
            out.append(f"  expected ~${typical:,.2f} (answers of ~{est.avg_output_tokens:,.0f} tokens, the "
                       f"average of this model's {est.history_calls:,} logged calls; with caching)")
    if est.call_seconds is not None:
        total = est.call_seconds * est.calls
        out.append(f"  time: ~{total / 60:,.0f} min ({est.call_seconds:.1f} s per call, the median "
                   "of this model's logged calls on this machine)")
    elif est.model.startswith("llamacpp:"):
        out.append("  time: unknown until this model has answered here once (`stepsmith models "
                   "bench` measures its speed; a 1.5B model takes tens of seconds per answer on "
                   "2 cores)")
    out.extend(f"  {note}" for note in est.notes)
    return out
