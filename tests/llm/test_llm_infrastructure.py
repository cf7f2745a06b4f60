"""Which call failures mean "could not ask the model" (run-stopping) and which are one sample's."""

from __future__ import annotations

import socket

import pytest
from llm_fake_server import FakeLLMServer, Reply

from stepsmith.llm import InfrastructureError, LLMClient, LLMError

MSG = [{"role": "user", "content": "hello"}]


def _client(url: str, **kw) -> LLMClient:
    return LLMClient(f"openai-compatible:m@{url}/v1", backoff_base_s=0.001, **kw)


@pytest.mark.parametrize("status", [401, 403, 404])
def test_auth_and_url_statuses_are_infrastructure_naming_the_url(server: FakeLLMServer, status: int) -> None:
    server.push(Reply(status=status, body={"error": {"message": "nope"}}))
    with pytest.raises(InfrastructureError) as info:
        _client(server.url, max_retries=3).sample_sync(MSG)
    assert f"{server.url}/v1" in str(info.value) and f"HTTP {status}" in str(info.value)
    assert info.value.endpoint == f"{server.url}/v1" and len(server.requests) == 1  # no retries


def test_connection_refused_after_retries_names_the_url() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(InfrastructureError, match=rf"127\.0\.0\.1:{port}/v1.*connection failed.*gave up after 2"):
        _client(f"http://127.0.0.1:{port}", max_retries=1).sample_sync(MSG)


def test_server_errors_after_retries_are_infrastructure(server: FakeLLMServer) -> None:
    server.push(*[Reply(status=500, body={"error": {"message": "boom"}})] * 2)
    with pytest.raises(InfrastructureError, match="HTTP 500"):
        _client(server.url, max_retries=1).sample_sync(MSG)


def test_a_bad_request_is_one_failed_call_not_infrastructure(server: FakeLLMServer) -> None:
    server.push(Reply(status=400, body={"error": {"message": "context length exceeded"}}))
    with pytest.raises(LLMError) as info:
        _client(server.url).sample_sync(MSG)
    assert not isinstance(info.value, InfrastructureError) and "HTTP 400" in str(info.value)
