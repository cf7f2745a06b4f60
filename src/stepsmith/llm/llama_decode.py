"""Constrained decoding on a llama.cpp model: our own sampling loop over the low-level API.

Why our own loop: a typed constraint changes with every line the model writes (the typing
environment grows, streams get consumed), and a dead end must be undone. llama-cpp-python's
`grammar=` is one fixed GBNF evaluated over the whole vocabulary per token (slow on Qwen's 152k
vocabulary), and its generator cannot roll back. Here each line is decoded under a token mask
computed by llguidance from that line's pattern (a regex, tens of microseconds per token),
the KV cache is truncated to undo a line, and tokens the pattern forces are evaluated in one
batch. Sampling matches llama.cpp's defaults (top-k 40, top-p 0.95, min-p 0.05, temperature),
drawn from a generator seeded per sample so sample i decodes the same way on every run.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .constraint import Constraint, LineCursor, LineRejected
from .errors import LLMError

TOP_K = 40
TOP_P = 0.95
MIN_P = 0.05
LINE_RETRIES = 3  # resamples of one line that was rejected (e.g. a name already in use)
MAX_BACKTRACKS = 12  # lines undone at dead ends, per answer
# Backjumping: once this many lines written after one line died there, that line is undone
# too. The 1.5B model's failing samples (run 20261203-162531-4cb3) spent all 12 backtracks of
# an attempt on siblings under a prefix that was already lost (12 fourth lines after a Scan
# of the wrong input), while every verified attempt used at most 2 backtracks.
SIBLING_DEAD_ENDS = 3
MAX_REJECTIONS = 8  # rejected lines per answer before it ends as a dead end
# Where a sample's seconds go, in the order the trace prints them: reading the prompt, the
# model evaluating answer tokens, llguidance's token masks, the typed space (offered lines,
# look-ahead, feeding a line), the simulator judging prefixes and complete attempts (search
# `nearby` included). Measured per call so every run's log says what to speed up.
TIMED_PARTS = ("prompt", "model", "masks", "typing", "judge")

_TOKENIZERS: dict[str, Any] = {}
_TOK_LOCK = threading.Lock()


@dataclass
class DecodeResult:
    """One constrained answer and how the search got there (`notes`: the call log's trace)."""

    text: str
    prompt_tokens: int
    sampled_tokens: int  # tokens the model chose (every line, including undone ones)
    finish_reason: str  # "stop" (complete program), "length", "dead_end"
    lines: int = 0
    rejected: int = 0
    backtracks: int = 0
    jumps: int = 0  # backtracks that undid a line because lines after it kept dying
    seconds: float = 0.0
    logprob: float = 0.0  # of the kept lines, under the constrained distribution
    shortcut: bool = False  # the last line was a judged return, not sampled
    edit: str = ""  # search `nearby`: the one line changed to make the answer verify
    attempts: int = 0  # programs started (more than one under search `deepen`)
    evaluated: int = 0  # answer tokens the model evaluated (forced ones included)
    reused: int = 0  # answer tokens whose evaluation was kept from an undone line
    timings: dict[str, float] = field(default_factory=dict)  # TIMED_PARTS -> seconds
    notes: list[str] = field(default_factory=list)

    def trace(self) -> str:
        """The search in words, for the call log (`stepsmith log show ID`)."""
        head = (f"{self.attempts} attempt(s), {self.sampled_tokens} tokens sampled, "
                f"{self.backtracks} backtrack(s) ({self.jumps} backjump(s)), "
                f"{self.rejected} rejected line(s), "
                f"{self.evaluated} evaluated, {self.reused} reused, "
                f"{self.seconds:.1f} s decoding (model lock held), finish {self.finish_reason}"
                + (", one line edited" if self.edit else
                   ", judged return" if self.shortcut else ""))
        parts = [f"{k} {self.timings[k]:.1f}" for k in TIMED_PARTS if k in self.timings]
        if parts:
            other = self.seconds - sum(self.timings.values())
            head += f"\nseconds: {', '.join(parts)}, other {max(other, 0.0):.1f}"
        return "\n".join([head, *self.notes])


def lltokenizer(llm: Any, key: str) -> Any:
    """llguidance's view of the model's vocabulary (built once per model, ~1 s)."""
    with _TOK_LOCK:
        tok = _TOKENIZERS.get(key)
        if tok is None:
            try:
                import llama_cpp
                from llguidance.llamacpp import lltokenizer_from_vocab
            except ImportError as exc:  # pragma: no cover - the [local] extra brings both
                raise LLMError(
                    "constrained decoding needs the llguidance package (pip install "
                    "'stepsmith[local]')"
                ) from exc
            # llguidance reads each of the vocabulary's tokens through a llama_cpp call that
            # warns as deprecated: 152k warnings on Qwen, which pytest records one by one
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                tok = lltokenizer_from_vocab(llama_cpp.llama_model_get_vocab(llm.model))
            _TOKENIZERS[key] = tok
        return tok


class _Session:
    """One answer being decoded: the model's position, the RNG, counters.

    Undoing a line (a dead end, a rejected line, a restart) moves the position back but keeps
    the KV cells past it, with the logits seen after each evaluated batch: the next line
    usually starts as the undone one did (`E4 = step.Repeat(n=2).apply(` before another
    argument), and tokens that agree with the undone ones are not evaluated again.
    """

    # logits kept per position (each a row of n_vocab floats: 0.6 MB on Qwen); the oldest
    # beyond this are dropped, and a position without its row costs one token re-evaluated
    MAX_KEPT_LOGITS = 384
    REUSE_UNDONE = True  # off: every token is evaluated where it is written (bench A/B)

    def __init__(self, llm: Any, tok: Any, temperature: float, seed: int, max_tokens: int,
                 cancel: threading.Event) -> None:
        self.llm = llm
        self.tok = tok
        self.temperature = temperature
        self.rng = np.random.default_rng(seed)
        self.max_tokens = max_tokens
        self.cancel = cancel
        self.sampled = 0
        self.evaluated = 0
        self.reused = 0
        self.n_vocab = llm.n_vocab()
        self.logits: np.ndarray | None = None
        self.valid_end = 0  # the KV cells [0, valid_end) hold input_ids[:valid_end]
        self.kept: dict[int, np.ndarray] = {}  # position -> the logits after input_ids[:it]
        self.timings: dict[str, float] = dict.fromkeys(TIMED_PARTS, 0.0)
        self._timing: str | None = None  # the part being timed (nested timers add to it)

    @contextmanager
    def timed(self, part: str) -> Iterator[None]:
        """Add the block's seconds to `part` (inside another timed block: to the outer one)."""
        if self._timing is not None:
            yield
            return
        self._timing = part
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[part] += time.perf_counter() - t0
            self._timing = None

    # -- model position ------------------------------------------------------------------------
    def feed_prompt(self, tokens: list[int]) -> None:
        """Evaluate the prompt, reusing the longest prefix already in the KV cache."""
        llm = self.llm
        cached = llm.input_ids[: llm.n_tokens].tolist()
        common = 0
        for a, b in zip(cached, tokens, strict=False):
            if a != b:
                break
            common += 1
        common = min(common, len(tokens) - 1)  # re-evaluate one token: fresh logits
        llm.n_tokens = common
        self.valid_end = common
        with self.timed("prompt"):
            self._run(tokens[common:])
        self.evaluated = 0  # count the answer's tokens only

    def _eval(self, tokens: list[int]) -> None:
        """Advance over `tokens`; where they agree with an undone line's, keep its work."""
        llm = self.llm
        n = int(llm.n_tokens)
        agree = 0
        while (self.REUSE_UNDONE and agree < len(tokens) and n + agree < self.valid_end
               and int(llm.input_ids[n + agree]) == tokens[agree]):
            agree += 1
        if agree == len(tokens) and n + agree in self.kept:
            llm.n_tokens = n + agree
            self.logits = self.kept[n + agree]
            self.reused += agree
            return
        agree = min(agree, len(tokens) - 1)  # the last token evaluated again: its logits
        llm.n_tokens = n + agree
        self.reused += agree
        self._run(tokens[agree:])

    def _run(self, tokens: list[int]) -> None:
        llm = self.llm
        start = int(llm.n_tokens)
        with self.timed("model"):
            llm.eval(tokens)  # drops the KV cells from `start` on first
        import numpy.ctypeslib as npc

        self.evaluated += len(tokens)
        self.valid_end = int(llm.n_tokens)
        for p in [p for p in self.kept if p > start]:
            del self.kept[p]
        # the last evaluated token's logits (llama.cpp keeps one row without logits_all)
        self.logits = npc.as_array(llm._ctx.get_logits(), shape=(self.n_vocab,)).copy()
        self.kept[self.valid_end] = self.logits
        while len(self.kept) > self.MAX_KEPT_LOGITS:
            del self.kept[next(iter(self.kept))]

    def position(self) -> int:
        return int(self.llm.n_tokens)

    def rewind(self, pos: int) -> None:
        """Back to `pos` tokens (the tokens after it undone) with the logits seen there."""
        llm = self.llm
        if self.REUSE_UNDONE and pos <= self.valid_end and pos in self.kept:
            llm.n_tokens = pos
            self.logits = self.kept[pos]
            return
        last = int(llm.input_ids[pos - 1])
        llm.n_tokens = pos - 1
        self._eval([last])

    # -- sampling ------------------------------------------------------------------------------
    def sample(self, mask: np.ndarray) -> tuple[int, float]:
        """One token among those `mask` allows (llama.cpp's default filter chain)."""
        assert self.logits is not None
        allowed = np.flatnonzero(
            np.unpackbits(mask.view(np.uint8), bitorder="little")[: self.n_vocab])
        if allowed.size == 0:
            raise LineRejected("no token continues the line")
        logits = self.logits[allowed].astype(np.float64)
        full = logits - logits.max()
        logp_all = full - np.log(np.exp(full).sum())
        if self.temperature <= 0 or allowed.size == 1:
            i = int(np.argmax(logits))
            return int(allowed[i]), float(logp_all[i])
        order = np.argsort(-logits, kind="stable")[:TOP_K]
        z = logits[order] / self.temperature
        p = np.exp(z - z.max())
        p /= p.sum()
        keep = p >= MIN_P * p.max()
        cum = np.cumsum(p)
        keep &= np.concatenate(([True], cum[:-1] < TOP_P))
        order, p = order[keep], p[keep]
        p /= p.sum()
        j = int(self.rng.choice(len(order), p=p))
        return int(allowed[order[j]]), float(logp_all[order[j]])

    def run_matcher(self, matcher: Any) -> tuple[list[int], float, str]:
        """Sample until the matcher stops; returns the tokens, their log-prob and why it
        ended ("stop", "length", "cancel")."""
        from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask

        mask = allocate_token_bitmask(1, self.n_vocab)
        out: list[int] = []
        logp = 0.0
        while not matcher.is_stopped():
            if self.cancel.is_set():
                return out, logp, "cancel"
            if self.sampled >= self.max_tokens:
                return out, logp, "length"
            with self.timed("masks"):
                fill_next_token_bitmask(matcher, mask)
            if matcher.is_error():
                raise LineRejected(f"grammar error: {matcher.get_error()}")
            token, lp = self.sample(mask[0])
            self.sampled += 1
            logp += lp
            with self.timed("masks"):
                if not matcher.consume_token(token):
                    raise LineRejected(f"grammar refused token {token}: {matcher.get_error()}")
                batch = [token]
                if not matcher.is_stopped():
                    forced = matcher.compute_ff_tokens()
                    if forced and matcher.consume_tokens(forced):
                        batch += forced
            out += batch
            self._eval(batch)
        return out, logp, "stop"


def decode_constrained(llm: Any, tok: Any, prompt_tokens: list[int],
                       constraint: Constraint, *, temperature: float, seed: int,
                       max_tokens: int, cancel: threading.Event) -> DecodeResult:
    """Decode one answer to `prompt_tokens` (which end with the constraint's prefix).

    `llm` is a llama_cpp.Llama (or anything with its `eval`, `n_tokens`, `input_ids`,
    `n_vocab()` and `_ctx.get_logits()`); `tok` is llguidance's tokenizer for its vocabulary.
    """
    t0 = time.perf_counter()
    s = _Session(llm, tok, temperature, seed, max_tokens, cancel)
    s.feed_prompt(prompt_tokens)
    if constraint.mode == "grammar":
        return _decode_grammar(s, constraint, prompt_tokens, t0)
    res = DecodeResult(text="", prompt_tokens=len(prompt_tokens), sampled_tokens=0,
                       finish_reason="stop")
    start_pos = s.position()
    with s.timed("typing"):
        cursor = constraint.lines(0)
    assert cursor is not None, "a typed constraint makes at least one attempt"
    # the answer given: the verified attempt, else the last complete one, else the last one
    kept: tuple[str, bool, float, int] | None = None  # (text, complete, logprob, lines)
    while True:
        res.attempts += 1
        before = s.sampled
        text, logprob, complete, trail = _attempt(s, cursor, res)
        with s.timed("judge"):
            answer = constraint.answer(text, complete)
            verified = complete and constraint.verified(answer)
        outcome = ("verified" if verified else "complete, not verified") if complete \
            else res.finish_reason
        res.notes.append(f"attempt {res.attempts}: {text.count(chr(10))} line(s), {outcome}, "
                         f"{s.sampled - before} tokens\n{text.rstrip()}")
        if complete and not verified:  # search `nearby`: one line away, judged
            t1 = time.perf_counter()
            with s.timed("judge"):
                near = constraint.repaired(trail)
            spent = time.perf_counter() - t1
            if near is not None:
                answer, res.edit, judged = near
                verified = True
                res.notes.append(f"nearby: verified after {judged} neighbour(s), "
                                 f"{spent:.1f}s: {res.edit}")
            elif spent > 0.05:
                res.notes.append(f"nearby: no neighbour verified ({spent:.1f}s)")
        if complete or kept is None or not kept[1]:
            kept = (answer, complete, logprob, res.lines)
        with s.timed("typing"):
            nxt = constraint.lines(res.attempts)
        if nxt is None or res.finish_reason in ("length", "cancel") or res.shortcut or verified:
            break
        # restart from the prompt's end with the next statement budget (search `deepen`)
        res.notes.append(f"attempt {res.attempts} not verified; restarting")
        s.rewind(start_pos)
        res.finish_reason = "stop"
        cursor = nxt
    res.text, complete, res.logprob, res.lines = kept
    if complete:
        res.finish_reason = "stop"
    res.sampled_tokens = s.sampled
    res.evaluated, res.reused = s.evaluated, s.reused
    res.seconds = time.perf_counter() - t0
    res.timings = dict(s.timings)
    return res


def _attempt(s: _Session, cursor: LineCursor, res: DecodeResult
             ) -> tuple[str, float, bool, list[tuple[LineCursor, str]]]:
    """Decode one program from the prompt's end: its lines, their log-prob, whether it is
    complete, and each line with the cursor it was written at. Sets `res.finish_reason` when
    it stops early; counts into `res`."""
    from llguidance import LLMatcher

    # the stack of kept lines: (cursor before the line, token position before it, line text,
    # its log-prob)
    stack: list[tuple[LineCursor, int, str, float]] = []
    # dead[p]: lines written at position p (after p kept lines) that were undone as dead ends
    dead = [0]
    retries = backtracks = rejected = 0
    while not cursor.complete:
        with s.timed("typing"):
            pattern = cursor.pattern()
        if pattern is None:  # dead end: undo the last line and forbid it there
            back, undone = _back_up(s, stack, dead, res, MAX_BACKTRACKS - backtracks)
            backtracks += undone
            res.backtracks += undone
            if back is None:
                res.finish_reason = "dead_end"
                res.notes.append("no well-typed line continues this program")
                break
            cursor = back
            continue
        start = s.position()
        with s.timed("masks"):
            matcher = LLMatcher(s.tok, LLMatcher.grammar_from_regex(pattern))
        if matcher.is_error():
            raise LLMError(f"constrained decoding: bad line pattern: {matcher.get_error()}")
        try:
            tokens, logp, why = s.run_matcher(matcher)
        except LineRejected as exc:
            res.notes.append(str(exc))
            why, tokens, logp = "reject", [], 0.0
        if why in ("length", "cancel"):
            res.finish_reason = why
            break
        line = s.tok.decode_bytes(tokens).decode("utf-8", errors="replace") if tokens else ""
        try:
            if why == "reject":
                raise LineRejected("the line could not be completed")
            with s.timed("typing"):
                nxt = cursor.feed(line)
        except LineRejected as exc:
            rejected += 1
            res.rejected += 1
            res.notes.append(f"rejected {line.strip()!r}: {exc}")
            s.rewind(start)
            if rejected >= MAX_REJECTIONS:
                res.finish_reason = "dead_end"
                break
            retries += 1
            if retries > LINE_RETRIES:
                with s.timed("typing"):
                    cursor = cursor.ban(line)
                retries = 0
            continue
        retries = 0
        stack.append((cursor, start, line, logp))
        dead.append(0)
        cursor = nxt
        with s.timed("judge"):
            early = None if cursor.complete else cursor.shortcut()
        if early is not None:  # a judge verified returning what the model just wrote
            stack.append((cursor, s.position(), early, 0.0))
            dead.append(0)
            with s.timed("typing"):
                cursor = cursor.feed(early)
            res.shortcut = True
            res.notes.append(f"judged return after {len(stack) - 1} line(s): {early.strip()}")
    res.lines = len(stack)
    return ("".join(line for _, _, line, _ in stack), sum(lp for *_, lp in stack),
            cursor.complete, [(c, line) for c, _, line, _ in stack])


def _back_up(s: _Session, stack: list[tuple[LineCursor, int, str, float]], dead: list[int],
             res: DecodeResult, budget: int) -> tuple[LineCursor | None, int]:
    """At a dead end: undo the last kept line and forbid it where it was written; while
    SIBLING_DEAD_ENDS lines have died after the line before, undo that one too (backjumping).
    Returns the cursor to go on from (None when no line is left to undo or `budget` undos are
    spent) and how many lines were undone."""
    undone = 0
    while stack and undone < budget:
        prev, pos, line, _ = stack.pop()
        dead.pop()
        dead[-1] += 1
        res.notes.append(f"{'backjump' if undone else 'dead end'}: undid {line.strip()!r}")
        undone += 1
        s.rewind(pos)
        with s.timed("typing"):
            cursor = prev.ban(line, dead_end=True)
        if dead[-1] < SIBLING_DEAD_ENDS or not stack:
            return cursor, undone
        res.jumps += 1
    return None, undone


def _decode_grammar(s: _Session, constraint: Constraint, prompt_tokens: list[int],
                    t0: float) -> DecodeResult:
    """The whole answer under the task's context-free grammar (prefix already in the prompt)."""
    from llguidance import LLMatcher

    matcher = LLMatcher(s.tok, LLMatcher.grammar_from_lark(constraint.lark()))
    if matcher.is_error():
        raise LLMError(f"constrained decoding: bad grammar: {matcher.get_error()}")
    prefix = s.tok.tokenize_str(constraint.prefix)
    if not matcher.consume_tokens(prefix):
        raise LLMError(f"constrained decoding: grammar rejects the prefix: {matcher.get_error()}")
    try:
        tokens, logp, why = s.run_matcher(matcher)
    except LineRejected as exc:
        tokens, logp, why = [], 0.0, "dead_end"
        notes = [str(exc)]
    else:
        notes = []
    text = constraint.prefix + s.tok.decode_bytes(tokens).decode("utf-8", errors="replace")
    return DecodeResult(text=text, prompt_tokens=len(prompt_tokens), sampled_tokens=s.sampled,
                        finish_reason=why, seconds=time.perf_counter() - t0, logprob=logp,
                        evaluated=s.evaluated, timings=dict(s.timings), notes=notes)
