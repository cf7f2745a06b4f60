"""LLMClient semantics with the scripted backend: cache, replay, budget, retries, concurrency."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from stepsmith.llm import (
    Budget,
    BudgetExceeded,
    CacheMiss,
    CallStore,
    LLMClient,
    LLMError,
    RetryableError,
)
from stepsmith.llm.testing import ScriptedBackend, echo

MSG = [{"role": "system", "content": "You write STeP."}, {"role": "user", "content": "task: gemm"}]


@pytest.fixture
def store(tmp_path: Path) -> CallStore:
    return CallStore(tmp_path / "calls.db")


def test_cache_distinguishes_samples_and_replays_at_zero_cost(store: CallStore) -> None:
    backend = ScriptedBackend(echo)
    client = LLMClient(backend, store=store, run_id="r1")
    a0 = client.sample_sync(MSG, temperature=0.7, sample_index=0, task="gemm")
    a1 = client.sample_sync(MSG, temperature=0.7, sample_index=1, task="gemm")
    assert len(backend.calls) == 2 and not a0.cached and not a1.cached
    assert a0.text != a1.text  # n samples of one prompt stay distinct
    again = client.sample_sync(MSG, temperature=0.7, sample_index=1, task="gemm")
    assert again.cached and again.text == a1.text and again.cost_usd == 0.0
    assert len(backend.calls) == 2  # served from the store
    assert again.call_id != a1.call_id  # the hit is logged too
    row = store.get(again.call_id)
    assert row["cached"] == 1 and row["cache_source"] == a1.call_id
    # other parameters are other keys
    client.sample_sync(MSG, temperature=1.0, sample_index=1)
    client.sample_sync(MSG, temperature=0.7, sample_index=1, max_tokens=10)
    assert len(backend.calls) == 4


def test_cache_survives_a_new_process_view_of_the_store(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    first = LLMClient(ScriptedBackend(echo), store=CallStore(db), run_id="r")
    text = first.sample_sync(MSG, temperature=0.4, sample_index=3).text
    backend = ScriptedBackend(lambda m, t, i: "different")
    second = LLMClient(backend, store=CallStore(db), run_id="r", cache_mode="replay")
    comp = second.sample_sync(MSG, temperature=0.4, sample_index=3)
    assert comp.cached and comp.text == text and backend.calls == []


def test_refresh_calls_again_and_later_lookups_prefer_the_newest(store: CallStore) -> None:
    answers = iter(["old", "new"])
    backend = ScriptedBackend(lambda m, t, i: next(answers))
    LLMClient(backend, store=store).sample_sync(MSG, temperature=0.7)
    fresh = LLMClient(backend, store=store, cache_mode="refresh").sample_sync(MSG, temperature=0.7)
    assert fresh.text == "new" and not fresh.cached and len(backend.calls) == 2
    assert LLMClient(backend, store=store).sample_sync(MSG, temperature=0.7).text == "new"


def test_replay_miss_raises_and_records_pending(store: CallStore) -> None:
    backend = ScriptedBackend(echo)
    client = LLMClient(backend, store=store, run_id="offline", cache_mode="replay")
    with pytest.raises(CacheMiss) as info:
        client.sample_sync(MSG, temperature=0.7, sample_index=5, task="rope")
    assert "replay mode" in str(info.value) and "rope" in str(info.value)
    assert backend.calls == []
    pending = store.pending("offline")
    assert len(pending) == 1 and pending[0]["messages"] == MSG
    assert pending[0]["sample_index"] == 5
    assert not isinstance(info.value, LLMError)  # must not be swallowed as a sample failure


def test_budget_tokens_stops_before_exceeding(store: CallStore) -> None:
    backend = ScriptedBackend(lambda m, t, i: "x" * 400)  # 100 output tokens
    budget = Budget(max_tokens=1000)
    client = LLMClient(backend, store=store, run_id="b", budget=budget)
    done = 0
    with pytest.raises(BudgetExceeded) as info:
        for i in range(100):
            client.sample_sync(MSG, temperature=0.7, sample_index=i, max_tokens=200)
            done += 1
    assert budget.spent_tokens <= 1000  # never past the limit
    assert done == len(backend.calls) >= 3
    msg = str(info.value)
    assert "--max-tokens is 1000" in msg and str(budget.spent_tokens) in msg
    assert info.value.limit == "max_tokens"
    assert budget.by_task[""]["calls"] == done


def test_cost_budget_refuses_models_without_a_price(store: CallStore) -> None:
    with pytest.raises(LLMError, match="needs a price for openai-compatible:no-such-model-xyz"):
        LLMClient(_PricedUnknown(), store=store, budget=Budget(max_cost_usd=1.0))
    client = LLMClient(_PricedUnknown(), store=store, budget=Budget(max_tokens=10_000))
    comp = client.sample_sync(MSG)
    assert store.get(comp.call_id)["cost_usd"] is None  # unknown, not a fake zero


class _PricedUnknown(ScriptedBackend):
    provider = "openai-compatible"

    def __init__(self) -> None:
        super().__init__(echo, model="no-such-model-xyz")
        self.name = "openai-compatible:no-such-model-xyz"


class _Gpt4o(ScriptedBackend):
    provider = "openai"

    def __init__(self, text: str) -> None:
        super().__init__(lambda m, t, i: text, model="gpt-4o-2024-11-20")
        self.name = "openai:gpt-4o-2024-11-20"


def test_cost_accounting_and_cost_budget(store: CallStore) -> None:
    backend = _Gpt4o("y" * 4000)  # 1000 output tokens = $0.01
    budget = Budget(max_cost_usd=0.05)
    client = LLMClient(backend, store=store, run_id="c", budget=budget)
    comp = client.sample_sync(MSG, temperature=0.7, max_tokens=1000, task="t1")
    expected = (comp.input_tokens * 2.5 + comp.output_tokens * 10.0) / 1e6
    assert comp.cost_usd == pytest.approx(expected) and comp.cost_usd > 0.0099
    with pytest.raises(BudgetExceeded, match=r"--max-cost is \$0.0500"):
        for i in range(1, 20):
            client.sample_sync(MSG, temperature=0.7, max_tokens=1000, sample_index=i, task="t1")
    assert budget.spent_cost_usd <= 0.05
    totals = store.totals("run", run_id="c")[0]
    assert totals["cost_usd"] == pytest.approx(budget.spent_cost_usd)


def test_budget_counts_what_an_interrupted_run_already_spent(store: CallStore) -> None:
    backend = ScriptedBackend(lambda m, t, i: "z" * 400)
    LLMClient(backend, store=store, run_id="resume").sample_sync(MSG, temperature=1.0)
    budget = Budget(max_tokens=10_000)
    LLMClient(backend, store=store, run_id="resume", budget=budget)
    LLMClient(backend, store=store, run_id="resume", budget=budget)  # shared: seeded once
    assert budget.spent_tokens == store.spent("resume")[0] > 100


def test_concurrent_budget_never_overshoots(store: CallStore) -> None:
    backend = ScriptedBackend(lambda m, t, i: "w" * 400, delay_s=0.01)
    budget = Budget(max_tokens=2000)
    client = LLMClient(backend, store=store, budget=budget, concurrency=8)
    reqs = [{"messages": MSG, "temperature": 0.7, "sample_index": i, "max_tokens": 150}
            for i in range(40)]
    results = asyncio.run(client.sample_many(reqs))
    stopped = [r for r in results if isinstance(r, BudgetExceeded)]
    assert stopped and budget.spent_tokens <= 2000
    assert len(results) - len(stopped) == len(backend.calls)


def test_sample_many_bounds_concurrency(store: CallStore) -> None:
    in_flight = 0
    peak = 0

    async def slow(messages, temperature, sample_index):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.02)
        in_flight -= 1
        return f"s{sample_index}"

    client = LLMClient(ScriptedBackend(slow), store=store, concurrency=3)
    out = asyncio.run(client.sample_many(
        [{"messages": MSG, "temperature": 0.7, "sample_index": i} for i in range(12)]))
    assert [c.text for c in out] == [f"s{i}" for i in range(12)]
    assert peak == 3


def test_retryable_errors_are_retried_then_logged(store: CallStore) -> None:
    failures = iter([RetryableError("HTTP 503", status=503), RetryableError("HTTP 503")])

    def flaky(m, t, i):
        err = next(failures, None)
        if err:
            raise err
        return "finally"

    client = LLMClient(ScriptedBackend(flaky), store=store, backoff_base_s=0.001)
    comp = client.sample_sync(MSG, temperature=0.7)
    assert comp.text == "finally" and store.get(comp.call_id)["attempts"] == 3

    def always(m, t, i):
        raise RetryableError("HTTP 503 overloaded")

    client = LLMClient(ScriptedBackend(always), store=store, max_retries=2, backoff_base_s=0.001,
                       run_id="bad")
    with pytest.raises(LLMError, match="gave up after 3 attempts"):
        client.sample_sync(MSG, temperature=0.9)  # not cached: another temperature
    row = store.recent(1, run_id="bad")[0]
    assert row["status"] == "error" and "overloaded" in row["error"] and row["attempts"] == 3


def test_backend_bug_becomes_a_clear_llm_error(store: CallStore) -> None:
    client = LLMClient(ScriptedBackend(lambda m, t, i: 42), store=store)
    with pytest.raises(LLMError, match="must return a str; returned int"):
        client.sample_sync(MSG)


@pytest.mark.parametrize(
    ("messages", "needle"),
    [
        ([], "non-empty list"),
        ([{"role": "robot", "content": "x"}], "messages[0]['role']"),
        ([{"role": "user", "content": 3}], "messages[0]['content'] must be a string"),
        ("hello", "non-empty list"),
    ],
)
def test_bad_messages_are_named(store: CallStore, messages, needle: str) -> None:
    client = LLMClient(ScriptedBackend(echo), store=store)
    with pytest.raises(ValueError) as info:
        client.sample_sync(messages)
    assert needle in str(info.value)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="cache_mode must be one of"):
        LLMClient(ScriptedBackend(echo), cache_mode="sometimes")
    with pytest.raises(LLMError, match="unknown provider 'gpt'"):
        LLMClient("gpt:4")
    with pytest.raises(LLMError, match="PROVIDER:MODEL"):
        LLMClient("gpt-4o")


def test_sample_sync_inside_a_loop_is_refused() -> None:
    client = LLMClient(ScriptedBackend(echo))

    async def inner():
        client.sample_sync(MSG)

    with pytest.raises(RuntimeError, match="await client.sample"):
        asyncio.run(inner())


def test_cancellation_stops_promptly_and_logs_nothing_half_done(store: CallStore) -> None:
    # the answers would take a minute: had cancellation waited for them, they would be logged
    backend = ScriptedBackend(echo, delay_s=60.0)
    client = LLMClient(backend, store=store, concurrency=2)

    async def main():
        task = asyncio.create_task(client.sample_many(
            [{"messages": MSG, "temperature": 0.7, "sample_index": i} for i in range(6)]))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert len(backend.calls) == 2  # the other four never started
    assert store.recent(10) == []


def test_without_a_store_caching_is_in_memory() -> None:
    backend = ScriptedBackend(echo)
    client = LLMClient(backend)
    client.sample_sync(MSG, temperature=0.7)
    assert client.sample_sync(MSG, temperature=0.7).cached and len(backend.calls) == 1
