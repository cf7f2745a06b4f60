"""CLI: ``stepsmith bench``, ``report``, ``compare``, ``runs`` (+ ``reverify``, ``export-demos``)."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from stepsmith.agents.guardian import GUARDIAN_MODES
from stepsmith.evaluate.report import decoding_label
from stepsmith.evaluate.runner import METHODS, QUICK_N, QUICK_TASK_COUNT
from stepsmith.improve.store import ExperienceStore, RunRow, SampleRecord

if TYPE_CHECKING:
    from collections.abc import Sequence

    from stepsmith.evaluate.runner import BenchConfig
    from stepsmith.tasks import Task


def _console() -> Console:
    """A fresh console per use so the terminal width (COLUMNS) is read when printing.

    Piped output (logs, ``| less``) gets a wide console so tables are not squeezed to 80 columns.
    """
    con = Console()
    if not con.is_terminal and "COLUMNS" not in os.environ:
        con = Console(width=160)
    return con


class RichProgress:
    """Progress per sampling step with tokens, cost and successes so far.

    Live bars on a terminal; on a pipe or log file (`nohup`, CI) plain lines instead — about
    twenty per step and at least one a minute — since bars there print nothing until the end.
    """

    PLAIN_EVERY_S = 60.0

    def __init__(self, con: Console) -> None:
        self.con = con
        self.plain = not con.is_terminal
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("{task.fields[stats]}"), console=con, transient=False,
        )
        self.tokens_in = self.tokens_out = 0
        self.cost = 0.0
        self.passed = 0
        self._task: TaskID | None = None
        self._started = False
        self._desc = ""
        self._total = self._done = 0
        self._t0 = self._last = 0.0

    def _stats(self) -> str:
        return f"in {self.tokens_in:,} tok · out {self.tokens_out:,} tok · ${self.cost:.4f} · ✓ {self.passed}"

    def start(self, description: str, total: int) -> None:
        self.passed = 0
        if self.plain:
            self._desc, self._total, self._done = description, total, 0
            self._t0 = self._last = time.monotonic()
            self.con.print(f"{description}: 0/{total} samples", highlight=False)
            return
        if not self._started:
            self.progress.start()
            self._started = True
        self._task = self.progress.add_task(description, total=total, stats=self._stats())

    def advance(self, record: SampleRecord, *, replayed: bool) -> None:
        if not replayed:
            self.tokens_in += record.input_tokens
            self.tokens_out += record.output_tokens
            self.cost += record.cost_usd
        self.passed += int(record.passed)
        if self.plain:
            self._plain_line()
        elif self._task is not None:
            self.progress.update(self._task, advance=1, stats=self._stats())

    def _plain_line(self) -> None:
        self._done += 1
        now = time.monotonic()
        step = max(1, self._total // 20)
        if self._done == self._total or self._done % step == 0 or now - self._last >= self.PLAIN_EVERY_S:
            self._last = now
            elapsed = int(now - self._t0)
            self.con.print(f"{self._desc}: {self._done}/{self._total} samples · {self._stats()} · "
                           f"{elapsed // 60}m{elapsed % 60:02d}s", highlight=False)

    def stop(self) -> None:
        pass

    def close(self) -> None:
        if self._started:
            self.progress.stop()
            self._started = False


def _print_estimate(cfg: BenchConfig, store: ExperienceStore) -> None:
    """`bench --estimate`: the first pass's calls, tokens and cost; nothing is run or recorded."""
    from stepsmith.demos import load_library
    from stepsmith.evaluate.estimate import (
        estimate_bench,
        history_for,
        render_estimate,
        seconds_for,
    )
    from stepsmith.evaluate.runner import resolve_tasks

    cfg.validate()
    tasks = resolve_tasks(cfg.tasks, cfg.groups)
    _preflight(tasks)
    demos = load_library(cfg.demos_file) if cfg.demos_file else []
    est = estimate_bench(cfg, tasks, demos, history_for(store.path, cfg.model))
    est.call_seconds = seconds_for(store.path, cfg.model)
    for line in render_estimate(est):
        _console().print(line, highlight=False, markup=False)
    _console().print(f"  decoding: {decoding_label(dataclasses.asdict(cfg))}",
                     highlight=False, markup=False)


def _store(db: Path | None) -> ExperienceStore:
    return ExperienceStore(db)


def _fail(message: str, code: int = 2) -> None:
    _console().print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(code)


def _find_run(store: ExperienceStore, run: str) -> RunRow:
    """The run named by id or unique prefix; an unknown one is a clean error, not a traceback."""
    try:
        return store.find_run(run)
    except KeyError as exc:
        _fail(str(exc.args[0]) if exc.args else str(exc))
        raise  # unreachable: _fail exits


def _preflight(tasks: Sequence[Task]) -> None:
    """Refuse to start (BenchError) when any task is broken, before a single model call."""
    from stepsmith.evaluate.runner import BenchError
    from stepsmith.verify.taskcheck import check_tasks

    bad = [c for c in check_tasks(list(tasks)) if not c.passed]
    if not bad:
        return
    lines = [f"refusing to start: {len(bad)} of {len(tasks)} task(s) are broken, and a broken task "
             "would be charged to the model; nothing was sent to the model. Fix the file(s) and "
             "check them with `stepsmith tasks check FILE`:"]
    for c in bad:
        lines.append(f"  FAIL {c.name} ({c.source})")
        lines += [f"       {p}" for p in c.problems]
    raise BenchError("\n".join(lines))


# Exit codes of `bench`: 2 a request that cannot run (bad option, broken task), 3 the budget
# ran out, 4 the model could not be asked (auth, dead server) — both 3 and 4 are resumable.
EXIT_INFRASTRUCTURE = 4


def _note_full_protocol(cfg: BenchConfig, quick: bool, chosen: bool) -> None:
    """Naming the default model explicitly runs the full protocol, not the quick demo: say so,
    since the two commands otherwise look like the same job at 200x the size."""
    from stepsmith.llm import DEFAULT_MODEL

    if quick or chosen or cfg.model != DEFAULT_MODEL:
        return
    _console().print(f"[yellow]note:[/yellow] --model {cfg.model} runs the full protocol (the paper's "
                     f"tasks, n={cfg.n} at {len(cfg.temperatures)} temperatures, guardian {cfg.guardian}); "
                     f"without --model, bench runs the quick demo ({QUICK_TASK_COUNT} tasks, n={QUICK_N}).", highlight=False)


def _fail_infrastructure(exc: BaseException, run_id: str | None) -> None:
    """A loud stop that names the endpoint and error, and how to continue once it is fixed."""
    con = _console()
    con.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
    if run_id:
        con.print(f"run {run_id} is saved (no sample was charged to the model for this failure); "
                  f"fix the server, URL or key, then continue with: stepsmith bench --resume {run_id}",
                  highlight=False)
    raise typer.Exit(EXIT_INFRASTRUCTURE)


def _split(values: list[str] | None) -> list[str]:
    """Repeated and comma-separated option values, flattened (`--k 2,5 --k 10`)."""
    out: list[str] = []
    for v in values or []:
        out += [p.strip() for p in v.split(",") if p.strip()]
    return out


def _ints(option: str, values: list[str] | None) -> list[int]:
    """`_split` for integer options; a non-integer is a usage error naming the option."""
    out = []
    for part in _split(values):
        try:
            out.append(int(part))
        except ValueError:
            raise typer.BadParameter(f"{part!r} is not an integer (expected e.g. 2,5)",
                                     param_hint=option) from None
    return out


def _summary_table(summaries: list) -> Table:
    """Runs as columns, metrics as rows: readable in an 80-column terminal."""
    table = Table(title="stepsmith run summary", title_justify="left")
    table.add_column("", no_wrap=True)
    for s in summaries:
        table.add_column(s.run_id, no_wrap=True, justify="right")
    rows = [
        ("method", lambda s: s.method),
        ("decoding", lambda s: decoding_label(s.config)),
        ("model", lambda s: s.model if len(s.model) <= 28 else "…" + s.model[-27:]),
        ("status", lambda s: s.status + (f" ({s.reason})" if s.reason else "")),
        ("solved", lambda s: f"{sum(t.solved for t in s.tasks)}/{len(s.tasks)} tasks"),
        ("Pass@n [95% CI]", lambda s: f"{s.pass_at_n:.3f} [{s.pass_at_n_ci[0]:.2f}, {s.pass_at_n_ci[1]:.2f}]"),
        ("Pass@1", lambda s: f"{s.pass_at['1']:.3f}"),
        ("avg input tok/task", lambda s: f"{s.avg_input_tokens:,.0f}"),
        ("avg output tok/task", lambda s: f"{s.avg_output_tokens:,.0f}"),
        ("failed samples", lambda s: f"model {s.model_failures} · could not ask {s.call_failures}"),
        ("cost $", lambda s: s.cost_text),
        ("wall time s", lambda s: f"{s.wall_seconds:,.0f}"),
    ]
    for label, get in rows:
        table.add_row(label, *(get(s) for s in summaries))
    return table


def register(app: typer.Typer) -> None:
    """Add the evaluation commands to the ``stepsmith`` app."""

    @app.command()
    def bench(
        model: Annotated[str | None, typer.Option("--model", help="Model spec, e.g. openai:gpt-4o-2024-11-20; default: the embedded local model (quick demo).")] = None,
        method: Annotated[str, typer.Option("--method", help=" | ".join(METHODS))] = "self-improve",
        tasks: Annotated[list[str] | None, typer.Option("--tasks", help="Benchmark task names or task-file paths (repeat or comma-separate).")] = None,
        groups: Annotated[list[str] | None, typer.Option("--groups", help="Benchmark groups (repeat or comma-separate; 'all' includes extra).")] = None,
        n: Annotated[int | None, typer.Option("-n", help=f"Samples per task per temperature (default 8; quick demo {QUICK_N}).")] = None,
        temperatures: Annotated[str | None, typer.Option("--temperatures", help="Comma list (default 0.4,0.7,1.0; quick demo 0.7).")] = None,
        m: Annotated[int, typer.Option("--levels", "-m", help="Difficulty levels for stratification (the paper's m).")] = 3,
        guardian: Annotated[str | None, typer.Option("--guardian", help=" | ".join(GUARDIAN_MODES) + " (default llm; quick demo rule).")] = None,
        repair: Annotated[int, typer.Option("--repair", help="Verifier-feedback repair turns per failed sample.")] = 0,
        max_cost: Annotated[float | None, typer.Option("--max-cost", help="Stop cleanly when this many USD are spent.")] = None,
        max_tokens: Annotated[int | None, typer.Option("--max-tokens", help="Run budget: stop cleanly when this many tokens (input + output, all calls of the run) are spent. Not a per-sample limit: each sample may write up to 1024 output tokens (512 in the quick demo).")] = None,
        cache: Annotated[str | None, typer.Option("--cache", help="LLM call cache: use (default) | refresh | replay (offline; a miss fails).")] = None,
        resume: Annotated[str | None, typer.Option("--resume", help="Continue run RUN from its recorded samples.")] = None,
        demos: Annotated[Path | None, typer.Option("--demos", help="Demonstration library (JSON/YAML) to start from.")] = None,
        k: Annotated[list[str] | None, typer.Option("--k", help="Extra k for pass@k, e.g. 2,5 (repeat or comma-separate; pass@1 is always reported).")] = None,
        max_iterations: Annotated[int | None, typer.Option("--max-iterations", help="Cap on Algorithm 1 iterations (quick demo 3).")] = None,
        concurrency: Annotated[int, typer.Option("--concurrency", help="Concurrent LLM requests.")] = 4,
        constrain: Annotated[str | None, typer.Option("--constrain", help="Decoding constraint: none | grammar (the task's CFG) | typed (only well-typed statements; local models). Default: typed for llamacpp: models, none otherwise.")] = None,
        search: Annotated[str | None, typer.Option("--search", help="none | prefix: after each typed line, the simulator judges returning the streams that have the output type; a verified one ends the sample | deepen: prefix, and a complete program that fails restarts the sample with a larger statement budget (6, 10, 16; streams may be used again, the answer gets the Copy) while its token budget lasts | nearby: deepen, and before each restart the simulator judges the failed program's one-line neighbours (each line swapped for another the typed space offered there with the same output types; no model time; it gives the same answer as deepen or a verified one in less model time). Default: nearby with --constrain typed.")] = None,
        reference: Annotated[str | None, typer.Option("--reference", help="System prompt: full (a worked example per primitive, ~7k tokens) | compact (no worked examples, ~2.9k tokens; faster on small local models, but the 0.5B solved less with it). Default: full.")] = None,
        sibling: Annotated[bool, typer.Option("--sibling/--no-sibling", help="Repeat the demonstration of the task's own group that reads most like it right before the task (self-improvement's prompt holds a dozen demonstrations; the relevant one can sit 7k tokens away). Off by default: on the 1.5B model it did not raise the right programs' likelihood (README, bench/demo_likelihood.py).")] = False,
        server_kind: Annotated[str | None, typer.Option("--server-kind", help="Engine behind an openai-compatible: model, for --constrain grammar: vllm | sglang | llamacpp.")] = None,
        estimate: Annotated[bool, typer.Option(
            "--estimate", help="Print calls, tokens and cost of the first pass, then exit (no model call).")] = False,
        out: Annotated[Path | None, typer.Option("--out", help="Report directory (default $STEPSMITH_HOME/reports/RUN).")] = None,
        db: Annotated[Path | None, typer.Option("--db", help="SQLite file (default $STEPSMITH_HOME/stepsmith.db).")] = None,
    ) -> None:
        """Run a method on benchmark tasks, then print a summary and write the report."""
        from stepsmith.evaluate.runner import (
            BenchConfig,
            BenchError,
            config_from_run,
            parse_temperatures,
            quick_tasks,
            resolve_tasks,
            run_bench,
        )
        from stepsmith.evaluate.summary import summarize
        from stepsmith.improve.loop import RunAborted
        from stepsmith.llm import InfrastructureError, LLMLayerError

        store = _store(db)
        progress = RichProgress(_console())
        started: list[str] = []

        def announce(run_id: str) -> None:
            started.append(run_id)
            _console().print(f"run id: [bold]{run_id}[/bold] (if interrupted: stepsmith bench --resume {run_id})")

        if server_kind is not None:
            from stepsmith.llm.constraint import SERVER_KINDS

            if server_kind not in SERVER_KINDS:
                _fail(f"--server-kind {server_kind!r}: choose one of {', '.join(SERVER_KINDS)}")
                return
            os.environ["STEPSMITH_SERVER_KIND"] = server_kind
        try:
            if resume:
                _preflight(config_from_run(store, resume)[1])
                outcome = run_bench(store=store, resume=resume, max_cost=max_cost, token_budget=max_tokens,
                                    cache_mode=cache, progress=progress, report_dir=out,
                                    announce=announce)
            else:
                quick = model is None
                if model is None:  # (not `if quick`: mypy narrows `model` itself)
                    from stepsmith.llm import DEFAULT_MODEL, ensure_model

                    model = DEFAULT_MODEL
                    if not estimate:
                        ensure_model(model.split(":", 1)[1])
                task_refs, group_refs = _split(tasks), _split(groups)
                if quick and not task_refs and not group_refs:
                    task_refs = quick_tasks()
                constrain_mode = constrain or ("typed" if model.startswith("llamacpp:") else "none")
                cfg = BenchConfig(
                    model=model, method=method, tasks=task_refs, groups=group_refs,
                    n=n if n is not None else (QUICK_N if quick else 8),
                    temperatures=parse_temperatures(temperatures or ("0.7" if quick else "0.4,0.7,1.0")),
                    m=m, guardian=guardian or ("rule" if quick else "llm"), repair=repair,
                    max_cost=max_cost, token_budget=max_tokens, cache_mode=cache or "use",
                    max_iterations=max_iterations or (3 if quick else None),
                    demos_file=str(demos) if demos else None, ks=sorted({1, *_ints("--k", k)}),
                    concurrency=concurrency, max_tokens=512 if quick else 1024,
                    constrain=constrain_mode,
                    search=search or ("nearby" if constrain_mode == "typed" else "none"),
                    reference=reference or "full", sibling=sibling,
                )
                _note_full_protocol(cfg, quick, bool(task_refs or group_refs or n))
                if estimate:
                    _print_estimate(cfg, store)
                    return
                _preflight(resolve_tasks(cfg.tasks, cfg.groups))
                if quick:
                    _console().print(f"[dim]quick demo on {cfg.model}: tasks {', '.join(cfg.tasks)}, n={cfg.n}, "
                                  f"T={cfg.temperatures}, guardian {cfg.guardian}, max {cfg.max_tokens} output tokens. "
                                  "Pass --model for the full protocol.[/dim]")
                outcome = run_bench(cfg, store=store, progress=progress, report_dir=out, announce=announce)
        except (InfrastructureError, RunAborted) as exc:
            progress.close()
            _fail_infrastructure(exc, started[-1] if started else None)
            return
        except (BenchError, KeyError, ValueError, OSError, LLMLayerError) as exc:
            progress.close()
            _fail(str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc))
            return
        except KeyboardInterrupt:
            progress.close()
            _console().print("[yellow]interrupted[/yellow]; every finished sample is saved — rerun with --resume RUN "
                          "(see `stepsmith runs`).")
            raise typer.Exit(130) from None
        finally:
            progress.close()
        _console().print(f"run id: [bold]{outcome.run_id}[/bold] ({outcome.status}; {outcome.message})")
        _console().print(_summary_table([summarize(store, outcome.run_id)]))
        if outcome.report:
            _console().print(f"report: {outcome.report[0]}\n        {outcome.report[1]}")
        if outcome.status == "budget":
            raise typer.Exit(3)

    @app.command()
    def report(
        run: Annotated[str, typer.Argument(help="Run id (or unique prefix).")],
        out: Annotated[Path | None, typer.Option("--out", help="Output directory (default $STEPSMITH_HOME/reports/RUN).")] = None,
        k: Annotated[list[str] | None, typer.Option("--k", help="Extra k for pass@k, e.g. 2,5 (repeat or comma-separate).")] = None,
        db: Annotated[Path | None, typer.Option("--db")] = None,
    ) -> None:
        """Write report.md and a self-contained report.html (plots embedded) for a run."""
        from stepsmith.evaluate.runner import make_report
        from stepsmith.evaluate.summary import summarize

        store = _store(db)
        try:
            ks = _ints("--k", k)
            md, page = make_report(store, run, out, ks=ks)
            summary = summarize(store, run, ks=ks)
        except (KeyError, ValueError) as exc:
            _fail(str(exc.args[0]) if exc.args else str(exc))
            return
        _console().print(_summary_table([summary]))
        _console().print(f"report: {md}\n        {page}")

    @app.command()
    def compare(
        runs: Annotated[list[str], typer.Argument(help="Two or more run ids.")],
        out: Annotated[Path | None, typer.Option("--out", help="Output directory (default $STEPSMITH_HOME/reports/compare-A-B).")] = None,
        db: Annotated[Path | None, typer.Option("--db")] = None,
    ) -> None:
        """Put runs side by side on the tasks they share: table, deltas against the first run,
        tasks gained and lost, curves, per-group bars."""
        from stepsmith.evaluate.report import gained_lost, write_comparison
        from stepsmith.evaluate.summary import summarize

        if len(runs) < 2:
            _fail("compare needs at least two run ids")
        store = _store(db)
        try:
            full = [summarize(store, r) for r in runs]
        except KeyError as exc:
            _fail(str(exc.args[0]) if exc.args else str(exc))
            return
        task_sets = [{t.task for t in s.tasks} for s in full]
        shared = set.intersection(*task_sets)
        if not shared:
            _fail("these runs share no task, so there is nothing to compare: "
                  + "; ".join(f"{s.run_id}: {', '.join(sorted(ts)) or 'no tasks'}"
                              for s, ts in zip(full, task_sets, strict=True)))
            return
        scope = ""
        if any(ts != shared for ts in task_sets):
            left_out = "; ".join(f"{s.run_id} also ran {len(ts - shared)} ({', '.join(sorted(ts - shared))})"
                                 for s, ts in zip(full, task_sets, strict=True) if ts - shared)
            scope = (f"Metrics cover the {len(shared)} task(s) every run shares; left out: {left_out}.")
        summaries = [summarize(store, s.run_id, only=shared) for s in full]
        target = out or store.path.parent / "reports" / ("compare-" + "-vs-".join(s.run_id for s in summaries))
        md, page = write_comparison(summaries, target, scope=scope)
        con = _console()
        if scope:
            con.print(f"[yellow]note:[/yellow] {escape(scope)}")
        con.print(_summary_table(summaries))
        base = summaries[0]
        for s in summaries[1:]:
            gained, lost = gained_lost(base, s)
            con.print(f"{s.run_id} vs {base.run_id}: Pass@n {s.pass_at_n - base.pass_at_n:+.3f}, "
                      f"pass@1 {s.pass_at['1'] - base.pass_at['1']:+.3f}; gained: "
                      f"{', '.join(gained) or 'none'}; lost: {', '.join(lost) or 'none'}",
                      highlight=False, markup=False)
        con.print(f"comparison: {md}\n            {page}")

    @app.command()
    def samples(
        run: Annotated[str, typer.Argument(help="Run id (or unique prefix).")],
        task: Annotated[list[str] | None, typer.Option("--task", help="Only these tasks (repeat or comma-separate).")] = None,
        failed: Annotated[bool, typer.Option("--failed", help="Only samples that did not pass.")] = False,
        iteration: Annotated[int | None, typer.Option("--iteration", help="Only this iteration.")] = None,
        db: Annotated[Path | None, typer.Option("--db")] = None,
    ) -> None:
        """Every sample of a run: its program, verdict kind and the verifier's feedback."""
        store = _store(db)
        row = _find_run(store, run)
        wanted = set(_split(task))
        known = set(row.config.get("task_names", [])) | {s.task for s in store.samples(row.run_id)}
        unknown = sorted(wanted - known)
        if unknown:
            _fail(f"run {row.run_id} has no task {', '.join(unknown)}; its tasks: {', '.join(sorted(known))}")
        recs = [s for s in store.samples(row.run_id, iteration=iteration)
                if (not wanted or s.task in wanted) and not (failed and s.passed)]
        recs.sort(key=lambda r: (r.iteration, r.task, r.temp_key, r.sample_index))
        for r in recs:
            verdict = "PASSED" if r.passed else f"FAILED {r.failure_kind or 'unknown'}"
            typer.echo(f"── {r.task} · iteration {r.iteration} · T={r.temp_key} · sample {r.sample_index} · "
                       f"{verdict} · demos: {', '.join(r.demos) or 'none'}")
            typer.echo(r.impl.rstrip() if r.impl else "(no program in the answer)")
            if r.feedback:
                typer.echo("feedback:")
                typer.echo("  " + r.feedback.rstrip().replace("\n", "\n  "))
            typer.echo("")
        n_pass = sum(r.passed for r in recs)
        typer.echo(f"{len(recs)} sample(s) shown: {n_pass} passed, {len(recs) - n_pass} failed")

    @app.command("runs")
    def runs_cmd(
        limit: Annotated[int, typer.Option("--limit", help="How many recent runs to list.")] = 20,
        db: Annotated[Path | None, typer.Option("--db")] = None,
    ) -> None:
        """List past runs (most recent first)."""
        import datetime as _dt

        store = _store(db)
        table = Table(title=f"runs in {store.path}")
        table.add_column("run", no_wrap=True, min_width=20)
        for col in ("started", "method", "model", "status", "tasks", "Pass@n", "note"):
            table.add_column(col)
        for r in store.list_runs(limit):
            samples = store.samples(r.run_id)
            names = r.config.get("task_names", [])
            solved = {s.task for s in samples if s.passed}
            frac = f"{len(solved)}/{len(names)}" if names else "–"
            started = _dt.datetime.fromtimestamp(r.created).strftime("%Y-%m-%d %H:%M")
            table.add_row(r.run_id, started, r.method, r.model, r.shown_status, str(len(names)), frac, (r.note or "")[:60])
        _console().print(table)

    @app.command()
    def reverify(
        run: Annotated[str, typer.Argument(help="Run whose demonstration library to re-verify.")],
        db: Annotated[Path | None, typer.Option("--db")] = None,
    ) -> None:
        """Re-verify a run's demonstrations (after a verifier/language change); failing ones become stale."""
        from stepsmith.improve.reverify import reverify_run

        store = _store(db)
        try:
            results = reverify_run(store, run)
        except KeyError as exc:
            _fail(str(exc.args[0]) if exc.args else str(exc))
            return
        for r in results:
            mark = "[green]ok[/green]" if r.passed else ("[yellow]?[/yellow]" if r.passed is None else "[red]stale[/red]")
            _console().print(f"{mark} {r.task_name} ({r.source}): {r.message}")

    @app.command("export-demos")
    def export_demos(
        run: Annotated[str, typer.Argument(help="Run whose demonstration library to export.")],
        file: Annotated[Path, typer.Argument(help="Output .json or .yaml file (load it with bench --demos).")],
        db: Annotated[Path | None, typer.Option("--db")] = None,
    ) -> None:
        """Export a run's active demonstrations with provenance."""
        from stepsmith.demos import export_library

        store = _store(db)
        row = _find_run(store, run)
        demos = store.demos(row.run_id, active_only=True)
        path = export_library(demos, file, run_id=row.run_id)
        _console().print(f"wrote {len(demos)} demonstrations to {path}")
