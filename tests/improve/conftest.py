"""Fixtures for the self-improvement tests (test doubles: tests/shared/agent_fakes.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from stepsmith.improve.store import ExperienceStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "shared"))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ExperienceStore]:
    s = ExperienceStore(tmp_path / "stepsmith.db")
    yield s
    s.close()
