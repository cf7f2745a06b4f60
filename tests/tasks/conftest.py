"""Fixtures for task-loader tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def write_task(tmp_path: Path):
    """Write YAML text to a file and return its path."""

    def _write(text: str, name: str = "task.yaml") -> Path:
        p = tmp_path / name
        p.write_text(text)
        return p

    return _write
