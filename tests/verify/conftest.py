"""Shared fixtures: small hand-written tasks and one warm sandboxed pool per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from verify_fixtures import ROWSUM_YAML


@pytest.fixture(scope="session")
def rowsum_task():  # -> Task
    from stepsmith.tasks import load_task

    return load_task(ROWSUM_YAML)


@pytest.fixture(scope="session")
def pool() -> Iterator[object]:
    from stepsmith.verify import VerifierPool

    with VerifierPool(workers=2, timeout_s=5.0, memory_limit_mb=2048, grace_s=2.0) as p:
        p.warm_up()
        yield p
