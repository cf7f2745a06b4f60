"""The constrained decoding loop on a scripted byte-level model: it writes only offered lines,
undoes rejected ones in the model's context, and finishes or stops cleanly."""

from __future__ import annotations

import ctypes
import re
import threading

import numpy as np
import pytest
from llguidance import LLTokenizer, TokenizerWrapper

from stepsmith.agents.decoding.constraint import constraint_for
from stepsmith.agents.decoding.statements import PREFIX, program_lines
from stepsmith.llm.llama_decode import TIMED_PARTS, decode_constrained
from stepsmith.tasks.suite import get_task

EOS = 256


class _Bytes:
    def __init__(self) -> None:
        self.tokens = [bytes([i]) for i in range(256)] + [b"\xff<eos>"]
        self.eos_token_id = EOS
        self.bos_token_id = None
        self.special_token_ids = [EOS]

    def __call__(self, s: bytes) -> list[int]:
        return list(s)


class _Ctx:
    def __init__(self, model: ScriptedModel) -> None:
        self.model = model

    def get_logits(self) -> ctypes._Pointer:
        return self.model.logits.ctypes.data_as(ctypes.POINTER(ctypes.c_float))


class ScriptedModel:
    """A 'model' over bytes that wants to write `script` after the prompt: the next script
    byte gets a high logit, every other byte a low one (so the mask decides when they differ).
    It records every eval, so the test sees what reached the context."""

    def __init__(self, script: str, prompt_len: int) -> None:
        self.script = script.encode()
        self.prompt_len = prompt_len
        self.input_ids = np.zeros(1 << 14, dtype=np.intc)
        self.n_tokens = 0
        self.logits = np.zeros(257, dtype=np.float32)
        self._ctx = _Ctx(self)
        self.evals = 0

    def n_vocab(self) -> int:
        return 257

    def eval(self, tokens: list[int]) -> None:
        self.input_ids[self.n_tokens:self.n_tokens + len(tokens)] = tokens
        self.n_tokens += len(tokens)
        self.evals += 1
        written = bytes(int(t) for t in self.input_ids[self.prompt_len:self.n_tokens])
        self.logits[:] = np.linspace(0, 1, 257, dtype=np.float32)  # a weak, fixed preference
        # continue the script where the context agrees with it; else prefer a newline
        k = len(written)
        if written == self.script[:k] and k < len(self.script):
            self.logits[self.script[k]] = 30.0
        else:
            self.logits[ord("\n")] = 20.0


@pytest.fixture(scope="module")
def tok() -> LLTokenizer:
    return LLTokenizer(TokenizerWrapper(_Bytes()))


def _run(task_name: str, body: str, tok: LLTokenizer, max_tokens: int = 4000):
    task = get_task(task_name)
    c = constraint_for(task, "typed")
    prompt = list(b"<prompt>" + PREFIX.encode())
    model = ScriptedModel(body, len(prompt))
    res = decode_constrained(model, tok, prompt, c, temperature=0.0, seed=1,
                             max_tokens=max_tokens, cancel=threading.Event())
    return task, c, model, res


def test_the_reference_program_decodes_to_itself(tok) -> None:
    task = get_task("norm_rmsnorm_rows")
    body = "".join(f"  {ln}\n" for ln in program_lines(task.impl or ""))
    _, c, model, res = _run("norm_rmsnorm_rows", body, tok)
    assert res.finish_reason == "stop" and res.rejected == 0 and res.backtracks == 0
    assert res.text == PREFIX + body + c.suffix
    written = bytes(int(t) for t in model.input_ids[len(b"<prompt>") + len(PREFIX):model.n_tokens])
    assert written.decode() == body  # the context holds exactly the kept answer


def test_an_ill_typed_wish_is_bent_into_a_well_typed_line(tok) -> None:
    # the model wants Accum with b=3 on a rank-1 stream: the mask allows only legal b values
    task = get_task("norm_rmsnorm_rows")
    lines = program_lines(task.impl or "")
    bad = "  x = step.Accum(fn=fn_mean, b=3).apply(E0)\n"
    _, c, _, res = _run("norm_rmsnorm_rows", bad, tok, max_tokens=600)
    assert "b=3" not in res.text
    cursor = c.lines()
    for line in res.text[len(PREFIX):].removesuffix(c.suffix).splitlines():
        cursor = cursor.feed(line)  # every kept line was offered
    assert lines  # the task has a reference program


def test_a_name_in_use_cannot_even_be_started(tok) -> None:
    task = get_task("gemm_bias_relu")
    rhs = program_lines(task.impl or "")[0].partition(" = ")[2]
    _, _, _, res = _run("gemm_bias_relu", f"  E0 = {rhs}\n", tok, max_tokens=300)
    assert "  E0 = " not in res.text  # E0 is an input
    # ...and no line was even tried with it (the mask, not a rejection, kept it out)
    assert not any("'E0'" in note for note in res.notes)


def test_a_rejected_line_is_undone_in_the_context(tok) -> None:
    # the same new name twice on the left passes the line pattern but not `advance`
    _, c, model, res = _run("gemm_bias_relu", "  a, a = step.Copy().apply(E0)\n", tok,
                            max_tokens=800)
    assert res.rejected >= 1
    assert "a, a = " not in res.text
    kept = res.text[len(PREFIX):].removesuffix(c.suffix)
    written = bytes(int(t) for t in model.input_ids[len(b"<prompt>") + len(PREFIX):model.n_tokens])
    assert written.decode().startswith(kept)  # the rejected line is gone from the context


def test_undone_lines_are_not_evaluated_again(tok, monkeypatch) -> None:
    """A resampled line that starts as the undone one did reuses its KV cells and logits:
    the same answer for fewer evaluated tokens (the scripted logits depend on the context
    only, so any stale cell would change the answer)."""
    from stepsmith.llm import llama_decode

    script = "  a, a = step.Copy().apply(E0)\n"
    monkeypatch.setattr(llama_decode._Session, "REUSE_UNDONE", False)
    _, _, plain_model, plain = _run("gemm_bias_relu", script, tok, max_tokens=800)
    monkeypatch.setattr(llama_decode._Session, "REUSE_UNDONE", True)
    _, c, model, res = _run("gemm_bias_relu", script, tok, max_tokens=800)
    assert res.text == plain.text and res.rejected == plain.rejected >= 1
    assert plain.reused == 0 and res.reused > 0
    assert plain.evaluated > res.evaluated
    assert model.evals < plain_model.evals
    kept = res.text[len(PREFIX):].removesuffix(c.suffix)
    written = bytes(int(t) for t in model.input_ids[len(b"<prompt>") + len(PREFIX):model.n_tokens])
    assert written.decode().startswith(kept)  # the context holds the kept answer


def test_the_token_budget_stops_decoding(tok) -> None:
    task = get_task("gemm_bias_relu")
    body = "".join(f"  {ln}\n" for ln in program_lines(task.impl or ""))
    _, _, _, res = _run("gemm_bias_relu", body, tok, max_tokens=20)
    assert res.finish_reason == "length" and res.sampled_tokens <= 20


def test_a_judged_return_ends_the_answer_where_the_output_was_written(tok) -> None:
    # the model writes the reference's statements and would then ramble on (its script ends;
    # it prefers newlines and the mask bends that into more statements); the judge sees that
    # returning the stream the last statement made verifies, and the answer ends there
    task = get_task("gemm_bias_relu")
    lines = program_lines(task.impl or "")
    body = "".join(f"  {ln}\n" for ln in lines[:-1])
    verified = PREFIX + body + f"  {lines[-1]}\n" + "```"
    judged: list[str] = []

    def judge(answer: str) -> bool:
        judged.append(answer)
        return answer == verified

    c = constraint_for(task, "typed", judge)
    prompt = list(b"<prompt>" + PREFIX.encode())
    res = decode_constrained(ScriptedModel(body, len(prompt)), tok, prompt, c,
                             temperature=0.0, seed=1, max_tokens=4000, cancel=threading.Event())
    assert res.shortcut and res.finish_reason == "stop"
    assert res.text == verified and judged[-1] == verified
    # without a judge the same model writes on past the output
    plain = decode_constrained(ScriptedModel(body, len(prompt)), tok, prompt,
                               constraint_for(task, "typed"), temperature=0.0, seed=1,
                               max_tokens=4000, cancel=threading.Event())
    assert not plain.shortcut and plain.text != verified


def _deepen_run(body: str, verified: str, budgets: tuple[int, ...], max_tokens: int = 8000):
    task = get_task("norm_rmsnorm_rows")
    judged: list[str] = []

    def judge(answer: str) -> bool:
        judged.append(answer)
        return answer == verified

    c = constraint_for(task, "typed", judge, budgets)
    prompt = list(b"<prompt>" + PREFIX.encode())
    model = ScriptedModel(body, len(prompt))
    res = decode_constrained(model, tok=_TOK, prompt_tokens=prompt, constraint=c,
                             temperature=0.0, seed=1, max_tokens=max_tokens,
                             cancel=threading.Event())
    return c, model, res, judged, len(prompt)


_TOK = LLTokenizer(TokenizerWrapper(_Bytes()))


def test_deepen_restarts_a_failed_short_attempt_with_a_larger_budget() -> None:
    # the reference needs 6 statements: a 4-statement attempt cannot write it and fails the
    # judge; the decoder undoes it and the 8-statement attempt writes the program that verifies
    lines = program_lines(get_task("norm_rmsnorm_rows").impl or "")
    assert len(lines) - 1 > 4
    body = "".join(f"  {ln}\n" for ln in lines)
    c, model, res, judged, n_prompt = _deepen_run(body, PREFIX + body + "```", (4, 8, 16))
    assert res.text == PREFIX + body + c.suffix and res.finish_reason == "stop"
    assert res.attempts == 2 and res.lines == len(lines)
    assert any("attempt 1 not verified" in note for note in res.notes)
    assert judged[-1] == res.text  # the judge verified the answer it gives
    # the call log's trace tells both attempts, their programs and the judge's verdicts
    trace = res.trace()
    assert trace.startswith("2 attempt(s)") and "attempt 2: " in trace
    # (how many lines attempt 1 keeps depends on how far the look-ahead backs it up)
    assert re.search(r"attempt 1: [0-3] line\(s\), dead_end", trace)
    assert "dead end: undid" in trace
    assert f"attempt 2: {len(lines)} line(s), verified" in trace and f"  {lines[1]}" in trace
    written = bytes(int(t) for t in model.input_ids[n_prompt:model.n_tokens])
    # the failed attempt is gone from the context (the judged return is never fed to the model)
    assert written.decode() == "".join(f"  {ln}\n" for ln in lines[:-1])
    # where the seconds went: every part timed, none counted twice (nested timers add to
    # the outer part), and the trace's second line says so
    assert set(res.timings) == set(TIMED_PARTS) and all(v >= 0 for v in res.timings.values())
    assert res.timings["typing"] > 0 and res.timings["judge"] > 0 and res.timings["model"] > 0
    assert sum(res.timings.values()) <= res.seconds
    assert trace.splitlines()[1].startswith("seconds: prompt ")
    # one budget of 4 statements: one attempt, no restart, the model's best short program
    c1, _, one, _, _ = _deepen_run(body, PREFIX + body + "```", (4,))
    assert one.attempts == 1 and one.text != PREFIX + body + c1.suffix


def test_deepen_gives_the_last_complete_attempt_when_none_verifies() -> None:
    lines = program_lines(get_task("norm_rmsnorm_rows").impl or "")
    body = "".join(f"  {ln}\n" for ln in lines)
    c, _, res, judged, _ = _deepen_run(body, "never", (4, 8, 16))
    assert res.attempts == 3 and res.finish_reason == "stop"
    assert res.text.endswith(c.suffix) and "  return " in res.text  # a complete program
    # the token budget is the sample's, shared by its attempts: a tight one stops restarting
    tight_c, _, tight, _, _ = _deepen_run(body, "never", (4, 8, 16), max_tokens=150)
    assert tight.sampled_tokens <= 150 and tight.attempts < 3


def test_restarts_need_a_judge_and_are_part_of_the_cache_identity() -> None:
    task = get_task("gemm_bias_relu")
    with pytest.raises(ValueError, match="restarts need a judge"):
        constraint_for(task, "typed", None, (4, 16))
    plain = constraint_for(task, "typed", lambda answer: False)
    deep = constraint_for(task, "typed", lambda answer: False, (4, 8, 16))
    assert plain is not None and deep is not None
    assert plain.identity != deep.identity and "+deepen4-8-16" in deep.identity
    from stepsmith.agents.decoding.constraint import Budget
    stalled = constraint_for(task, "typed", lambda answer: False, (Budget(4, 1), Budget(16)))
    assert stalled is not None and "+deepen4s1-16" in stalled.identity
    assert plain.lines(1) is None and deep.lines(2) is not None and deep.lines(3) is None


def test_nearby_edits_a_failed_program_instead_of_restarting() -> None:
    # the model writes attn_scan_divsum with the Zip's streams in the wrong order (the 1.5B
    # model's answer, all fp32, so the types allow it); under search nearby the verifier
    # judges its one-line neighbours before a restart, and the swapped Zip verifies
    from stepsmith.agents.decoding.constraint import DEEPEN_BUDGETS
    from stepsmith.agents.decoding.judge import PrefixJudge
    from stepsmith.agents.decoding.nearby import MAX_NEARBY
    from stepsmith.agents.extract import extract_impl
    from stepsmith.verify.pool import VerifierPool

    task = get_task("attn_scan_divsum")
    body = ("  E2 = step.Scan(fn=fn_expmaxdiff, b=1).apply(E0)\n"
            "  E3 = step.Zip().apply((E2, E0, E1))\n"
            "  E4 = step.Accum(fn=fn_divsum, b=1).apply(E3)\n"
            "  E5 = step.Map(fn=fn_take_output).apply(E4)\n"
            "  return E5\n")
    prompt = list(b"<prompt>" + PREFIX.encode())
    with VerifierPool(workers=1) as pool:
        results = []
        for nearby in (MAX_NEARBY, 0):
            c = constraint_for(task, "typed", PrefixJudge(task, pool), DEEPEN_BUDGETS, nearby)
            results.append(decode_constrained(
                ScriptedModel(body, len(prompt)), _TOK, prompt, c, temperature=0.0, seed=1,
                max_tokens=4000, cancel=threading.Event()))
        near, plain = results
        assert near.attempts == 1 and near.finish_reason == "stop"
        assert near.edit == ("line 2: 'E3 = step.Zip().apply((E2, E0, E1))' -> "
                             "'E3 = step.Zip().apply((E0, E2, E1))'")
        assert "one line edited" in near.trace() and "nearby: verified after 1" in near.trace()
        assert pool.verify(task, extract_impl(near.text)).passed
        # without nearby the same model's attempt fails and the sample restarts
        assert plain.attempts > 1 and not plain.edit


class _TreeCursor:
    """A toy language (the decoder is language-agnostic): each position offers the lines of
    `tree[path]`; a path with no entry in `tree` is a dead end unless it is in `done`."""

    def __init__(self, tree: dict[str, list[str]], done: set[str], path: str = "",
                 banned: frozenset[str] = frozenset()) -> None:
        self.tree, self.done, self.path, self.banned = tree, done, path, banned

    @property
    def complete(self) -> bool:
        return self.path in self.done

    def _offered(self) -> list[str]:
        return [ln for ln in self.tree.get(self.path, []) if ln not in self.banned]

    def pattern(self) -> str | None:
        offered = self._offered()
        return None if self.complete or not offered else "|".join(
            re.escape(ln) + r"\n" for ln in offered)

    def feed(self, line: str) -> _TreeCursor:
        assert line.rstrip("\n") in self._offered()
        return _TreeCursor(self.tree, self.done, self.path + line.rstrip("\n") + "/")

    def ban(self, line: str, *, dead_end: bool = False) -> _TreeCursor:
        return _TreeCursor(self.tree, self.done, self.path, self.banned | {line.rstrip("\n")})

    def shortcut(self) -> str | None:
        return None


class _TreeConstraint:
    mode, identity, prefix, suffix = "typed", "tree", "", ""

    def __init__(self, tree: dict[str, list[str]], done: set[str]) -> None:
        self.tree, self.done = tree, done

    def grammar(self) -> str:
        return ""

    def lark(self) -> str:
        return ""

    def lines(self, attempt: int = 0) -> _TreeCursor | None:
        return _TreeCursor(self.tree, self.done) if attempt == 0 else None

    def answer(self, body: str, complete: bool) -> str:
        return body

    def verified(self, answer: str) -> bool:
        return False

    def repaired(self, trail):
        return None


def _tree_run(tree: dict[str, list[str]], done: set[str], script: str):
    prompt = list(b"<prompt>")
    return decode_constrained(ScriptedModel(script, len(prompt)), _TOK, prompt,
                              _TreeConstraint(tree, done), temperature=0.0, seed=1,
                              max_tokens=4000, cancel=threading.Event())


# the model wants `a` then `p`; everything after `a` dies one line later, so the program must
# start with `b`. Plain backtracking tries all 5 lines after `a` before it undoes `a`.
_TREE = {"": ["a", "b"], "a/": ["p", "q", "r", "s", "t"], "b/": ["z"]}


def test_backjumping_undoes_a_line_after_which_every_line_tried_died(monkeypatch) -> None:
    from stepsmith.llm import llama_decode

    res = _tree_run(_TREE, {"b/z/"}, "a\np\n")
    assert res.text == "b\nz\n" and res.finish_reason == "stop"
    k = llama_decode.SIBLING_DEAD_ENDS
    assert res.backtracks == k + 1 and res.jumps == 1  # k dead lines after `a`, then `a`
    assert "backjump: undid 'a'" in res.trace() and "(1 backjump(s))" in res.trace()
    monkeypatch.setattr(llama_decode, "SIBLING_DEAD_ENDS", 99)
    plain = _tree_run(_TREE, {"b/z/"}, "a\np\n")
    assert plain.text == res.text and plain.jumps == 0
    assert plain.backtracks == len(_TREE["a/"]) + 1 > res.backtracks


def test_backjumps_cascade_and_count_against_the_backtrack_budget(monkeypatch) -> None:
    from stepsmith.llm import llama_decode

    # under `a/b/` every line dies: k dead ends undo `b`, and the third line that died after
    # `a` undoes `a` too; with a budget of one fewer backtrack the answer is a dead end
    k = llama_decode.SIBLING_DEAD_ENDS
    kids = [chr(ord("m") + i) for i in range(k)]
    tree = {"": ["a", "y"], "a/": ["b", *[f"{c}{c}" for c in kids[1:]]], "a/b/": kids,
            "y/": ["z"]}
    res = _tree_run(tree, {"y/z/"}, "a\nb\nm\n")
    assert res.text == "y\nz\n" and res.jumps == 2
    assert res.backtracks == k + 1 + (k - 1) + 1
    monkeypatch.setattr(llama_decode, "MAX_BACKTRACKS", res.backtracks - 1)
    short = _tree_run(tree, {"y/z/"}, "a\nb\nm\n")
    assert short.finish_reason == "dead_end" and short.backtracks == res.backtracks - 1
