from __future__ import annotations

from llm_fake_server import isolated_home, server  # noqa: F401  (shared fixtures)
