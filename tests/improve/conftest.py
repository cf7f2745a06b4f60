"""Fixtures for the self-improvement tests (helpers live in improve_fakes.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stepsmith.improve.store import ExperienceStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ExperienceStore]:
    s = ExperienceStore(tmp_path / "stepsmith.db")
    yield s
    s.close()
