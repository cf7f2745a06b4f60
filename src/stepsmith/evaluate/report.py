"""Reports: Markdown + a self-contained HTML page with matplotlib plots as base64 PNGs.

Plots: the learning curve (Pass@n vs average input tokens per task, one point per iteration —
the paper's Figure), per-group bars per run/method, failure kinds per iteration. ``compare``
puts several runs side by side with the same tables and plots.

matplotlib (and radon, for the maintainability index) come with the ``[report]`` extra. Without
them a report is still written, with every table; each plot is replaced by a line saying what
to install, so a run never fails at its last step for want of a plotting library.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, cast

from stepsmith.demos import DemoRecord
from stepsmith.evaluate.summary import RunSummary

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DEFINITIONS = (
    "Pass@n: fraction of tasks with at least one correct sample in the run. "
    "pass@k: unbiased estimator 1 - C(n-c,k)/C(n,k) per task over its last sampled batch "
    "(all temperatures pooled), averaged over tasks. Intervals: 95% percentile bootstrap over "
    "tasks. Tokens/cost: totals per task over every sample. MI: radon maintainability index of "
    "correct solutions with and without the comment term."
)
PLOTS_MISSING = "(plot omitted: matplotlib is not installed; pip install 'stepsmith[report]')"


def pyplot() -> ModuleType | None:
    """matplotlib.pyplot on the file-only Agg backend, or None without the [report] extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


# -- plots -----------------------------------------------------------------------------------
def _png(plt: ModuleType, fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _label(s: RunSummary) -> str:
    return f"{s.method} · {s.model} · {s.run_id}"


def plot_learning_curve(plt: ModuleType, summaries: Sequence[RunSummary]) -> str:
    """Pass@n vs average input tokens per task, one marker per iteration."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for s in summaries:
        xs = [0.0] + [it.cumulative_avg_input_tokens for it in s.iterations]
        ys = [0.0] + [it.cumulative_pass_at_n for it in s.iterations]
        if not s.iterations:
            xs, ys = [0.0, s.avg_input_tokens], [0.0, s.pass_at_n]
        ax.plot(xs, ys, marker="o", label=_label(s))
        for it in s.iterations:
            ax.annotate(f"t={it.iteration}", (it.cumulative_avg_input_tokens, it.cumulative_pass_at_n),
                        textcoords="offset points", xytext=(3, 4), fontsize=7)
    ax.set_xlabel("average input tokens per task")
    ax.set_ylabel("Pass@n")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Learning curve (per iteration)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return _png(plt, fig)


def plot_groups(plt: ModuleType, summaries: Sequence[RunSummary]) -> str:
    """Pass@n per task group, one bar per run (method)."""
    groups = sorted({g.group for s in summaries for g in s.groups})
    fig, ax = plt.subplots(figsize=(max(6.4, 0.9 * len(groups) * max(1, len(summaries))), 4.0))
    width = 0.8 / max(1, len(summaries))
    for i, s in enumerate(summaries):
        vals = {g.group: g.pass_at_n for g in s.groups}
        xs = [j + i * width for j in range(len(groups))]
        ax.bar(xs, [vals.get(g, 0.0) for g in groups], width=width, label=_label(s))
    ax.set_xticks([j + width * (len(summaries) - 1) / 2 for j in range(len(groups))])
    ax.set_xticklabels(groups, rotation=30, ha="right")
    ax.set_ylabel("Pass@n")
    ax.set_ylim(0, 1.05)
    ax.set_title("Pass@n per group")
    ax.legend(fontsize=7)
    return _png(plt, fig)


def plot_failures(plt: ModuleType, summary: RunSummary) -> str:
    """Stacked failure-kind counts per iteration."""
    kinds = sorted({k for it in summary.iterations for k in it.failure_kinds})
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    xs = [str(it.iteration) for it in summary.iterations]
    bottom = [0] * len(xs)
    for kind in kinds:
        vals = [it.failure_kinds.get(kind, 0) for it in summary.iterations]
        ax.bar(xs, vals, bottom=bottom, label=kind)
        bottom = [a + b for a, b in zip(bottom, vals, strict=True)]
    ax.set_xlabel("iteration")
    ax.set_ylabel("failed samples")
    ax.set_title(f"Failure kinds per iteration ({summary.run_id})")
    if kinds:
        ax.legend(fontsize=7)
    return _png(plt, fig)


# -- tables ----------------------------------------------------------------------------------
def _fmt(v: object) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def _ci(v: float, ci: tuple[float, float]) -> str:
    return f"{v:.3f} [{ci[0]:.2f}, {ci[1]:.2f}]"


def decoding_label(config: dict) -> str:
    """A run's decoding and prompt as summaries show them, e.g. `typed+prefix, compact
    reference, sibling`."""
    mode = str(config.get("constrain", "none"))
    search = str(config.get("search", "none"))
    parts = [mode if search == "none" else f"{mode}+{search}"]
    reference = str(config.get("reference", "full"))
    if reference != "full":
        parts.append(f"{reference} reference")
    if config.get("sibling"):
        parts.append("sibling")
    return ", ".join(parts)


def summary_rows(summaries: Sequence[RunSummary]) -> tuple[list[str], list[list[str]]]:
    ks = sorted({k for s in summaries for k in s.ks})
    head = ["run", "method", "model", "decoding", "status", "tasks", "Pass@n (95% CI)"]
    head += [f"pass@{k}" for k in ks]
    head += ["avg in tok/task", "avg out tok/task", "cost $", "$/solved", "wall s", "demos",
             "guardian corrupted", "model failed", "could not ask the model"]
    rows = []
    for s in summaries:
        row = [s.run_id, s.method, s.model, decoding_label(s.config), s.status,
               str(len(s.tasks)), _ci(s.pass_at_n, s.pass_at_n_ci)]
        row += [_ci(s.pass_at[str(k)], s.pass_at_ci[str(k)]) if str(k) in s.pass_at else "–" for k in ks]
        row += [f"{s.avg_input_tokens:,.0f}", f"{s.avg_output_tokens:,.0f}", s.cost_text,
                _fmt(s.cost_per_solved) if s.priced else "unknown", f"{s.wall_seconds:.1f}",
                str(s.demos), str(s.guardian_corrupted), str(s.model_failures), str(s.call_failures)]
        rows.append(row)
    return head, rows


def task_rows(s: RunSummary) -> tuple[list[str], list[list[str]]]:
    head = ["task", "group", "solved", "at iter", "correct/samples", "pass@1", "in tok", "out tok",
            "cost $", "seconds", "LoC", "MI (comments)", "MI (no comments)", "failures"]
    rows = []
    for t in s.tasks:
        fails = ", ".join(f"{k}×{v}" for k, v in sorted(t.failure_kinds.items()))
        rows.append([t.task, t.group, "yes" if t.solved else "no", _fmt(t.solved_at),
                     f"{t.correct}/{t.samples}", _fmt(t.pass_at.get("1")), str(t.input_tokens),
                     str(t.output_tokens), f"{t.cost_usd:.4f}" if s.priced else "unknown",
                     f"{t.seconds:.1f}", _fmt(t.loc),
                     _fmt(t.mi_with_comments), _fmt(t.mi_without_comments), fails or "–"])
    return head, rows


def group_rows(s: RunSummary) -> tuple[list[str], list[list[str]]]:
    head = ["group", "tasks", "Pass@n"] + [f"pass@{k}" for k in s.ks] + ["avg in tok/task"]
    rows = [[g.group, str(g.tasks), _fmt(g.pass_at_n)] + [_fmt(g.pass_at[str(k)]) for k in s.ks]
            + [f"{g.avg_input_tokens:,.0f}"] for g in s.groups]
    return head, rows


def iteration_rows(s: RunSummary) -> tuple[list[str], list[list[str]]]:
    head = ["iteration", "level", "demos", "demonstrations shown", "tasks sampled", "newly solved",
            "Pass@n so far", "avg in tok/task so far"]
    rows = [[str(it.iteration), str(it.level), str(it.demos), ", ".join(it.demo_tasks) or "–",
             str(it.tasks_sampled), ", ".join(it.newly_solved) or "–", _fmt(it.cumulative_pass_at_n),
             f"{it.cumulative_avg_input_tokens:,.0f}"] for it in s.iterations]
    return head, rows


def program_parts(s: RunSummary) -> list[tuple[str, object]]:
    """Per task: the best (shortest correct) program, and one failing program with the
    verifier's feedback — so a reader sees which program won and why the others failed."""
    parts: list[tuple[str, object]] = []
    for t in s.tasks:
        parts.append(("subheading", f"{t.task} — {'solved' if t.solved else 'not solved'} "
                                    f"({t.correct}/{t.samples} samples correct)"))
        if t.best_impl:
            parts += [("text", "Best program (shortest correct):"), ("code", t.best_impl)]
        if t.failing_kind:
            parts.append(("text", f"A failing program ({t.failing_kind}):"))
            parts.append(("code", t.failing_impl) if t.failing_impl else
                         ("text", "(the answer contained no program)"))
            if t.failing_feedback:
                parts += [("text", "Verifier feedback:"), ("pre", t.failing_feedback)]
        if not t.samples:
            parts.append(("text", "No samples yet."))
    return parts


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    esc = [[c.replace("|", "\\|").replace("\n", " ") for c in r] for r in rows]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in esc]
    return "\n".join(lines)


def _html_table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}"
    "table{border-collapse:collapse;margin:1em 0;font-size:13px}"
    "td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}th{background:#f3f3f3}"
    "img{max-width:100%;margin:0.5em 0}code{background:#f6f6f6}"
    "pre{background:#f6f6f6;padding:6px;overflow-x:auto}pre.feedback{background:#fff4f4}"
)


def _write(out_dir: Path, title: str, sections: list[tuple[str, list[tuple[str, object]]]],
           images: dict[str, str]) -> tuple[Path, Path]:
    """Sections: (heading, [("table", (head, rows)) | ("text", str) | ("image", key)])."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md: list[str] = [f"# {title}", ""]
    ht: list[str] = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
                     f"</title><style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    for heading, parts in sections:
        md += [f"## {heading}", ""]
        ht.append(f"<h2>{html.escape(heading)}</h2>")
        for kind, payload in parts:
            if kind == "table":
                head, rows = cast(tuple[list[str], list[list[str]]], payload)
                md += [_md_table(head, rows), ""]
                ht.append(_html_table(head, rows))
            elif kind == "text":
                md += [str(payload), ""]
                ht.append(f"<p>{html.escape(str(payload))}</p>")
            elif kind == "image" and str(payload) not in images:
                md += [PLOTS_MISSING, ""]
                ht.append(f"<p>{html.escape(PLOTS_MISSING)}</p>")
            elif kind == "image":
                key = str(payload)
                png = out_dir / f"{key}.png"
                png.write_bytes(base64.b64decode(images[key]))
                md += [f"![{key}]({png.name})", ""]
                ht.append(f"<img alt='{html.escape(key)}' src='data:image/png;base64,{images[key]}'>")
            elif kind == "code":
                md += ["```python", str(payload).rstrip(), "```", ""]
                ht.append(f"<pre><code>{html.escape(str(payload))}</code></pre>")
            elif kind == "pre":
                md += ["```text", str(payload).rstrip(), "```", ""]
                ht.append(f"<pre class='feedback'>{html.escape(str(payload))}</pre>")
            elif kind == "subheading":
                md += [f"### {payload}", ""]
                ht.append(f"<h3>{html.escape(str(payload))}</h3>")
    ht.append("</body></html>")
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    md_path.write_text("\n".join(md))
    html_path.write_text("".join(ht))
    return md_path, html_path


REASONS = {
    "all_solved": "every task was solved",
    "no_progress": "the full demonstration library (d_j = D) solved nothing new",
    "max_iterations": "the iteration cap was reached",
    "single_pass": "baseline: one sampling pass",
}


def _stopped(s: RunSummary) -> str:
    if s.reason:
        return f"Status {s.status}; stopped because {REASONS.get(s.reason, s.reason)}."
    return f"Status {s.status}. {s.note or ''}".strip()


def write_report(
    summary: RunSummary, out_dir: str | Path, demos: Sequence[DemoRecord] = ()
) -> tuple[Path, Path]:
    """Markdown + self-contained HTML for one run; returns (report.md, report.html)."""
    plt = pyplot()
    images = {} if plt is None else {
        "learning_curve": plot_learning_curve(plt, [summary]),
        "groups": plot_groups(plt, [summary]),
        "failures": plot_failures(plt, summary),
    }
    cfg = summary.config
    settings = ", ".join(f"{k}={cfg[k]}" for k in ("n", "temperatures", "m", "guardian", "repair",
                                                      "max_cost", "max_iterations") if k in cfg)
    sections: list[tuple[str, list[tuple[str, object]]]] = [
        ("Summary", [("table", summary_rows([summary])), ("text", f"Settings: {settings}."),
                     ("text", _stopped(summary))]),
        ("Learning curve", [("image", "learning_curve")]),
        ("Iterations", [("table", iteration_rows(summary))]),
        ("Groups", [("table", group_rows(summary)), ("image", "groups")]),
        ("Tasks", [("table", task_rows(summary))]),
        ("Programs", program_parts(summary)),
        ("Failure kinds", [("text", ", ".join(f"{k}: {v}" for k, v in sorted(summary.failure_kinds.items())) or "none"),
                           ("image", "failures")]),
    ]
    demo_parts: list[tuple[str, object]] = []
    for d in demos:
        demo_parts.append(("text", f"{d.task_name} ({d.group}) — source {d.source}, model {d.model}, "
                                   f"iteration {d.iteration}, T={d.temperature}, "
                                   f"{d.success_count}/{d.n} correct, verifier {d.verifier_version}, "
                                   f"status {d.status}"))
        demo_parts.append(("code", d.impl))
    if demo_parts:
        sections.append(("Demonstration library", demo_parts))
    sections.append(("Definitions", [("text", DEFINITIONS)]))
    return _write(Path(out_dir), f"stepsmith run {summary.run_id}", sections, images)


def gained_lost(base: RunSummary, other: RunSummary) -> tuple[list[str], list[str]]:
    """Tasks ``other`` solves that ``base`` does not (gained), and the reverse (lost)."""
    a = {t.task for t in base.tasks if t.solved}
    b = {t.task for t in other.tasks if t.solved}
    return sorted(b - a), sorted(a - b)


def delta_rows(summaries: Sequence[RunSummary]) -> tuple[list[str], list[list[str]]]:
    """Each later run against the first: Pass@n and pass@1 deltas, tasks gained and lost."""
    base = summaries[0]
    head = ["run", "vs", "Δ Pass@n", "Δ pass@1", "Δ avg in tok/task", "gained", "lost"]
    rows = []
    for s in summaries[1:]:
        gained, lost = gained_lost(base, s)
        rows.append([s.run_id, base.run_id, f"{s.pass_at_n - base.pass_at_n:+.3f}",
                     f"{s.pass_at['1'] - base.pass_at['1']:+.3f}",
                     f"{s.avg_input_tokens - base.avg_input_tokens:+,.0f}",
                     ", ".join(gained) or "–", ", ".join(lost) or "–"])
    return head, rows


def write_comparison(summaries: Sequence[RunSummary], out_dir: str | Path,
                     scope: str = "") -> tuple[Path, Path]:
    """Runs side by side: summary table, deltas against the first run (tasks gained and
    lost), learning curves, per-group bars, per-task solved grid. ``scope`` says which tasks
    the metrics cover (``compare`` restricts them to the tasks every run shares)."""
    plt = pyplot()
    images = {} if plt is None else {
        "learning_curve": plot_learning_curve(plt, summaries),
        "groups": plot_groups(plt, summaries),
    }
    names = sorted({t.task for s in summaries for t in s.tasks})
    head = ["task"] + [s.run_id for s in summaries]
    rows = []
    for name in names:
        row = [name]
        for s in summaries:
            t = next((x for x in s.tasks if x.task == name), None)
            row.append("–" if t is None else (f"✓ (t={t.solved_at})" if t.solved else "✗"))
        rows.append(row)
    summary_parts: list[tuple[str, object]] = [("table", summary_rows(summaries))]
    if scope:
        summary_parts.append(("text", scope))
    sections: list[tuple[str, list[tuple[str, object]]]] = [
        ("Summary", summary_parts),
        ("Deltas", [("table", delta_rows(summaries))]),
        ("Learning curves", [("image", "learning_curve")]),
        ("Groups", [("image", "groups")]),
        ("Tasks", [("table", (head, rows))]),
        ("Definitions", [("text", DEFINITIONS)]),
    ]
    title = "stepsmith comparison: " + " vs ".join(s.run_id for s in summaries)
    return _write(Path(out_dir), title, sections, images)
