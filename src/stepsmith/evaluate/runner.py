"""``stepsmith bench``: run a method on a task subset, record everything, summarise, report.

Methods: ``single`` (proposer only, structural IR), ``single-no-ir`` (proposer against a Python
scaffold), ``agent`` (proposer → guardian), ``self-improve`` (agent + Algorithm 1). Baselines are
one sampling step (n samples per task per temperature); self-improvement is the loop in
``stepsmith.improve.loop``. Runs live in the experience store; ``resume_bench`` continues a run
from its recorded samples (the LLM cache makes any re-issued call free).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from stepsmith.agents.agent import METHODS as AGENT_METHODS
from stepsmith.agents.agent import Agent
from stepsmith.agents.decoding.judge import SEARCH_MODES
from stepsmith.agents.guardian import GUARDIAN_MODES
from stepsmith.agents.prompts import REFERENCE_STYLES
from stepsmith.demos import load_library
from stepsmith.improve.loop import AgentLike, LoopConfig, LoopResult, ProgressSink, SelfImprover
from stepsmith.improve.store import DemoRecord, ExperienceStore, RunBusyError
from stepsmith.llm.base import Backend
from stepsmith.llm.client import CACHE_MODES
from stepsmith.llm.constraint import CONSTRAIN_MODES
from stepsmith.llm.errors import BudgetExceeded

if TYPE_CHECKING:
    from stepsmith.tasks.task import Task
    from stepsmith.verify.verdict import Verifier

# a bench method is an agent method, or Algorithm 1 around the "agent" one
METHODS = (*AGENT_METHODS, "self-improve")
# All four index tasks: since the typed-12 decoder the 0.5B model solves the three shortest in
# iteration 0 (run 20261202-022139-f82c stopped `all_solved` with no iteration to learn in);
# with the fourth, iteration 1 samples it with their programs as demonstrations.
QUICK_TASK_COUNT = 4
# The quick demo samples one group of sibling operators, so that a program solved in iteration
# 0 is a relevant demonstration for the others in iteration 1: the step the demo exists to
# show. The index group (binary predictor, top-1 and top-2 softmax routers): with the 0.5B
# model, run 20261201-041118-16f1 solved the predictor in iteration 0 and, with it as the
# demonstration, the top-1 router in both of its iteration-1 samples (0 of 2 without).
QUICK_GROUP = "index"
# One sample per task: with typed-20 the 0.5B model solved all four index tasks in iteration 0
# at n = 2 (run 20261203-195815-d0a9: 7 of 8 samples, 183 s, `all_solved`, no iteration left
# to learn in). At n = 1 iteration 0 leaves the expert-choice top-k, and iteration 1 samples it
# with the other three programs as demonstrations (run 20261203-201016-1485 solved it there;
# without demonstrations it solves 2 of 4 draws, run 20261203-201525-6143).
QUICK_N = 1


class BenchError(ValueError):
    """A bench request that cannot run; the message says which option and why."""


@dataclass
class BenchConfig:
    """Everything that defines a run (stored with it, so ``--resume`` needs only the id)."""

    model: str
    method: str = "self-improve"
    tasks: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    n: int = 8
    temperatures: list[float | None] = field(default_factory=lambda: [0.4, 0.7, 1.0])
    m: int = 3
    guardian: str = "llm"
    repair: int = 0
    max_cost: float | None = None
    token_budget: int | None = None  # total input+output tokens for the run (`--max-tokens`)
    cache_mode: str = "use"  # the LLM call cache: use | refresh | replay (offline, fail on a miss)
    max_iterations: int | None = None
    demos_file: str | None = None
    ks: list[int] = field(default_factory=lambda: [1])
    concurrency: int = 4
    max_tokens: int = 1024
    workers: int = 2
    constrain: str = "none"  # decoding constraint: none | grammar | typed
    search: str = "none"  # none | prefix | deepen | nearby (the simulator judges typed programs)
    reference: str = "full"  # the system prompt: full (worked examples) | compact
    sibling: bool = False  # repeat the nearest solved sibling right before the task

    def validate(self) -> None:
        if self.method not in METHODS:
            raise BenchError(f"--method {self.method!r} is not a method; choose one of {', '.join(METHODS)}")
        if self.guardian not in GUARDIAN_MODES:
            raise BenchError(f"--guardian {self.guardian!r} is not a mode; choose one of {', '.join(GUARDIAN_MODES)}")
        if self.n < 1:
            raise BenchError(f"-n must be >= 1 (samples per task per temperature), got {self.n}")
        if self.m < 1:
            raise BenchError(f"-m must be >= 1 (difficulty levels), got {self.m}")
        if self.cache_mode not in CACHE_MODES:
            raise BenchError(f"--cache {self.cache_mode!r} is not a mode; choose one of {', '.join(CACHE_MODES)}")
        if self.token_budget is not None and self.token_budget < 1:
            raise BenchError(f"--max-tokens must be >= 1, got {self.token_budget}")
        if self.constrain not in CONSTRAIN_MODES:
            raise BenchError(
                f"--constrain {self.constrain!r} is not a mode; choose one of "
                f"{', '.join(CONSTRAIN_MODES)}"
            )
        if self.constrain == "typed" and not self.model.startswith("llamacpp:"):
            raise BenchError(
                "--constrain typed needs a local llamacpp: model (it decodes line by line); "
                "for an OpenAI-compatible server use --constrain grammar --server-kind ..."
            )
        if self.search not in SEARCH_MODES:
            raise BenchError(
                f"--search {self.search!r} is not a mode; choose one of {', '.join(SEARCH_MODES)}"
            )
        if self.search != "none" and self.constrain != "typed":
            raise BenchError(
                f"--search {self.search} judges well-typed prefixes: it needs --constrain typed"
            )
        if self.reference not in REFERENCE_STYLES:
            raise BenchError(
                f"--reference {self.reference!r} is not a style; choose one of "
                f"{', '.join(REFERENCE_STYLES)}"
            )
        if self.repair < 0:
            raise BenchError(f"--repair must be >= 0, got {self.repair}")
        if not self.temperatures:
            raise BenchError("--temperatures must list at least one temperature, e.g. 0.4,0.7,1.0")
        total = self.n * len(self.temperatures)
        bad = [k for k in self.ks if k < 1 or k > total]
        if bad:
            raise BenchError(
                f"--k {bad[0]} is outside 1..{total} (n={self.n} × {len(self.temperatures)} temperatures)"
            )


def parse_temperatures(text: str) -> list[float | None]:
    """``"0.4,0.7,1.0"`` → floats; ``default``/``none`` means the provider's default temperature."""
    out: list[float | None] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if part.lower() in ("none", "default"):
            out.append(None)
            continue
        try:
            value = float(part)
        except ValueError as exc:
            raise BenchError(f"--temperatures: {part!r} is not a number (expected e.g. 0.4,0.7,1.0)") from exc
        if not 0.0 <= value <= 2.0:
            raise BenchError(f"--temperatures: {value} is outside 0..2")
        out.append(value)
    if not out:
        raise BenchError(f"--temperatures {text!r} lists no temperature (expected e.g. 0.4,0.7,1.0)")
    return out


def paper_groups() -> list[str]:
    """The paper's 8 groups in its order: the suite's group order without the extra operators."""
    from stepsmith.tasks.suite import GROUP_ORDER

    return [g for g in GROUP_ORDER if g != "extra"]


def resolve_tasks(refs: Sequence[str], groups: Sequence[str]) -> list[Task]:
    """Benchmark names / task-file paths, plus whole groups; default: the paper's 8 groups."""
    from stepsmith.tasks.suite import benchmark_tasks, get_task
    from stepsmith.tasks.suite import groups as known_groups

    tasks: list[Task] = []
    for ref in refs:
        try:
            tasks.append(get_task(ref))
        except KeyError as exc:  # TaskNotFoundError is a KeyError
            raise BenchError(f"--tasks {ref}: {exc.args[0] if exc.args else exc}") from exc
        except ValueError as exc:  # TaskFormatError
            raise BenchError(f"--tasks {ref}: {exc}") from exc
    wanted = list(groups)
    if not refs and not wanted:
        wanted = [g for g in paper_groups() if g in known_groups()]
    if "all" in wanted:
        wanted = known_groups()
    for g in wanted:
        members = benchmark_tasks(g)
        if not members:
            raise BenchError(f"--groups {g}: no benchmark tasks in that group; known groups: {', '.join(known_groups())}")
        tasks.extend(members)
    from stepsmith.tasks.preflight import DuplicateTaskError, unique_tasks

    try:
        unique = unique_tasks(tasks)  # two files with one test_name would merge silently
    except DuplicateTaskError as exc:
        raise BenchError(f"--tasks: {exc}") from None
    if not unique:
        raise BenchError("no tasks selected: pass --tasks NAME_OR_PATH or --groups GROUP")
    return unique


def quick_tasks(count: int = QUICK_TASK_COUNT) -> list[str]:
    """The default quick subset: the `count` shortest reference programs of QUICK_GROUP (of all
    paper tasks if a custom suite lacks that group)."""
    from stepsmith.improve.filtering import pure_code_lines
    from stepsmith.tasks.suite import benchmark_tasks

    paper = paper_groups()
    tasks = ([t for t in benchmark_tasks() if t.group == QUICK_GROUP and t.impl]
             or [t for t in benchmark_tasks() if t.group in paper and t.impl] or benchmark_tasks())
    ranked = sorted(tasks, key=lambda t: (pure_code_lines(t.impl or ""), len(t.impl or ""), t.name))
    return [t.name for t in ranked[:count]]


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def default_report_dir(run_id: str, store: ExperienceStore) -> Path:
    return store.path.parent / "reports" / run_id


@dataclass
class BenchOutcome:
    run_id: str
    status: str
    result: LoopResult | None
    seconds: float
    report: tuple[Path, Path] | None = None
    message: str = ""


def _make_agent(
    cfg: BenchConfig, run_id: str, store: ExperienceStore, verifier: Verifier,
    backend: Backend | None = None,
) -> Agent:
    from stepsmith.llm import Budget, CallStore, LLMClient

    budget = (Budget(max_cost_usd=cfg.max_cost, max_tokens=cfg.token_budget)
              if cfg.max_cost is not None or cfg.token_budget is not None else None)
    client = LLMClient(
        backend if backend is not None else cfg.model,
        store=CallStore(store.path),
        run_id=run_id,
        budget=budget,
        cache_mode=cfg.cache_mode,
        concurrency=cfg.concurrency,
    )
    method = "agent" if cfg.method == "self-improve" else cfg.method
    guardian = cfg.guardian if method == "agent" else "none"
    return Agent(client, verifier, method=method, guardian=guardian, repair=cfg.repair,
                 max_tokens=cfg.max_tokens, constrain=cfg.constrain, search=cfg.search,
                 reference=cfg.reference, sibling=cfg.sibling)


def _is_infrastructure_stop(exc: BaseException) -> bool:
    """The model could not be asked (auth, dead server, too many backend errors in a row)."""
    from stepsmith.improve.loop import RunAborted
    from stepsmith.llm import InfrastructureError

    return isinstance(exc, InfrastructureError | RunAborted)


async def execute(
    cfg: BenchConfig,
    store: ExperienceStore,
    run_id: str,
    tasks: Sequence[Task],
    agent: AgentLike,
    *,
    progress: ProgressSink | None = None,
) -> tuple[str, LoopResult | None, str]:
    """Run (or resume) one run's sampling; returns (status, result, message). Records status."""
    loop_cfg = LoopConfig(
        n=cfg.n, temperatures=tuple(cfg.temperatures), m=cfg.m, max_iterations=cfg.max_iterations,
        concurrency=cfg.concurrency, model=cfg.model,
    )
    improver = SelfImprover(store, run_id, agent, loop_cfg, progress=progress)
    imported = store.demos(run_id, source="import", active_only=True)
    prev = store.get_run(run_id).summary or {}
    started = time.perf_counter()
    status, message, result = "finished", "", None
    try:
        if cfg.method == "self-improve":
            result = await improver.run(tasks, imported)
        else:
            result = await improver.run_single(tasks, imported)
        message = f"stopped: {result.reason}"
    except BaseException as exc:  # noqa: BLE001 — every stop must be recorded before it propagates
        elapsed = float(prev.get("wall_seconds", 0.0)) + time.perf_counter() - started
        if isinstance(exc, BudgetExceeded):
            flag = "--max-tokens" if exc.limit == "max_tokens" else "--max-cost"
            status, message = "budget", f"budget reached: {exc} Resume with --resume {run_id} {flag} <higher>"
        elif isinstance(exc, KeyboardInterrupt | asyncio.CancelledError):
            status, message = "interrupted", f"interrupted; resume with --resume {run_id}"
        elif _is_infrastructure_stop(exc):
            status, message = "stopped", (f"{exc}. No sample was charged to the model for it; fix the "
                                          f"server or key, then resume with --resume {run_id}")
        else:
            status, message = "failed", f"{type(exc).__name__}: {exc}"
        store.set_status(run_id, status, summary={"wall_seconds": elapsed}, note=message)
        if status == "budget":
            return status, None, message
        raise
    elapsed = float(prev.get("wall_seconds", 0.0)) + time.perf_counter() - started
    store.set_status(
        run_id, status,
        summary={"wall_seconds": elapsed, "reason": result.reason, "requested": result.requested,
                 "replayed": result.replayed},
        note=message,
    )
    return status, result, message


def _task_ref(task: Task) -> str:
    """Packaged tasks by name (survives reinstalls), user task files by absolute path."""
    from stepsmith.tasks.suite import ROOT

    if task.source_path is None:
        return task.name
    path = Path(task.source_path).resolve()
    return task.name if path.is_relative_to(ROOT) else str(path)


def create_run(cfg: BenchConfig, store: ExperienceStore, tasks: Sequence[Task], run_id: str | None = None) -> str:
    """Record a new run (config, task list, imported demonstrations) and return its id."""
    cfg.validate()
    run_id = run_id or new_run_id()
    config = asdict(cfg)
    if cfg.method in ("single", "single-no-ir"):  # the agent methods without a guardian
        config["guardian"] = "none"  # the paper's single baselines are the proposer alone
    config["task_names"] = [t.name for t in tasks]
    config["task_groups"] = {t.name: t.group for t in tasks}
    config["task_refs"] = [_task_ref(t) for t in tasks]
    demos: list[DemoRecord] = load_library(cfg.demos_file) if cfg.demos_file else []
    store.create_run(run_id, method=cfg.method, model=cfg.model, config=config)
    if demos:
        store.add_demos(run_id, demos)
    return run_id


def config_from_run(store: ExperienceStore, run_id: str) -> tuple[BenchConfig, list[Task]]:
    """Rebuild the config and the task list of a recorded run (for ``--resume``)."""
    row = store.find_run(run_id)
    known = {f for f in BenchConfig.__dataclass_fields__}
    cfg = BenchConfig(**{k: v for k, v in row.config.items() if k in known})
    refs = row.config.get("task_refs") or row.config.get("task_names") or []
    tasks = resolve_tasks(refs, [])
    return cfg, tasks


def run_bench(
    cfg: BenchConfig | None = None,
    *,
    store: ExperienceStore,
    resume: str | None = None,
    max_cost: float | None = None,
    token_budget: int | None = None,
    cache_mode: str | None = None,
    backend: Backend | None = None,
    progress: ProgressSink | None = None,
    report_dir: str | Path | None = None,
    write_report: bool = True,
    announce: Callable[[str], None] | None = None,
) -> BenchOutcome:
    """Create (or resume) a run, execute it with a warm verifier pool, summarise and report."""
    from stepsmith.verify import VerifierPool

    started = time.perf_counter()
    if resume:
        cfg, tasks = config_from_run(store, resume)
        run_id = store.find_run(resume).run_id
        if max_cost is not None:
            cfg.max_cost = max_cost
        if token_budget is not None:
            cfg.token_budget = token_budget
        if cache_mode is not None:
            cfg.cache_mode = cache_mode
        cfg.validate()
        try:  # check and claim in one transaction: two resumes at once cannot both start
            store.claim_run(run_id)
        except RunBusyError as exc:
            raise BenchError(
                f"{exc}; two processes on one run would duplicate paid calls — stop that process "
                "first, or wait for it to finish"
            ) from None
    else:
        if cfg is None:
            raise BenchError("run_bench needs a BenchConfig or resume=RUN")
        cfg.validate()
        tasks = resolve_tasks(cfg.tasks, cfg.groups)
        if cfg.demos_file:
            load_library(cfg.demos_file)  # a bad library fails before anything is recorded
        run_id = new_run_id()
    with VerifierPool(workers=cfg.workers) as pool:
        # the client is built first so a bad model spec or budget never leaves a dangling run
        agent = _make_agent(cfg, run_id, store, pool, backend)
        if not resume:
            create_run(cfg, store, tasks, run_id)
        if announce is not None:
            announce(run_id)
        status, result, message = asyncio.run(execute(cfg, store, run_id, tasks, agent, progress=progress))
    report = None
    if write_report:
        report = make_report(store, run_id, report_dir)
    return BenchOutcome(run_id, status, result, time.perf_counter() - started, report, message)


def make_report(store: ExperienceStore, run_id: str, out_dir: str | Path | None = None,
                ks: list[int] | None = None) -> tuple[Path, Path]:
    from stepsmith.evaluate.report import write_report
    from stepsmith.evaluate.summary import summarize

    summary = summarize(store, run_id, ks=ks)
    out = Path(out_dir) if out_dir else default_report_dir(summary.run_id, store)
    return write_report(summary, out, store.demos(summary.run_id))
