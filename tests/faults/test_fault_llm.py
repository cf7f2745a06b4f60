"""Hostile or broken model servers: impossible usage, slow drips, hangs, echoed keys."""

from __future__ import annotations

import importlib.util
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stepsmith.llm import CallStore, LLMClient, LLMError

_FAKE = Path(__file__).resolve().parents[1] / "llm" / "llm_fake_server.py"
_spec = importlib.util.spec_from_file_location("faults_llm_fake_server", _FAKE)
assert _spec is not None and _spec.loader is not None
fake = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = fake  # dataclasses look their module up while it is executing
_spec.loader.exec_module(fake)

MSG = [{"role": "user", "content": "hello"}]


@pytest.fixture
def server() -> Iterator[object]:
    srv = fake.FakeLLMServer()
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def no_user_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("STEPSMITH_CALL_DEADLINE_S", raising=False)


def client(url: str, **kw: object) -> LLMClient:
    kw.setdefault("backoff_base_s", 0.01)
    return LLMClient(f"openai-compatible:m@{url}/v1", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("usage", [{"completion_tokens": -500}, {"prompt_tokens": -1},
                                   {"completion_tokens": 10**9}, {"completion_tokens": "lots"}])
def test_impossible_usage_is_a_server_error(server, usage: dict) -> None:  # noqa: ANN001
    server.push(*[fake.Reply(usage_extra=usage)] * 3)
    with pytest.raises(LLMError, match="server reported") as info:
        client(server.url, max_retries=2).sample_sync(MSG, max_tokens=64)
    assert info.value.attempts == 3 and len(server.requests) == 3


def test_negative_usage_cannot_refund_a_token_budget(server) -> None:  # noqa: ANN001
    from stepsmith.llm import Budget

    server.push(*[fake.Reply(usage_extra={"completion_tokens": -10_000})] * 5)
    c = client(server.url, max_retries=0, budget=Budget(max_tokens=10_000))
    for _ in range(5):
        with pytest.raises(LLMError):
            c.sample_sync(MSG, max_tokens=64)
    assert c.budget is not None and c.budget.spent_tokens >= 0  # nothing was charged negative


def test_the_call_deadline_bounds_all_retries(server) -> None:  # noqa: ANN001
    server.push(*[fake.Reply(delay_s=3.0)] * 3)
    c = client(server.url, timeout_s=30, max_retries=5, call_deadline_s=0.5)
    with pytest.raises(LLMError, match="call deadline 0.5 s"):
        c.sample_sync(MSG)
    assert len(server.requests) == 1  # no retry started after the deadline


def test_call_deadline_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from stepsmith.llm._http_errors import DEFAULT_CALL_DEADLINE_S, call_deadline_s

    assert call_deadline_s() == DEFAULT_CALL_DEADLINE_S
    monkeypatch.setenv("STEPSMITH_CALL_DEADLINE_S", "42")
    assert call_deadline_s() == 42.0 and call_deadline_s(7) == 7.0
    monkeypatch.setenv("STEPSMITH_CALL_DEADLINE_S", "soon")
    with pytest.raises(LLMError, match="STEPSMITH_CALL_DEADLINE_S"):
        call_deadline_s()
    with pytest.raises(LLMError, match="positive"):
        call_deadline_s(0)


class _DripServer:
    """Sends a valid response one byte at a time: every read succeeds, the answer never ends."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.interval_s = interval_s
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        body = b'{"choices": []}' + b" " * 10_000
        try:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         + f"Content-Length: {len(body)}\r\n\r\n".encode())
            for byte in body:
                if self.stop.is_set():
                    break
                conn.sendall(bytes([byte]))
                time.sleep(self.interval_s)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def test_a_slow_drip_is_cut_off_per_attempt() -> None:
    drip = _DripServer()
    try:
        c = client(drip.url, timeout_s=1.0, max_retries=0)
        with pytest.raises(LLMError, match="no complete response within 1 s"):
            c.sample_sync(MSG)
    finally:
        drip.close()


def test_an_echoed_api_key_is_not_stored(server, tmp_path: Path) -> None:  # noqa: ANN001
    key = "test-key-0123456789abcdef"
    server.push(fake.Reply(text=f"my key is {key}, here: impl: |-\n  return X"))
    store = CallStore(tmp_path / "calls.db")
    comp = client(server.url, api_key=key, store=store).sample_sync(MSG)
    assert key not in comp.text and "[REDACTED]" in comp.text
    assert key not in (store.recent(1)[0]["response"] or "")


def test_answer_with_a_lone_surrogate_is_stored(server, tmp_path: Path) -> None:  # noqa: ANN001
    server.push(fake.Reply(body={"choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": "x = '\ud800'"}}]}))
    store = CallStore(tmp_path / "calls.db")
    comp = client(server.url, store=store).sample_sync(MSG)
    assert "\ud800" not in comp.text and store.recent(1)[0]["status"] == "ok"
