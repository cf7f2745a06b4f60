"""End to end with the real local 0.5B model (slow; CI runs it after .ci/install_local.sh)."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import time
from pathlib import Path

import pytest

from stepsmith.llm import CallStore, LLMClient, ModelNotInstalled, ensure_model
from stepsmith.llm.config import models_dir
from stepsmith.llm.models import DEFAULT_LOCAL_MODEL

pytestmark = pytest.mark.slow
REAL_MODELS_DIR = models_dir()  # read at import, before the autouse fixture isolates the home


@pytest.fixture(scope="module")
def model_path() -> Path:
    """The assembled default model; in CI a missing install is a failure, locally a skip."""
    problem = None
    if importlib.util.find_spec("llama_cpp") is None:
        problem = "llama-cpp-python is not installed (run .ci/install_local.sh)"
    else:
        try:
            return ensure_model(DEFAULT_LOCAL_MODEL, REAL_MODELS_DIR)
        except ModelNotInstalled as exc:
            problem = str(exc)
    if os.environ.get("CI"):
        pytest.fail(problem)
    pytest.skip(problem)


@pytest.fixture
def client(model_path: Path, tmp_path: Path) -> LLMClient:
    return LLMClient(f"llamacpp:{model_path}", store=CallStore(tmp_path / "db"), run_id="local")


def test_local_model_loads_and_answers(client: LLMClient) -> None:
    t0 = time.perf_counter()
    comp = client.sample_sync(
        [{"role": "user", "content": "What is 2 + 3? Answer with only the number."}],
        temperature=0.0, max_tokens=8)
    assert "5" in comp.text, comp.text
    assert comp.input_tokens > 10 and 0 < comp.output_tokens <= 8
    assert comp.finish_reason in ("stop", "length") and comp.cost_usd == 0.0
    print(f"load {client.backend.load_seconds:.2f}s, first answer {time.perf_counter() - t0:.2f}s")
    again = client.sample_sync(
        [{"role": "user", "content": "What is 2 + 3? Answer with only the number."}],
        temperature=0.0, max_tokens=8)
    assert again.cached and again.text == comp.text


def test_sampling_is_reproducible_per_sample_index(client: LLMClient, model_path: Path,
                                                   tmp_path: Path) -> None:
    msgs = [{"role": "user", "content": "Name a random animal and a colour."}]
    fresh = LLMClient(f"llamacpp:{model_path}", store=CallStore(tmp_path / "db2"),
                      cache_mode="refresh")
    texts = {i: fresh.sample_sync(msgs, temperature=1.0, max_tokens=12, sample_index=i).text
             for i in range(3)}
    assert fresh.sample_sync(msgs, temperature=1.0, max_tokens=12, sample_index=1).text == texts[1]
    assert len(set(texts.values())) >= 2, texts


def test_cancel_stops_generation_promptly(client: LLMClient) -> None:
    """Cancelling (what Ctrl-C does) ends the worker thread at its next token."""
    msgs = [{"role": "user", "content": "Write a very long essay about dataflow hardware."}]
    backend = client.backend

    async def main() -> None:
        task = asyncio.create_task(client.sample(msgs, temperature=0.0, max_tokens=1000))
        while backend.tokens_sampled < 3:  # generating (prompt evaluation is not interruptible)
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # the next call waits for the model lock, i.e. for the cancelled worker to stop
        await client.sample([{"role": "user", "content": "Say hi."}], temperature=0.0,
                            max_tokens=1)

    stopped_at = []
    original = backend._generate

    def spy(*args, **kwargs):
        try:
            return original(*args, **kwargs)
        finally:
            stopped_at.append(backend.tokens_sampled)

    backend._generate = spy
    asyncio.run(main())
    assert len(stopped_at) == 2 and stopped_at[0] < 100  # of 1000 allowed
    assert client.store.recent(5, status="ok")[0]["output_tokens"] == 1


def test_alternating_prompts_reuse_saved_states_without_hoarding_logits(
        client: LLMClient) -> None:
    from stepsmith.llm.backend_llamacpp import load_llama

    a = [{"role": "system", "content": "You write STeP. " * 40}, {"role": "user", "content": "a"}]
    b = [{"role": "system", "content": "You check rules. " * 40}, {"role": "user", "content": "b"}]
    for msgs in (a, b, a):
        client.sample_sync(msgs, temperature=0.0, max_tokens=2)
    llm = load_llama(client.backend.path)[0]
    states = list(llm.cache.cache_state.values())
    assert len(states) >= 2
    assert all(s.scores.shape[0] == 1 for s in states)  # not n_batch x 152k floats each
    assert llm.cache.cache_size <= 1024 << 20
