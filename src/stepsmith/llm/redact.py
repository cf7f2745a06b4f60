"""Key redaction: nothing that looks like a credential reaches the log, cache or an error."""

from __future__ import annotations

import os
import re

from .config import load_config

_KEY_ENV_SUFFIXES = ("_API_KEY", "_AUTH_TOKEN", "_TOKEN", "_SECRET")
_PATTERNS = [
    re.compile(r"sk-[A-Za-z0-9_\-]{8,}"),  # OpenAI / Anthropic / DeepSeek style keys
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9_\-\.=]{8,}"),
    re.compile(r"(?i)((?:x-)?api[-_]?key[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]{6,}"),
    re.compile(r"(?i)(https?://)[^/\s:@]+:[^/\s@]+@"),  # credentials in URLs
]
REDACTED = "[REDACTED]"


def known_secrets() -> list[str]:
    """Secret values currently configured (env vars named like keys, and config-file keys)."""
    secrets = [
        v for k, v in os.environ.items() if k.upper().endswith(_KEY_ENV_SUFFIXES) and len(v) >= 6
    ]
    try:
        cfg = load_config()
    except ValueError:
        cfg = {}
    for section in cfg.values():
        if isinstance(section, dict):
            for k, v in section.items():
                if isinstance(v, str) and "key" in k.lower() and len(v) >= 6:
                    secrets.append(v)
    return sorted(set(secrets), key=len, reverse=True)


def redact(text: str, extra_secrets: list[str] | tuple[str, ...] = ()) -> str:
    """Replace configured secrets and key-shaped strings with `[REDACTED]`."""
    if not text:
        return text
    for secret in [*extra_secrets, *known_secrets()]:
        if secret and len(secret) >= 6:
            text = text.replace(secret, REDACTED)
    text = _PATTERNS[0].sub(REDACTED, text)
    text = _PATTERNS[1].sub(lambda m: m.group(1) + REDACTED, text)
    text = _PATTERNS[2].sub(lambda m: m.group(1) + REDACTED, text)
    text = _PATTERNS[3].sub(lambda m: m.group(1) + REDACTED + "@", text)
    return text


def redact_secrets(text: str, extra_secrets: list[str] | tuple[str, ...] = ()) -> str:
    """Replace only the configured secret values (not key-shaped patterns) in `text`.

    For model answers, which are stored and replayed: a model that echoes the API key must not
    put it in the call log, but program text such as `mask-attention_w` must stay intact, so
    the pattern rules of `redact` do not apply here.
    """
    if not text:
        return text
    for secret in [*extra_secrets, *known_secrets()]:
        if secret and len(secret) >= 6 and secret in text:
            text = text.replace(secret, REDACTED)
    return text


def storable_text(text: str) -> str:
    """`text` with lone surrogates replaced (U+FFFD): JSON lets a server send `"\\ud800"`, and
    such a string cannot be encoded as UTF-8, so it would crash the call log, the cache key
    and every later prompt that quotes the answer."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text
