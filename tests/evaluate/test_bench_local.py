"""Slow: `stepsmith bench` end to end with the real embedded local model (CI runs it)."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from stepsmith.evaluate.cli import register
from stepsmith.evaluate.summary import summarize
from stepsmith.improve.store import ExperienceStore

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_model() -> str:
    pytest.importorskip("llama_cpp")
    from stepsmith.llm import DEFAULT_MODEL, ModelNotInstalled, ensure_model

    try:
        ensure_model(DEFAULT_MODEL.split(":", 1)[1])
    except ModelNotInstalled as exc:
        pytest.skip(f"local model not installed: {exc}")
    return DEFAULT_MODEL


@pytest.mark.timeout(1800)
def test_quick_bench_with_the_local_model(local_model: str, tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)
    db = tmp_path / "stepsmith.db"
    # two tasks the typed decoder writes in about a minute a sample on 2 cores: the expert tasks'
    # lists and comprehensions cost it minutes a sample (docs/decoding.md, Limits)
    res = CliRunner(env={"COLUMNS": "200"}).invoke(app, [
        "bench", "--tasks", "gemm_bias_relu,norm_rmsnorm_rows", "-n", "1", "--temperatures", "0.7",
        "--max-iterations", "2", "--guardian", "rule", "--db", str(db), "--out", str(tmp_path / "rep"),
    ])
    assert res.exit_code == 0, res.output
    store = ExperienceStore(db)
    (run,) = store.list_runs()
    assert run.model == local_model and run.status == "finished"
    s = summarize(store, run.run_id)
    assert [t.task for t in s.tasks] == ["gemm_bias_relu", "norm_rmsnorm_rows"]
    samples = store.samples(run.run_id)
    assert len(samples) >= 2
    assert all(x.input_tokens > 500 and x.calls == 1 for x in samples)  # the real prompt was sent
    assert all(x.passed or x.failure_kind for x in samples)
    assert (tmp_path / "rep" / "report.html").read_text().count("data:image/png;base64,") == 3
    assert run.run_id in res.output and "Pass@n" in res.output
