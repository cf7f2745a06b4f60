"""Shared doubles: a scripted LLM client and a fast in-process verifier over small test tasks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from agents_programs import CountingVerifier

DATA = Path(__file__).parent / "data"


@pytest.fixture
def load() -> Callable[[str], Any]:
    from stepsmith.tasks import load_task

    return lambda name: load_task(DATA / f"{name}.yaml")


@pytest.fixture
def verifier() -> CountingVerifier:
    return CountingVerifier()


@pytest.fixture
def scripted() -> Callable[[Callable[..., str]], Any]:
    """Build an LLMClient over a ScriptedBackend(fn) with an in-memory call store."""
    from stepsmith.llm import LLMClient
    from stepsmith.llm.testing import ScriptedBackend

    def make(fn: Callable[..., str]) -> Any:
        backend = ScriptedBackend(fn)
        client = LLMClient(backend, run_id="agents-test", max_retries=0)
        client.backend_double = backend  # type: ignore[attr-defined]
        return client

    return make
