"""Small pure pieces: spec parsing, prices, redaction, Retry-After, backoff, request bodies."""

from __future__ import annotations

import email.utils
import time

import pytest

from stepsmith.llm import LLMClient, LLMError, parse_spec, price_for
from stepsmith.llm._http_errors import parse_retry_after
from stepsmith.llm.backend_llamacpp import DEFAULT_SEED_BASE, seed_base_setting, seed_for
from stepsmith.llm.backend_openai import build_request, is_reasoning_model
from stepsmith.llm.budget import Budget
from stepsmith.llm.redact import redact
from stepsmith.llm.testing import ScriptedBackend, echo


def test_parse_spec_forms() -> None:
    assert parse_spec("openai:gpt-4o-2024-11-20") == ("openai", "gpt-4o-2024-11-20", None)
    assert parse_spec("openai-compatible:meta-llama/Llama-3.1-405B@http://h:8000/v1") == (
        "openai-compatible", "meta-llama/Llama-3.1-405B", "http://h:8000/v1")
    assert parse_spec("llamacpp:/models/x.gguf") == ("llamacpp", "/models/x.gguf", None)
    with pytest.raises(LLMError, match="the model name after anthropic: is empty"):
        parse_spec("anthropic:")


def test_price_table_and_config_override(isolated_home) -> None:
    assert price_for("openai:gpt-4o-2024-11-20").input_per_m == 2.5
    assert price_for("anthropic:claude-3-5-sonnet-20241022").output_per_m == 15.0
    assert price_for("openai:gpt-4o-mini-2024-07-18").input_per_m == 0.15  # longest prefix
    assert price_for("llamacpp:qwen2.5-coder-0.5b").cost(10**6, 10**6) == 0.0
    assert price_for("openai-compatible:my-finetune") is None
    isolated_home.mkdir(parents=True)
    (isolated_home / "config.toml").write_text(
        '[prices."openai-compatible:my-finetune"]\ninput = 1.0\noutput = 2.0\n'
        '[prices."gpt-4o-2024-11-20"]\ninput = 9\noutput = 9\n')
    assert price_for("openai-compatible:my-finetune").cost(10**6, 10**6) == pytest.approx(3.0)
    assert price_for("openai:gpt-4o-2024-11-20").input_per_m == 9.0
    (isolated_home / "config.toml").write_text('[prices."x"]\ninput = "cheap"\n')
    with pytest.raises(ValueError, match=r"config \[prices.\"x\"\] needs numeric"):
        price_for("openai:x")


def test_redaction(monkeypatch) -> None:
    monkeypatch.setenv("TOGETHER_API_KEY", "tg-0123456789abcdef")
    text = ("key sk-proj-AbCdEf0123456789 and Bearer abcdefghijklmnop and tg-0123456789abcdef "
            "at https://user:pw@host/v1 api_key=hunter2hunter2")
    out = redact(text)
    for secret in ("sk-proj-AbCdEf0123456789", "abcdefghijklmnop", "tg-0123456789abcdef",
                   "user:pw", "hunter2hunter2"):
        assert secret not in out
    assert out.count("[REDACTED]") == 5 and redact("plain words") == "plain words"


def test_retry_after_parsing() -> None:
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert parse_retry_after({"retry-after": "99999"}) == 120.0  # bounded
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= parse_retry_after({"retry-after": future}) <= 31
    assert parse_retry_after({}) is None and parse_retry_after(None) is None


def test_backoff_is_exponential_jittered_and_bounded() -> None:
    client = LLMClient(ScriptedBackend(echo), backoff_base_s=1.0, backoff_max_s=8.0)
    for attempt, cap in [(0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0), (7, 8.0)]:
        delays = [client.backoff_delay(attempt, None) for _ in range(50)]
        assert all(cap / 2 <= d <= cap for d in delays) and len(set(delays)) > 1
    assert 3.0 <= client.backoff_delay(0, 3.0) <= 3.31  # Retry-After is a floor


def test_openai_request_bodies() -> None:
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    assert is_reasoning_model("o1") and is_reasoning_model("o3-mini-2025-01-31")
    assert not is_reasoning_model("gpt-4o") and not is_reasoning_model("omni-model")
    body = build_request("o3-mini", msgs, {"temperature": 1.0, "max_tokens": 9}, official=True)
    assert body == {"model": "o3-mini", "max_completion_tokens": 9,
                    "messages": [{"role": "developer", "content": "s"}, msgs[1]]}
    # a self-hosted server named o1 keeps the classic parameters
    body = build_request("o1", msgs, {"temperature": 0.5, "max_tokens": 9}, official=False)
    assert body["temperature"] == 0.5 and body["max_tokens"] == 9


def test_local_seed_depends_only_on_the_sample_index() -> None:
    assert seed_for(0) == seed_for(0) and seed_for(0) != seed_for(1)
    assert len({seed_for(i) for i in range(1000)}) == 1000


def test_another_seed_base_repeats_a_run_independently_and_is_a_cache_miss(monkeypatch) -> None:
    from stepsmith.llm.store import cache_key, server_identity

    monkeypatch.delenv("STEPSMITH_LLAMACPP_SEED", raising=False)
    assert seed_base_setting() == DEFAULT_SEED_BASE
    monkeypatch.setenv("STEPSMITH_LLAMACPP_SEED", "42")
    assert seed_base_setting() == 42 and seed_for(3, 42) != seed_for(3)
    monkeypatch.setenv("STEPSMITH_LLAMACPP_SEED", "forty-two")
    with pytest.raises(LLMError, match="STEPSMITH_LLAMACPP_SEED must be an integer"):
        seed_base_setting()

    class Local:  # what LlamaCppBackend exposes to the cache key
        def __init__(self, identity: dict[str, str]) -> None:
            self.cache_identity = identity

    msgs = [{"role": "user", "content": "hi"}]
    default, other = server_identity(Local({})), server_identity(Local({"seed_base": "42"}))
    assert default == {} and other == {"seed_base": "42"}
    # the default keeps the keys runs always had; another base never replays their answers
    assert cache_key("llamacpp:m", msgs, {}, 0, default) == cache_key("llamacpp:m", msgs, {}, 0)
    assert cache_key("llamacpp:m", msgs, {}, 0, other) != cache_key("llamacpp:m", msgs, {}, 0)


def test_budget_summary_and_release() -> None:
    b = Budget(max_tokens=100)
    b.reserve(60, 0.0)
    with pytest.raises(Exception, match="60 reserved"):
        b.reserve(50, 0.0)
    b.release(60, 0.0)
    b.charge(30, 0.0, task="t")
    assert b.summary() == "spent $0.0000, 30 tokens of 100"


def test_local_thread_choice_backs_off_when_the_cpu_is_shared(monkeypatch) -> None:
    from stepsmith.llm import backend_llamacpp as L

    assert L.others_running(samples=2, interval_s=0.0) >= 0  # reads the real /proc/loadavg
    monkeypatch.setattr(L, "THREADS_SETTING", "auto")
    monkeypatch.setattr(L.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(L, "others_running", lambda: 0)
    assert L.choose_threads() == 2
    monkeypatch.setattr(L, "others_running", lambda: 3)
    assert L.choose_threads() == 1
    monkeypatch.setattr(L, "THREADS_SETTING", "2")
    monkeypatch.setattr(L, "N_THREADS", 2)
    assert L.choose_threads() == 2


def test_loaded_models_are_closed_at_exit_unless_a_decode_holds_them(monkeypatch) -> None:
    """`_close_models` (registered with atexit on the first load) frees every loaded model
    while llama_cpp is still importable, and skips one whose lock a decode still holds."""
    import threading

    from stepsmith.llm import backend_llamacpp as B

    class FakeLlama:
        def __init__(self) -> None:
            self.closed = 0

        def close(self) -> None:
            self.closed += 1

    idle, busy = FakeLlama(), FakeLlama()
    busy_lock = threading.Lock()
    busy_lock.acquire()
    monkeypatch.setattr(B, "_MODELS", {"idle": (idle, threading.Lock(), 0.1),
                                       "busy": (busy, busy_lock, 0.1)})
    monkeypatch.setattr(B, "CLOSE_WAIT_S", 0.05)
    B._close_models()
    assert idle.closed == 1 and busy.closed == 0 and B._MODELS == {}
    assert not busy_lock.acquire(blocking=False)  # still held by the "decode"
