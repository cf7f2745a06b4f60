"""Batch export/import: run the sampling of a run through any batch API or another machine.

Workflow: run with cache mode `replay` → every miss is recorded as *pending* → `export_pending`
writes them as JSONL batch requests (custom_id = cache key) → run them anywhere →
`import_results` stores the answers as ordinary cached responses → rerun with `use`/`replay`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .backend_anthropic import build_request as anthropic_request
from .backend_anthropic import prompt_cache_enabled, usage_input_parts
from .backend_openai import build_request as openai_request
from .backend_openai import cached_prompt_tokens
from .base import normalize_finish_reason
from .prices import price_for
from .store import CallStore

BATCH_DISCOUNT = 0.5  # OpenAI and Anthropic batch APIs bill half the list price


def export_pending(store: CallStore, out: Path, run_id: str | None = None) -> int:
    """Write one batch request per distinct pending request; returns how many were written.

    Requests for `anthropic:` models use Anthropic's Message Batches line format
    (`{"custom_id", "params"}`), all others OpenAI's (`{"custom_id", "method", "url", "body"}`).
    """
    rows = store.pending(run_id)
    anthropic_cache = prompt_cache_enabled()  # batches honour cache_control too
    with Path(out).open("w", encoding="utf-8") as fh:
        for row in rows:
            provider, _, model = row["model"].partition(":")
            params = {k: row["params"].get(k) for k in ("temperature", "max_tokens")}
            if provider == "anthropic":
                body = anthropic_request(model, row["messages"], params,
                                         prompt_cache=anthropic_cache)
                extra = body.pop("extra_body", {})
                line: dict[str, Any] = {"custom_id": row["cache_key"], "params": {**body, **extra}}
            else:
                body = openai_request(model, row["messages"], params,
                                      official=provider == "openai")
                line = {"custom_id": row["cache_key"], "method": "POST",
                        "url": "/v1/chat/completions", "body": body}
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")
    return len(rows)


def _count(value: Any) -> int:
    """A token count from a hand-written line; anything unusable counts as 0."""
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        return 0


Parsed = tuple[str, int | None, int | None, str, int, int]


def _parse_result(obj: dict) -> Parsed | str:
    """(text, input_tokens, output_tokens, finish_reason, cache_read, cache_write) from any
    supported line, or an error. input_tokens is the whole prompt, as for live calls."""
    if "response" in obj:  # OpenAI batch output
        resp = obj.get("response") or {}
        if obj.get("error") or resp.get("status_code", 200) != 200:
            return f"request failed: {obj.get('error') or resp.get('status_code')}"
        body = resp.get("body") or {}
        choice = (body.get("choices") or [{}])[0]
        usage = body.get("usage") or {}
        text = (choice.get("message") or {}).get("content")
        if text is None:
            return "response body has no choices[0].message.content"
        n_in = usage.get("prompt_tokens")
        read = min(cached_prompt_tokens(usage), n_in) if n_in is not None else 0
        return (text, n_in, usage.get("completion_tokens"),
                normalize_finish_reason(choice.get("finish_reason")), read, 0)
    if "result" in obj:  # Anthropic Message Batches results
        result = obj.get("result") or {}
        if result.get("type") != "succeeded":
            return f"request {result.get('type', 'failed')}: {result.get('error')}"
        msg = result.get("message") or {}
        text = "".join(b.get("text", "") for b in msg.get("content", []) if isinstance(b, dict))
        usage = msg.get("usage") or {}
        if usage.get("input_tokens") is None:
            return (text, None, usage.get("output_tokens"),
                    normalize_finish_reason(msg.get("stop_reason")), 0, 0)
        uncached, write, read = usage_input_parts(usage)
        return (text, uncached + write + read, usage.get("output_tokens"),
                normalize_finish_reason(msg.get("stop_reason")), read, write)
    if "text" in obj:  # plain {"custom_id", "text", ...}
        return (str(obj["text"]), obj.get("input_tokens"), obj.get("output_tokens"),
                str(obj.get("finish_reason", "stop")), _count(obj.get("cache_read_tokens")),
                _count(obj.get("cache_write_tokens")))
    return "line has none of 'response' (OpenAI), 'result' (Anthropic) or 'text'"


def import_results(store: CallStore, path: Path, *, cost_factor: float = BATCH_DISCOUNT
                   ) -> dict[str, Any]:
    """Store batch answers as cached responses; returns counts and per-line problems."""
    imported, skipped, problems = 0, 0, []
    with Path(path).open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"line {lineno}: not JSON ({exc.msg})")
                continue
            key = obj.get("custom_id") if isinstance(obj, dict) else None
            if not key:
                problems.append(f"line {lineno}: missing 'custom_id'")
                continue
            req = store.find_request(key)
            if req is None:
                problems.append(f"line {lineno}: custom_id {key[:16]}… matches no exported request")
                continue
            if store.lookup(key) is not None:
                skipped += 1
                continue
            parsed = _parse_result(obj)
            if isinstance(parsed, str):
                problems.append(f"line {lineno}: {parsed}")
                continue
            text, n_in, n_out, finish, read, write = parsed
            estimated = n_in is None or n_out is None
            if n_in is None:
                read = write = 0
            n_in = int(n_in) if n_in is not None else sum(len(m["content"]) // 4 for m in req["messages"])
            n_out = int(n_out) if n_out is not None else len(text) // 4
            price = price_for(req["model"])
            cost = price.cost(n_in, n_out, read, write) * cost_factor if price else None
            store.record(
                model=req["model"], provider=f"{req['provider']}+batch", messages=req["messages"],
                params=req["params"], sample_index=req["sample_index"], key=key, status="ok",
                run_id=req["run_id"], task=req["task"], tag=req["tag"], response=text,
                finish_reason=finish, input_tokens=n_in, output_tokens=n_out,
                cache_read_tokens=read, cache_write_tokens=write,
                usage_estimated=estimated, cost_usd=cost, attempts=0,
            )
            imported += 1
    return {"imported": imported, "skipped": skipped, "problems": problems}
