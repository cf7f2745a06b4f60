"""stepsmith.evaluate — methods, metrics, reports and the `bench` / `report` / `compare` / `runs` CLI.

`run_bench(BenchConfig(...), store=ExperienceStore())` runs `single`, `single-no-ir`, `agent` or
`self-improve` on a task subset; `summarize(store, run_id)` computes pass@k (unbiased), Pass@n,
bootstrap intervals, tokens, cost, time, LoC, maintainability and failure kinds;
`stepsmith.evaluate.report` writes Markdown + self-contained HTML with plots.
"""

from stepsmith.evaluate.metrics import bootstrap_ci, maintainability, mean_pass_at_k, pass_at_k
from stepsmith.evaluate.runner import METHODS, BenchConfig, BenchError, run_bench
from stepsmith.evaluate.summary import RunSummary, summarize

__all__ = [
    "METHODS",
    "BenchConfig",
    "BenchError",
    "RunSummary",
    "bootstrap_ci",
    "maintainability",
    "mean_pass_at_k",
    "pass_at_k",
    "run_bench",
    "summarize",
]
