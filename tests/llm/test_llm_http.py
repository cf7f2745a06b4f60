"""Real SDKs against a real loopback HTTP server speaking both wire protocols."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from llm_fake_server import FakeLLMServer, Reply

from stepsmith.llm import CallStore, LLMClient, LLMError

MSG = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]
KEY = "sk-test-SECRETSECRET0123456789"


def compat(server: FakeLLMServer, **kw) -> LLMClient:
    kw.setdefault("backoff_base_s", 0.01)
    return LLMClient(f"openai-compatible:qwen-coder@{server.url}/v1", **kw)


def test_openai_compatible_success_sends_what_servers_accept(server: FakeLLMServer) -> None:
    comp = compat(server).sample_sync(MSG, temperature=0.4, max_tokens=77)
    assert comp.text == "echo: hello" and comp.input_tokens == 11 and comp.output_tokens == 7
    assert comp.finish_reason == "stop" and not comp.usage_estimated
    req = server.requests[0]
    assert req["path"] == "/v1/chat/completions"
    assert req["body"] == {"model": "qwen-coder", "messages": MSG, "max_tokens": 77,
                           "temperature": 0.4}


def test_openai_compatible_honours_env_base_url_and_key(server: FakeLLMServer, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", f"{server.url}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    LLMClient("openai-compatible:m").sample_sync(MSG)
    assert server.requests[0]["headers"]["authorization"] == f"Bearer {KEY}"
    assert "temperature" not in server.requests[0]["body"]  # None = the server's default


def test_openai_reasoning_models_get_their_own_parameters(server: FakeLLMServer,
                                                          monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", f"{server.url}/v1")
    LLMClient("openai:o3-mini").sample_sync(MSG, temperature=0.7, max_tokens=50)
    body = server.requests[-1]["body"]
    assert "temperature" not in body and "max_tokens" not in body
    assert body["max_completion_tokens"] == 50
    assert body["messages"][0] == {"role": "developer", "content": "Be brief."}
    LLMClient("openai:o1-mini").sample_sync(MSG, temperature=0.7)
    assert server.requests[-1]["body"]["messages"] == [
        {"role": "user", "content": "Be brief.\n\nhello"}]
    LLMClient("openai:gpt-4o-2024-11-20").sample_sync(MSG, temperature=0.7, max_tokens=50)
    body = server.requests[-1]["body"]
    assert body["temperature"] == 0.7 and body["max_tokens"] == 50


def test_429_with_retry_after_is_honoured(server: FakeLLMServer) -> None:
    server.push(Reply(status=429, body={"error": {"message": "slow down"}},
                      headers={"retry-after": "0.4"}))
    comp = compat(server).sample_sync(MSG)
    assert comp.text == "echo: hello"
    assert len(server.requests) == 2
    gap = server.requests[1]["time"] - server.requests[0]["time"]
    assert gap >= 0.4  # waited at least as long as asked (an upper bound would flake when busy)


def test_500s_are_retried_with_a_bound(server: FakeLLMServer, tmp_path: Path) -> None:
    server.push(Reply(status=500, body={"error": {"message": "boom"}}),
                Reply(status=502, body={"error": {"message": "bad gateway"}}))
    assert compat(server).sample_sync(MSG).text == "echo: hello"
    assert len(server.requests) == 3
    server.push(*[Reply(status=500, body={"error": {"message": "still down"}})] * 3)
    store = CallStore(tmp_path / "db")
    with pytest.raises(LLMError) as info:
        compat(server, max_retries=2, store=store).sample_sync(MSG, temperature=1.0)
    assert "HTTP 500" in str(info.value) and "gave up after 3 attempts" in str(info.value)
    assert len(server.requests) == 6
    assert store.recent(1)[0]["status"] == "error"


def test_slow_responses_time_out(server: FakeLLMServer) -> None:
    # replies slower than the timeout would succeed if it were not applied
    server.push(Reply(delay_s=3.0), Reply(delay_s=3.0))
    with pytest.raises(LLMError, match="timed out.*gave up after 2 attempts"):
        compat(server, timeout_s=0.5, max_retries=1).sample_sync(MSG)


def test_malformed_json_is_retried_then_reported(server: FakeLLMServer) -> None:
    server.push(Reply(body="{not json"))
    assert compat(server).sample_sync(MSG).text == "echo: hello"
    server.push(Reply(body="<html>proxy error"), Reply(body="<html>proxy error"))
    with pytest.raises(LLMError, match="malformed response body"):
        compat(server, max_retries=1).sample_sync(MSG, temperature=0.3)


def test_missing_usage_is_estimated_and_flagged(server: FakeLLMServer, tmp_path: Path) -> None:
    server.push(Reply(usage=False, text="x" * 40))
    store = CallStore(tmp_path / "db")
    comp = compat(server, store=store).sample_sync(MSG)
    assert comp.usage_estimated and comp.output_tokens == 10 and comp.input_tokens > 0
    assert store.get(comp.call_id)["usage_estimated"] == 1


def test_keys_never_reach_errors_or_the_log(server: FakeLLMServer, tmp_path: Path,
                                            monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", f"{server.url}/v1")
    server.push(Reply(status=401, body={"error": {"message": f"Incorrect API key: {KEY}"}}))
    db = tmp_path / "db"
    with pytest.raises(LLMError) as info:
        LLMClient("openai:gpt-4o", store=CallStore(db), max_retries=0).sample_sync(MSG)
    assert KEY not in str(info.value) and "[REDACTED]" in str(info.value)
    assert "HTTP 401" in str(info.value) and "API key" in str(info.value)
    assert server.requests[0]["headers"]["authorization"] == f"Bearer {KEY}"  # it was sent
    raw = db.read_bytes() + (db.with_name("db-wal").read_bytes()
                             if db.with_name("db-wal").exists() else b"")
    assert KEY.encode() not in raw and b"Incorrect API key" in raw


def test_missing_keys_are_explained() -> None:
    with pytest.raises(LLMError, match="no API key; set OPENAI_API_KEY"):
        LLMClient("openai:gpt-4o")
    with pytest.raises(LLMError, match="no API key; set ANTHROPIC_API_KEY"):
        LLMClient("anthropic:claude-3-5-sonnet-20241022")
    with pytest.raises(LLMError, match="no base URL; set OPENAI_BASE_URL"):
        LLMClient("openai-compatible:m")


@pytest.fixture
def claude(server: FakeLLMServer, monkeypatch) -> LLMClient:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
    return LLMClient("anthropic:claude-3-5-sonnet-20241022", backoff_base_s=0.01)


def test_anthropic_success_and_wire_format(server: FakeLLMServer, claude: LLMClient) -> None:
    comp = claude.sample_sync(MSG, temperature=0.7, max_tokens=64)
    assert comp.text == "echo: hello" and (comp.input_tokens, comp.output_tokens) == (13, 5)
    assert comp.finish_reason == "stop"
    assert comp.cost_usd == pytest.approx((13 * 3 + 5 * 15) / 1e6)
    req = server.requests[0]
    assert req["path"] == "/v1/messages"
    assert req["body"]["system"] == [{"type": "text", "text": "Be brief.",
                                      "cache_control": {"type": "ephemeral"}}]
    assert req["body"]["messages"] == [{"role": "user", "content": "hello"}]
    assert req["body"]["temperature"] == 0.7 and req["body"]["max_tokens"] == 64


def test_anthropic_retry_after_and_overload(server: FakeLLMServer, claude: LLMClient) -> None:
    server.push(Reply(status=429, body={"type": "error", "error": {"type": "rate_limit_error",
                                                                   "message": "slow"}},
                      headers={"retry-after": "0.3"}),
                Reply(status=529, body={"type": "error", "error": {"type": "overloaded_error",
                                                                   "message": "busy"}}))
    assert claude.sample_sync(MSG).text == "echo: hello"
    assert len(server.requests) == 3
    assert server.requests[1]["time"] - server.requests[0]["time"] >= 0.3


def test_anthropic_missing_usage_malformed_and_bad_temperature(server: FakeLLMServer,
                                                               claude: LLMClient) -> None:
    server.push(Reply(usage=False))
    assert claude.sample_sync(MSG).usage_estimated
    server.push(Reply(body="nope"), Reply(body="nope"))
    with pytest.raises(LLMError, match="malformed"):
        LLMClient(claude.backend, max_retries=1, backoff_base_s=0.01).sample_sync(
            MSG, temperature=0.2)
    with pytest.raises(LLMError, match=r"temperature must be in \[0, 1\].*found 1.5"):
        claude.sample_sync(MSG, temperature=1.5)


def test_concurrent_http_calls(server: FakeLLMServer) -> None:
    import asyncio

    server.push(*[Reply(delay_s=0.2)] * 8)
    client = compat(server, concurrency=4)
    t0 = time.perf_counter()
    out = asyncio.run(client.sample_many(
        [{"messages": MSG, "temperature": 0.7, "sample_index": i} for i in range(8)]))
    elapsed = time.perf_counter() - t0
    assert all(c.text == "echo: hello" for c in out) and len(server.requests) == 8
    assert 0.4 <= elapsed < 1.5  # two waves of four, not eight in a row


def test_config_file_supplies_url_and_key_and_the_key_is_redacted(
        server: FakeLLMServer, isolated_home: Path) -> None:
    isolated_home.mkdir(parents=True)
    (isolated_home / "config.toml").write_text(
        f'[openai-compatible]\nbase_url = "{server.url}/v1"\napi_key = "cfg-key-0123456789"\n')
    server.push(Reply(status=403, body={"error": {"message": "key cfg-key-0123456789 denied"}}))
    with pytest.raises(LLMError) as info:
        LLMClient("openai-compatible:m", max_retries=0).sample_sync(MSG)
    assert server.requests[0]["headers"]["authorization"] == "Bearer cfg-key-0123456789"
    assert "cfg-key-0123456789" not in str(info.value) and "HTTP 403" in str(info.value)


def test_ctrl_c_stops_many_inflight_requests_promptly(server: FakeLLMServer,
                                                      tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    script = (
        "import asyncio, signal, sys\n"
        # a terminal's Ctrl-C; a shell's background job would start with SIGINT ignored
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "from stepsmith.llm import LLMClient, CallStore\n"
        f"c = LLMClient('openai-compatible:m@{server.url}/v1', concurrency=4,"
        f" store=CallStore(r'{tmp_path / 'db'}'))\n"
        "reqs = [{'messages': [{'role': 'user', 'content': 'x'}], 'sample_index': i}"
        " for i in range(16)]\n"
        "print('start', flush=True)\n"
        "asyncio.run(c.sample_many(reqs))\n"
    )
    # replies take far longer than the wait below: exiting at all proves the in-flight requests
    # were abandoned, without timing how fast (no wall-clock bound on a busy machine)
    server.push(*[Reply(delay_s=600.0)] * 16)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "start"
    deadline = time.monotonic() + 10
    while len(server.requests) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(server.requests) == 4  # bounded concurrency: four in flight
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    assert proc.returncode != 0 and "KeyboardInterrupt" in proc.stderr.read()
    assert len(server.requests) == 4  # nothing new was started after Ctrl-C
