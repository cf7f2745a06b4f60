"""Where stepsmith keeps its state, and the optional user config file.

`$STEPSMITH_HOME` (default `~/.stepsmith`) holds `stepsmith.db` (call log + cache), `models/`
(assembled GGUF files) and `config.toml`:

    [openai]               # also [anthropic] and [openai-compatible]
    api_key = "..."        # environment variables win over the file
    base_url = "..."
    [anthropic]
    prompt_cache = false   # don't mark the system prompt cacheable (default: true)
    [prices."openai:gpt-4o"]
    input = 2.5            # USD per million input tokens
    output = 10.0
    cached_input = 1.25    # optional: provider prompt-cache reads
    cache_write = 2.5      # optional: provider prompt-cache writes
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any


def stepsmith_home() -> Path:
    """The state directory (not created here; writers create what they need)."""
    env = os.environ.get("STEPSMITH_HOME")
    return Path(env).expanduser() if env else Path.home() / ".stepsmith"


def default_db_path() -> Path:
    return stepsmith_home() / "stepsmith.db"


def models_dir() -> Path:
    return stepsmith_home() / "models"


def config_path() -> Path:
    env = os.environ.get("STEPSMITH_CONFIG")
    return Path(env).expanduser() if env else stepsmith_home() / "config.toml"


def load_config(path: Path | None = None) -> dict[str, Any]:
    """Read config.toml; a missing file is an empty config, a broken one a clear error."""
    p = path or config_path()
    if not p.exists():
        return {}
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise ValueError(f"stepsmith config file {p} is not valid TOML: {exc}") from exc


def provider_setting(provider: str, key: str, env_names: tuple[str, ...]) -> str | None:
    """First of: the environment variables (in order), then `[provider] key` in config.toml."""
    for name in env_names:
        value = os.environ.get(name)
        if value:
            return value
    section = load_config().get(provider, {})
    value = section.get(key) if isinstance(section, dict) else None
    return str(value) if value else None


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def provider_flag(provider: str, key: str, env_names: tuple[str, ...], default: bool) -> bool:
    """A yes/no setting: the first set environment variable, then `[provider] key`, else default.

    Separate from `provider_setting` because a TOML `false` must count as a value there.
    """
    for name in env_names:
        value = os.environ.get(name)
        if value is not None and value.strip():
            return _parse_flag(value, f"environment variable {name}")
    section = load_config().get(provider, {})
    value = section.get(key) if isinstance(section, dict) else None
    if value is None:
        return default
    return _parse_flag(value, f"config [{provider}] {key}")


def _parse_flag(value: object, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{where} must be true or false (or 1/0); found {value!r}")
