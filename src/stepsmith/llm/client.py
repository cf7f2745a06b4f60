"""`LLMClient`: the one door to models — cache, log, budget, retries and bounded concurrency."""

from __future__ import annotations

import asyncio
import random
import time
import weakref
from typing import Any

from ._http_errors import call_deadline_s as call_deadline_s_setting
from ._http_errors import within_deadline
from .backends import get_backend
from .base import Backend, Completion, prompt_tokens_upper, validate_messages
from .budget import Budget
from .constraint import Constraint
from .errors import (
    BudgetExceeded,
    CacheMiss,
    InfrastructureError,
    LLMError,
    RetryableError,
    endpoint_of,
    infrastructure_error,
)
from .prices import price_for
from .redact import redact, storable_text
from .store import CallStore, cache_key, now_iso, prompt_hash, server_identity

CACHE_MODES = ("use", "refresh", "replay")
LOCAL_CALL_DEADLINE_S = 6 * 3600.0


class LLMClient:
    """Sample completions from one model, recording every call in a `CallStore`.

    cache_mode: "use" (default) answers repeated (model, messages, params, sample_index)
    requests from the store at zero cost; "refresh" always calls the model (and records the new
    answer, which later "use" lookups prefer); "replay" never calls the model and raises
    `CacheMiss` on a miss (the miss is recorded as *pending* for `stepsmith log export-batch`).
    Without a store an in-memory one is used (caching within the process, nothing persisted).
    """

    def __init__(
        self,
        spec: str | Backend,
        *,
        store: CallStore | None = None,
        run_id: str = "",
        budget: Budget | None = None,
        cache_mode: str = "use",
        concurrency: int = 4,
        timeout_s: float = 120,
        max_retries: int = 5,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        base_url: str | None = None,
        api_key: str | None = None,
        call_deadline_s: float | None = None,
    ):
        if cache_mode not in CACHE_MODES:
            raise ValueError(f"cache_mode must be one of {CACHE_MODES}; found {cache_mode!r}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1; found {concurrency}")
        self.backend = get_backend(spec, base_url=base_url, api_key=api_key, timeout_s=timeout_s)
        self.model = self.backend.name
        self.store = store if store is not None else CallStore(":memory:")
        self.run_id = run_id
        self.budget = budget
        self.cache_mode = cache_mode
        self.concurrency = concurrency
        self.max_retries = max_retries
        # one call, retries and backoff included, ends by this many seconds (slow drips, hangs)
        self.call_deadline_s = call_deadline_s_setting(call_deadline_s)
        if self.backend.provider == "llamacpp" and call_deadline_s is None:
            # an in-process model cannot hang on a network; on a busy 2-core machine reading
            # a long prompt legitimately takes many minutes
            self.call_deadline_s = LOCAL_CALL_DEADLINE_S
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.price = price_for(self.model)
        if budget is not None and budget.max_cost_usd is not None and self.price is None:
            raise LLMError(
                f"--max-cost needs a price for {self.model}, and none is known; add "
                f'[prices."{self.model}"] input = ..., output = ... (USD per million tokens) to '
                "config.toml, or use --max-tokens instead"
            )
        if budget is not None and run_id:
            budget.seed(run_id, *self.store.spent(run_id))
        self._sems: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._known_input: dict[str, int] = {}
        self._runner: asyncio.Runner | None = None

    # -- public API ---------------------------------------------------------------------------
    async def sample(
        self,
        messages: list[dict],
        *,
        temperature: float | None = None,
        max_tokens: int = 1024,
        sample_index: int = 0,
        task: str = "",
        tag: str = "",
        constraint: Constraint | None = None,
    ) -> Completion:
        """One completion (cached, replayed or fresh); see the class docstring for the modes.

        `constraint` restricts the answer (grammar or typed decoding); its identity is part
        of the cache key and of the logged parameters."""
        validate_messages(messages)
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive int; found {max_tokens!r}")
        params: dict[str, Any] = {"temperature": temperature, "max_tokens": max_tokens}
        if constraint is not None:
            params["constrain"] = constraint.identity
        key = cache_key(self.model, messages, params, sample_index, server_identity(self.backend))
        meta = {"run_id": self.run_id, "task": task, "tag": tag}
        started = now_iso()
        t0 = time.perf_counter()

        if self.cache_mode in ("use", "replay"):
            hit = self.store.lookup(key)
            if hit is not None:
                return self._replay(hit, messages, params, sample_index, key, meta, started, t0)
            if self.cache_mode == "replay":
                self._record(messages, params, sample_index, key, meta, started, status="pending")
                raise CacheMiss(
                    f"replay mode: no cached response for {self.model} (task {task or '-'}, "
                    f"sample {sample_index}, temperature {temperature}, cache key {key[:12]}); "
                    "run with cache mode 'use' to call the model, or export the pending "
                    "requests with `stepsmith log export-batch`",
                    cache_key=key,
                )

        ph = prompt_hash(messages)
        est_in = self._known_input.get(ph) or prompt_tokens_upper(messages)
        reserve_tokens = est_in + max_tokens
        reserve_cost = self.price.cost(est_in, max_tokens) if self.price else 0.0
        if self.budget is not None:
            self.budget.reserve(reserve_tokens, reserve_cost)
        t_call = t0
        try:
            try:
                async with self._semaphore():
                    t_call = time.perf_counter()  # latency excludes waiting for a slot
                    comp, attempts = await self._call_with_retries(
                        messages,
                        {**params, "sample_index": sample_index, "constraint": constraint},
                    )
                    comp.text = storable_text(comp.text or "")  # "\ud800" from JSON
            except LLMError as exc:
                exc.model = self.model
                self._record(messages, params, sample_index, key, meta, started,
                             status="error", error=str(exc), attempts=exc.attempts,
                             latency_s=time.perf_counter() - t_call)
                raise
        finally:
            if self.budget is not None:
                self.budget.release(reserve_tokens, reserve_cost)

        latency = time.perf_counter() - t_call
        cost = (self.price.cost(comp.input_tokens, comp.output_tokens, comp.cache_read_tokens,
                                comp.cache_write_tokens) if self.price else None)
        if not comp.usage_estimated:
            self._known_input[ph] = comp.input_tokens
        if self.budget is not None:
            self.budget.charge(comp.input_tokens + comp.output_tokens, cost or 0.0, task)
        call_id = self._record(
            messages, params, sample_index, key, meta, started, status="ok",
            response=comp.text, finish_reason=comp.finish_reason,
            input_tokens=comp.input_tokens, output_tokens=comp.output_tokens,
            cache_read_tokens=comp.cache_read_tokens, cache_write_tokens=comp.cache_write_tokens,
            usage_estimated=comp.usage_estimated, cost_usd=cost, latency_s=latency,
            attempts=attempts, trace=comp.trace or None,
        )
        comp.cost_usd = cost or 0.0
        comp.cached = False
        comp.latency_s = latency
        comp.call_id = call_id
        comp.model = self.model
        return comp

    def sample_sync(self, messages: list[dict], **kwargs: Any) -> Completion:
        """Blocking `sample` for scripts and the CLI (not from inside a running event loop)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError(
                "LLMClient.sample_sync was called inside a running event loop; "
                "use `await client.sample(...)` there"
            )
        if self._runner is None:
            self._runner = asyncio.Runner()
        return self._runner.run(self.sample(messages, **kwargs))

    async def sample_many(self, requests: list[dict]) -> list[Completion | Exception]:
        """Many samples with at most `concurrency` in flight; failures are returned in place.

        Each request is a dict of `sample` keyword arguments (`messages` required). Once the
        budget is exhausted every remaining request returns `BudgetExceeded` without a call.
        Cancellation (Ctrl-C) propagates and cancels everything in flight.
        """

        async def one(req: dict) -> Completion | Exception:
            try:
                req = dict(req)
                return await self.sample(req.pop("messages"), **req)
            except (LLMError, BudgetExceeded, CacheMiss, ValueError, TypeError, KeyError) as exc:
                return exc

        return list(await asyncio.gather(*(one(r) for r in requests)))

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()
            self._runner = None

    # -- internals ----------------------------------------------------------------------------
    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        sem = self._sems.get(loop)
        if sem is None:
            sem = self._sems[loop] = asyncio.Semaphore(self.concurrency)
        return sem

    def backoff_delay(self, attempt: int, retry_after_s: float | None) -> float:
        """Exponential backoff with full jitter; a server's Retry-After is a lower bound."""
        cap = min(self.backoff_max_s, self.backoff_base_s * (2**attempt))
        delay = random.uniform(cap / 2, cap)
        if retry_after_s is not None:
            delay = max(delay if retry_after_s == 0 else 0.0, retry_after_s) + random.uniform(
                0, 0.1 * max(retry_after_s, 0.01)
            )
        return delay

    async def _call_with_retries(self, messages: list[dict], params: dict) -> tuple[Completion, int]:
        last: RetryableError | None = None
        deadline = time.monotonic() + self.call_deadline_s
        tries = 0
        for attempt in range(self.max_retries + 1):
            tries = attempt + 1
            try:
                return await within_deadline(
                    self.backend.complete(messages, params), deadline - time.monotonic(),
                    f"{self.model} (call deadline {self.call_deadline_s:g} s)",
                ), attempt + 1
            except RetryableError as exc:
                last = exc
                if attempt == self.max_retries:
                    break
                delay = self.backoff_delay(attempt, exc.retry_after_s)
                if time.monotonic() + delay >= deadline:
                    break  # no time left for another attempt within the call deadline
                await asyncio.sleep(delay)
            except LLMError as exc:
                exc.attempts = attempt + 1
                infra = infrastructure_error(exc, endpoint=endpoint_of(self.backend),
                                             retries_exhausted=False)
                if infra is None:
                    raise
                raise infra from exc
            except (asyncio.CancelledError, KeyboardInterrupt):
                raise
            except Exception as exc:  # noqa: BLE001 - a backend bug still becomes a clear error
                raise LLMError(
                    f"{self.model}: backend raised {type(exc).__name__}: {redact(str(exc))}",
                    attempts=attempt + 1,
                ) from exc
        assert last is not None
        raise InfrastructureError(
            f"could not ask the model at {endpoint_of(self.backend)}: {redact(str(last))} — gave "
            f"up after {tries} attempts",
            attempts=tries,
            status=last.status,
            endpoint=endpoint_of(self.backend),
        )

    def _replay(self, hit: dict, messages: list[dict], params: dict, sample_index: int, key: str,
                meta: dict, started: str, t0: float) -> Completion:
        """A call-cache hit: free, but logged with the token counts the original call recorded."""
        latency = time.perf_counter() - t0
        read = int(hit.get("cache_read_tokens") or 0)
        write = int(hit.get("cache_write_tokens") or 0)
        call_id = self._record(
            messages, params, sample_index, key, meta, started, status="ok",
            response=hit["response"], finish_reason=hit["finish_reason"],
            input_tokens=hit["input_tokens"], output_tokens=hit["output_tokens"],
            cache_read_tokens=read, cache_write_tokens=write,
            usage_estimated=bool(hit["usage_estimated"]), cost_usd=0.0, latency_s=latency,
            cached=True, cache_source=hit["id"], attempts=0,
        )
        return Completion(
            text=hit["response"] or "",
            input_tokens=hit["input_tokens"],
            output_tokens=hit["output_tokens"],
            finish_reason=hit["finish_reason"] or "unknown",
            cost_usd=0.0,
            cached=True,
            latency_s=latency,
            call_id=call_id,
            usage_estimated=bool(hit["usage_estimated"]),
            model=self.model,
            trace=hit.get("trace") or "",  # the row it replays (cache_source) keeps it
            cache_read_tokens=read,
            cache_write_tokens=write,
        )

    def _record(self, messages: list[dict], params: dict, sample_index: int, key: str,
                meta: dict, started: str, **fields: Any) -> int:
        if fields.get("error"):
            fields["error"] = redact(fields["error"])
        return self.store.record(
            model=self.model, provider=self.backend.provider, messages=messages, params=params,
            sample_index=sample_index, key=key, started_at=started, **meta, **fields,
        )
