"""In-process local models through llama-cpp-python (the optional `[local]` extra).

One `Llama` per model file per process (loading costs ~0.3 s for 0.5B but memory matters), a
lock per model (llama.cpp contexts are not thread-safe), generation in a worker thread so the
async interface works, at most 2 threads (the machine size; 1 while the CPU is shared), the
GGUF's own chat template, reuse of evaluated prompt prefixes, and a seed derived from
`sample_index` (sample i draws the same way on every run; exact replay comes from the cache).
"""

from __future__ import annotations

import asyncio
import atexit
import os
import threading
import time
from pathlib import Path
from typing import Any

from . import prefix_cache
from .base import Completion, normalize_finish_reason
from .constraint import Constraint
from .errors import LLMError
from .llama_decode import DecodeResult, decode_constrained, lltokenizer
from .models import KNOWN_MODELS, ensure_model

# "auto": 2 threads when the other core is idle, 1 when something else is running. On this
# 2-core machine a 2-thread generation that shares the CPU collapsed (measured 1-2 tok/s vs ~9
# with 1 thread) because every layer ends in a thread barrier; when the machine is quiet, 2
# threads are faster. An integer forces a fixed count.
THREADS_SETTING = os.environ.get("STEPSMITH_LLAMACPP_THREADS", "auto")
MAX_THREADS = 2
N_THREADS = MAX_THREADS if THREADS_SETTING == "auto" else max(1, int(THREADS_SETTING))
# The embedded Qwen2.5-Coder models' trained context. Self-improvement's prompt grows with its
# library: the 1.5B model's 26-task run had 13 demonstrations in iteration 2, a 16.9k-token
# prompt that 16384 could not hold (run 20261203-081245-9f08). The KV cache is allocated for
# all of it at load: ~0.9 GB on the 1.5B model, ~0.4 GB on the 0.5B.
N_CTX = int(os.environ.get("STEPSMITH_LLAMACPP_N_CTX", "32768"))
# Reusing evaluated prompt prefixes (in the context, and from a RAM cache of recent states so
# proposer/guardian/repair prompts that alternate still hit) saves re-evaluating thousands of
# shared prompt tokens per call. Its price: logits depend slightly on how the prompt was split
# into batches, so a sample may differ with call order. The call cache replays runs exactly
# either way; set STEPSMITH_LLAMACPP_PREFIX_REUSE=0 for order-independent (slow) sampling.
PREFIX_REUSE = os.environ.get("STEPSMITH_LLAMACPP_PREFIX_REUSE", "1") != "0"
STATE_CACHE_MB = int(os.environ.get("STEPSMITH_LLAMACPP_STATE_CACHE_MB", "1024"))
# Sample i draws from seed `base + 7919 i`. STEPSMITH_LLAMACPP_SEED sets another base, to repeat
# a run independently (e.g. how often the quick demo solves); a non-default base is part of the
# call-cache key, so answers drawn with one base are never replayed for another.
DEFAULT_SEED_BASE = 1_000_003

_MODELS: dict[str, tuple[Any, threading.Lock, float]] = {}
_MODELS_LOCK = threading.Lock()

INSTALL_HINT = (
    "llama-cpp-python is not installed; install the extra with "
    'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON '
    '-DGGML_AMX_INT8=OFF" python -m pip install "stepsmith[local]" (or run .ci/install_local.sh)'
)


def others_running(samples: int = 5, interval_s: float = 0.01) -> int:
    """Runnable tasks on the machine besides the caller (median of a few /proc/loadavg reads)."""
    counts = []
    for i in range(samples):
        try:
            with open("/proc/loadavg") as fh:
                counts.append(int(fh.read().split()[3].split("/")[0]) - 1)
        except (OSError, ValueError, IndexError):
            return 0
        if i + 1 < samples:
            time.sleep(interval_s)
    return sorted(counts)[len(counts) // 2]


def choose_threads() -> int:
    if THREADS_SETTING != "auto":
        return N_THREADS
    cores = os.cpu_count() or 1
    return max(1, min(MAX_THREADS, cores - others_running()))


def seed_base_setting() -> int:
    """The seed base from STEPSMITH_LLAMACPP_SEED (default DEFAULT_SEED_BASE)."""
    raw = os.environ.get("STEPSMITH_LLAMACPP_SEED", "").strip()
    if not raw:
        return DEFAULT_SEED_BASE
    try:
        return int(raw)
    except ValueError:
        raise LLMError(f"STEPSMITH_LLAMACPP_SEED must be an integer; found {raw!r}") from None


def seed_for(sample_index: int, base: int = DEFAULT_SEED_BASE) -> int:
    """Deterministic per-sample seed: sample i of any prompt always draws the same way."""
    return (base + 7919 * int(sample_index)) % (2**31 - 1)


class _Cancelled(Exception):
    pass


def chat_prompt(llm: Any, messages: list[dict], generation_prompt: bool = True) -> str:
    """The prompt text the model's own chat template makes of `messages`, ending where the
    assistant's answer begins (what create_chat_completion feeds the model)."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        raise LLMError("llamacpp: the GGUF has no chat template; constrained decoding needs one")
    eos = llm.detokenize([llm.token_eos()], special=True).decode("utf-8", errors="replace")
    bos_id = llm.token_bos()
    bos = (llm.detokenize([bos_id], special=True).decode("utf-8", errors="replace")
           if bos_id >= 0 else "")
    fmt = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos,
                              add_generation_prompt=generation_prompt)
    return fmt(messages=messages).prompt


def load_llama(path: Path) -> tuple[Any, threading.Lock, float]:
    """The process-wide Llama for `path` (loaded once), its lock and the load time in seconds."""
    key = str(path.resolve())
    with _MODELS_LOCK:
        if key in _MODELS:
            return _MODELS[key]
        # llama.cpp's OpenMP threads spin while waiting; on a busy 2-core machine (verifier
        # workers running beside generation) that collapsed generation from ~10 to 0.2 tok/s
        # in our measurements. Passive waiting keeps it stable. Must be set before the import.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        try:
            import llama_cpp
        except ImportError as exc:
            raise LLMError(INSTALL_HINT) from exc
        t0 = time.perf_counter()
        try:
            llm = llama_cpp.Llama(
                model_path=key,
                n_ctx=N_CTX,
                n_threads=N_THREADS,
                n_threads_batch=N_THREADS,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise LLMError(f"llamacpp: could not load GGUF model {key}: {exc}") from exc
        if PREFIX_REUSE and STATE_CACHE_MB > 0:
            llm.set_cache(_compact_ram_cache(llama_cpp, STATE_CACHE_MB << 20))
        entry = (llm, threading.Lock(), time.perf_counter() - t0)
        if not _MODELS:
            atexit.register(_close_models)
        _MODELS[key] = entry
        return entry


CLOSE_WAIT_S = 5.0  # at exit, how long to wait for a decode that holds a model's lock


def _close_models() -> None:
    """Free the loaded models while llama_cpp's module is still whole: left to the garbage
    collector at interpreter exit, `Llama.__del__` ran after its C bindings were torn down
    and printed `TypeError: 'NoneType' object is not callable` (the end of the slow tests)."""
    with _MODELS_LOCK:
        for llm, lock, _ in _MODELS.values():
            if lock.acquire(timeout=CLOSE_WAIT_S):  # a decode still running: leave it be
                try:
                    llm.close()
                finally:
                    lock.release()
        _MODELS.clear()


def _compact_ram_cache(llama_cpp: Any, capacity_bytes: int) -> Any:
    """A LlamaRAMCache that keeps only the last logits row of each saved state.

    Upstream saves `min(n_tokens, n_batch) x n_vocab` floats of logits per state (311 MB for
    Qwen's 152k vocabulary) without counting them against the capacity: a bench process grew
    past 6 GB. A restored state is always re-decoded before sampling, so one row is enough
    (it broadcasts back into the logits buffer on load).
    """

    class CompactRAMCache(llama_cpp.LlamaRAMCache):
        def __setitem__(self, key: Any, value: Any) -> None:
            if getattr(value, "scores", None) is not None and len(value.scores) > 1:
                value.scores = value.scores[-1:].copy()
            super().__setitem__(key, value)

    return CompactRAMCache(capacity_bytes=capacity_bytes)


def resolve_model(name_or_path: str) -> Path:
    """A known model name (assembled on demand) or a path to any .gguf file."""
    if name_or_path in KNOWN_MODELS:
        return ensure_model(name_or_path)
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise LLMError(
            f"llamacpp: {name_or_path!r} is neither a known model "
            f"({', '.join(sorted(KNOWN_MODELS))}) nor an existing .gguf file"
        )
    return path


class LlamaCppBackend:
    """`llamacpp:<known-name>` or `llamacpp:/path/model.gguf`."""

    provider = "llamacpp"

    def __init__(self, name_or_path: str):
        self.model = name_or_path
        self.name = f"llamacpp:{name_or_path}"
        self.path = resolve_model(name_or_path)
        self.tokens_sampled = 0  # of the latest generation (observability; tests use it)
        self.threads_used = N_THREADS
        self.last_decode: DecodeResult | None = None  # of the latest constrained answer
        self.seed_base = seed_base_setting()
        # what, besides model and prompt, decides an answer (read by the call cache's key)
        self.cache_identity = ({} if self.seed_base == DEFAULT_SEED_BASE
                               else {"seed_base": str(self.seed_base)})

    @property
    def load_seconds(self) -> float:
        return load_llama(self.path)[2]

    def _generate(self, messages: list[dict], params: dict[str, Any], cancel: threading.Event) -> dict:
        llm, lock, _ = load_llama(self.path)
        temperature = params.get("temperature")
        temperature = 0.0 if temperature is None else float(temperature)

        eos = llm.token_eos()

        def check_cancel(_ids: Any, scores: Any) -> Any:
            # called from a C callback, where exceptions cannot propagate: on cancellation we
            # force end-of-sequence instead, which ends the generation at this token
            self.tokens_sampled += 1
            if cancel.is_set():
                scores[:] = -float("inf")
                scores[eos] = 0.0
            return scores

        import llama_cpp

        constraint = params.get("constraint")
        if constraint is not None:
            return self._generate_constrained(llm, lock, messages, params, constraint, cancel)
        kwargs: dict[str, Any] = {
            "messages": messages,
            "temperature": temperature,
            "max_tokens": int(params.get("max_tokens") or 1024),
            "logits_processor": llama_cpp.LogitsProcessorList([check_cancel]),
        }
        if temperature > 0:
            kwargs["seed"] = seed_for(int(params.get("sample_index", 0)), self.seed_base)
        with lock:
            if cancel.is_set():
                raise _Cancelled()
            self.tokens_sampled = 0
            self.threads_used = choose_threads()
            llm._ctx.set_n_threads(self.threads_used, self.threads_used)
            if not PREFIX_REUSE:
                llm.reset()
            else:  # the system prompt's evaluated state from disk (read once per machine)
                self._restore_system_prefix(llm, messages)
            try:
                result = llm.create_chat_completion(**kwargs)
            except ValueError as exc:  # e.g. prompt longer than the context window
                raise LLMError(
                    f"{self.name}: {exc} (context window n_ctx={N_CTX}; raise it with "
                    "STEPSMITH_LLAMACPP_N_CTX or shorten the prompt)"
                ) from exc
        if cancel.is_set():
            raise _Cancelled()
        return result

    def _restore_system_prefix(self, llm: Any, messages: list[dict]) -> None:
        try:
            text = chat_prompt(llm, messages)
        except LLMError:
            return
        tokens = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        n = prefix_cache.system_prefix_len(llm, messages, tokens, chat_prompt)
        if n and n + 1 < len(tokens):
            prefix_cache.prepare(llm, str(self.path), tokens, n)

    def _generate_constrained(self, llm: Any, lock: threading.Lock, messages: list[dict],
                              params: dict[str, Any], constraint: Constraint,
                              cancel: threading.Event) -> dict:
        """One answer under a grammar or typed constraint (our own decoding loop)."""
        temperature = params.get("temperature")
        temperature = 0.0 if temperature is None else float(temperature)
        prompt = chat_prompt(llm, messages) + constraint.prefix
        with lock:
            if cancel.is_set():
                raise _Cancelled()
            self.threads_used = choose_threads()
            llm._ctx.set_n_threads(self.threads_used, self.threads_used)
            tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
            if len(tokens) + int(params.get("max_tokens") or 1024) > N_CTX:
                raise LLMError(
                    f"{self.name}: prompt of {len(tokens)} tokens does not fit the context "
                    f"window n_ctx={N_CTX} (raise STEPSMITH_LLAMACPP_N_CTX)"
                )
            prefix_cache.prepare(llm, str(self.path), tokens,
                                 prefix_cache.system_prefix_len(llm, messages, tokens, chat_prompt))
            res = decode_constrained(
                llm, lltokenizer(llm, str(self.path)), tokens, constraint, temperature=temperature,
                seed=seed_for(int(params.get("sample_index", 0)), self.seed_base),
                max_tokens=int(params.get("max_tokens") or 1024), cancel=cancel,
            )
        if cancel.is_set():
            raise _Cancelled()
        self.tokens_sampled = res.sampled_tokens
        self.last_decode = res
        finish = {"stop": "stop", "length": "length"}.get(res.finish_reason, res.finish_reason)
        if res.shortcut:  # the call log tells judged answers from sampled ones
            finish = "judged"
        if res.edit:  # ... and answers one line away from what the model wrote
            finish = "edited"
        return {
            "choices": [{"message": {"content": res.text}, "finish_reason": finish}],
            "usage": {"prompt_tokens": res.prompt_tokens,
                      "completion_tokens": res.sampled_tokens},
            "trace": res.trace(),
        }

    async def complete(self, messages: list[dict], params: dict[str, Any]) -> Completion:
        cancel = threading.Event()
        try:
            resp = await asyncio.to_thread(self._generate, messages, params, cancel)
        except asyncio.CancelledError:
            cancel.set()  # the worker stops at its next token; no hung thread
            raise
        except _Cancelled as exc:  # pragma: no cover - only after cancellation
            raise asyncio.CancelledError() from exc
        choice = resp["choices"][0]
        usage = resp.get("usage") or {}
        return Completion(
            text=choice["message"].get("content") or "",
            input_tokens=int(usage.get("prompt_tokens", 0)),
            output_tokens=int(usage.get("completion_tokens", 0)),
            finish_reason=normalize_finish_reason(choice.get("finish_reason")),
            trace=str(resp.get("trace") or ""),
        )


def measure(name_or_path: str, max_tokens: int = 128, repeats: int = 2) -> dict[str, float]:
    """Load time, first-call warm-up, generation and prompt-evaluation speed on this machine."""
    path = resolve_model(name_or_path)
    fresh = str(path.resolve()) not in _MODELS
    llm, lock, load_s = load_llama(path)
    msgs = [{"role": "user", "content": "Write a detailed Python tutorial about list comprehensions."}]
    with lock:
        t0 = time.perf_counter()
        llm.create_chat_completion(msgs, temperature=0.0, max_tokens=1)
        warmup_s = time.perf_counter() - t0
        speeds, used = [], []
        for _ in range(repeats):
            used.append(choose_threads())
            llm._ctx.set_n_threads(used[-1], used[-1])
            llm.reset()
            t0 = time.perf_counter()
            r = llm.create_chat_completion(msgs, temperature=0.0, max_tokens=max_tokens)
            speeds.append(r["usage"]["completion_tokens"] / (time.perf_counter() - t0))
        long_prompt = [{"role": "user", "content": "def f(x):\n    return x * 2\n" * 60 + "Explain."}]
        llm.reset()
        t0 = time.perf_counter()
        r = llm.create_chat_completion(long_prompt, temperature=0.0, max_tokens=1)
        prompt_speed = r["usage"]["prompt_tokens"] / (time.perf_counter() - t0)
    return {
        "load_s": load_s if fresh else float("nan"),
        "first_call_s": warmup_s,
        "generation_tok_s": max(speeds),
        "prompt_tok_s": prompt_speed,
        "threads": float(max(used)),
        "loadavg_1m": os.getloadavg()[0],
    }
