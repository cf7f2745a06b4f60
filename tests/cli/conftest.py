"""Fixtures for tests that drive the real `stepsmith` CLI (Typer's CliRunner on `stepsmith.cli.app`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "llm"))  # the loopback fake server

from llm_fake_server import FakeLLMServer, isolated_home, server  # noqa: E402,F401


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich tables at a fixed width, so assertions do not depend on the terminal."""
    monkeypatch.setenv("COLUMNS", "200")
