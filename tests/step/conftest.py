"""Fixtures for the STeP core tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from step_helpers import BINDING

from stepsmith import step


@pytest.fixture(params=["fast", "oracle"])
def session(request: pytest.FixtureRequest) -> Iterator[step.Session]:
    """Run the test under both executors."""
    with step.Session(binding=BINDING, executor=request.param) as s:
        yield s
