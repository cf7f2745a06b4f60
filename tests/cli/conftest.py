"""Fixtures for tests that drive the real `stepsmith` CLI (Typer's CliRunner on `stepsmith.cli.app`)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "llm"))  # the loopback fake server

from llm_fake_server import FakeLLMServer  # noqa: E402


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    srv = FakeLLMServer()
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Never touch the user's ~/.stepsmith or real keys."""
    home = tmp_path / "home"
    monkeypatch.setenv("STEPSMITH_HOME", str(home))
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL",
                 "STEPSMITH_OPENAI_COMPATIBLE_BASE_URL", "STEPSMITH_OPENAI_COMPATIBLE_API_KEY",
                 "STEPSMITH_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    return home
