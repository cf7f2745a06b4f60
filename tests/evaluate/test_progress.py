"""Progress output when stdout is not a terminal (nohup, CI logs): plain lines, not silence."""

from __future__ import annotations

import io
from types import SimpleNamespace

from rich.console import Console

from stepsmith.evaluate.cli import RichProgress


def _record(passed: bool) -> SimpleNamespace:
    return SimpleNamespace(input_tokens=1000, output_tokens=50, cost_usd=0.01, passed=passed)


def test_piped_progress_prints_plain_lines_with_running_totals() -> None:
    out = io.StringIO()
    progress = RichProgress(Console(file=out, width=200))
    assert progress.plain
    progress.start("iteration 0 · level H · 40 samples", 40)
    for i in range(40):
        progress.advance(_record(i == 7), replayed=i < 10)  # replayed samples cost nothing now
    progress.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "iteration 0 · level H · 40 samples: 0/40 samples"
    assert len(lines) == 1 + 20  # every 2 samples (a twentieth), the last one included
    assert lines[-1].startswith("iteration 0 · level H · 40 samples: 40/40 samples · in 30,000 tok · "
                                "out 1,500 tok · $0.3000 · ✓ 1 · 0m")


def test_slow_runs_still_report_at_least_every_minute(monkeypatch) -> None:
    clock = [0.0]
    monkeypatch.setattr("stepsmith.evaluate.cli.time.monotonic", lambda: clock[0])
    out = io.StringIO()
    progress = RichProgress(Console(file=out, width=200))
    progress.start("sampling", 1000)  # a line every 50 samples by count
    for _ in range(3):
        clock[0] += 61.0
        progress.advance(_record(False), replayed=False)
    lines = out.getvalue().splitlines()
    assert [ln.split(" · ")[0] for ln in lines[1:]] == ["sampling: 1/1000 samples", "sampling: 2/1000 samples",
                                                       "sampling: 3/1000 samples"]
    assert lines[-1].endswith("3m03s")
