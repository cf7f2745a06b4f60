"""A real HTTP server on 127.0.0.1 speaking the OpenAI and Anthropic wire protocols.

Tests push scripted replies (`server.push(...)`); when the queue is empty the server answers
normally by echoing the last user message. Every request is recorded (path, headers, body).
Bounded: it only ever serves loopback, threads are daemons, and `close()` stops it.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict → JSON; str → raw text (malformed JSON tests); None → normal answer
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    text: str | None = None  # normal answer with this text
    usage: bool = True
    # provider prompt-cache numbers for a normal answer (None: the field is not sent)
    input_tokens: int | None = None  # OpenAI prompt_tokens / Anthropic uncached input_tokens
    cache_read_tokens: int | None = None  # OpenAI cached_tokens / Anthropic cache_read_...
    cache_write_tokens: int | None = None  # Anthropic cache_creation_input_tokens
    usage_extra: dict[str, Any] = field(default_factory=dict)  # merged into usage as is


def openai_body(req: dict, text: str, reply: Reply) -> dict:
    body: dict[str, Any] = {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": req.get("model", "m"),
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
    }
    if reply.usage:
        prompt = 11 if reply.input_tokens is None else reply.input_tokens
        body["usage"] = {"prompt_tokens": prompt, "completion_tokens": 7,
                         "total_tokens": prompt + 7}
        if reply.cache_read_tokens is not None:
            body["usage"]["prompt_tokens_details"] = {"cached_tokens": reply.cache_read_tokens}
        body["usage"].update(reply.usage_extra)
    return body


def anthropic_body(req: dict, text: str, reply: Reply) -> dict:
    body: dict[str, Any] = {
        "id": "msg_test",
        "type": "message",
        "role": "assistant",
        "model": req.get("model", "m"),
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
    }
    if reply.usage:
        body["usage"] = {"input_tokens": 13 if reply.input_tokens is None else reply.input_tokens,
                         "output_tokens": 5}
        if reply.cache_read_tokens is not None:
            body["usage"]["cache_read_input_tokens"] = reply.cache_read_tokens
        if reply.cache_write_tokens is not None:
            body["usage"]["cache_creation_input_tokens"] = reply.cache_write_tokens
        body["usage"].update(reply.usage_extra)
    return body


class FakeLLMServer:
    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                length = int(self.headers.get("content-length", 0))
                raw = self.rfile.read(length)
                try:
                    req = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    req = {"_raw": raw.decode(errors="replace")}
                with server.lock:
                    server.requests.append(
                        {"path": self.path, "headers": dict(self.headers), "body": req,
                         "time": time.monotonic()}
                    )
                    reply = server.replies.popleft() if server.replies else Reply()
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                if reply.body is None:
                    last = next(
                        (m["content"] for m in reversed(req.get("messages", []))
                         if m.get("role") == "user"), ""
                    )
                    text = reply.text if reply.text is not None else f"echo: {last}"
                    make = anthropic_body if self.path.endswith("/messages") else openai_body
                    payload = json.dumps(make(req, text, reply)).encode()
                elif isinstance(reply.body, str):
                    payload = reply.body.encode()
                else:
                    payload = json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def push(self, *replies: Reply) -> None:
        with self.lock:
            self.replies.extend(replies)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# -- fixtures shared by tests/llm and tests/cli (imported by their conftest files) ------------

from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    srv = FakeLLMServer()
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Never touch the user's ~/.stepsmith or real keys in tests."""
    home = tmp_path / "home"
    monkeypatch.setenv("STEPSMITH_HOME", str(home))
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL",
                 "STEPSMITH_OPENAI_COMPATIBLE_BASE_URL", "STEPSMITH_OPENAI_COMPATIBLE_API_KEY",
                 "STEPSMITH_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    return home
