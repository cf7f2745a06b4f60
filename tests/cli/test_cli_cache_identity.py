"""The call cache knows which server answered: another server behind one model name is a miss."""

from __future__ import annotations

from pathlib import Path

from llm_fake_server import FakeLLMServer, Reply
from typer.testing import CliRunner

from stepsmith.cli import app
from stepsmith.llm.store import cache_key


def _ask(url: str, db: Path):
    return CliRunner().invoke(app, ["ask", "--model", "openai-compatible:same-name", "--base-url",
                                    f"{url}/v1", "--db", str(db), "hello"])


def test_a_changed_server_is_a_cache_miss_and_the_same_server_a_hit(server: FakeLLMServer,
                                                                   tmp_path: Path) -> None:
    other = FakeLLMServer()
    try:
        db = tmp_path / "db.sqlite"
        server.push(Reply(text="from A"))
        other.push(Reply(text="from B"))
        first = _ask(server.url, db)
        assert first.exit_code == 0 and "from A" in first.output
        swapped = _ask(other.url, db)
        assert swapped.exit_code == 0 and "from B" in swapped.output  # not A's cached answer
        again = _ask(server.url, db)
        assert again.exit_code == 0 and "from A" in again.output
        assert len(server.requests) == 1 and len(other.requests) == 1  # the repeat was a hit
    finally:
        other.close()


def test_cache_key_takes_extra_identity_fields_and_ignores_empty_ones() -> None:
    msgs = [{"role": "user", "content": "x"}]
    base = cache_key("m", msgs, {}, 0)
    assert cache_key("m", msgs, {}, 0, {}) == base == cache_key("m", msgs, {}, 0, {"base_url": None})
    a = cache_key("m", msgs, {}, 0, {"base_url": "http://a/v1"})
    assert a != base and a != cache_key("m", msgs, {}, 0, {"base_url": "http://b/v1"})
    assert cache_key("m", msgs, {}, 0, {"base_url": "http://a/v1", "constraint": "grammar"}) != a
