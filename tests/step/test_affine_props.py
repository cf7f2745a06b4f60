"""Property tests for the affine repair on generated straight-line programs.

Programs are built from shape-preserving primitives on rank-1 fp32 streams (shape [N, M])
(unary/binary Map, nested Zip, Scan, Copy, reassignment, comprehensions and for loops over
two streams), with random stream reuse and comments, so that any
combination type-checks and the repaired program can be executed and compared against the
original run with runtime affine checking off.
"""

from __future__ import annotations

import textwrap

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stepsmith.step.affine import check_source, repair

INPUTS = ["E0", "E1"]


@st.composite
def programs(draw: st.DrawFn) -> str:
    """A straight-line STeP body over inputs E0, E1 with arbitrary stream reuse."""
    live = list(INPUTS)  # expressions naming a stream
    names = list(INPUTS)  # plain names (can be reassigned)
    lines: list[str] = []
    fresh = iter(f"S{i}" for i in range(100))
    kinds = ["neg", "add", "zipadd", "scan", "copy", "reassign", "comp", "loop"]
    for _ in range(draw(st.integers(1, 7))):
        kind = draw(st.sampled_from(kinds))
        a = draw(st.sampled_from(live))
        b = draw(st.sampled_from(live))
        c = draw(st.sampled_from(live))
        target = next(fresh)
        if kind == "comp":  # b is consumed once per iteration (twice in total)
            lines.append(f"{target} = [step.Map(fn=fn_add2).apply((q, {b})) for q in [{a}, {c}]]")
            live += [f"{target}[0]", f"{target}[1]"]
            continue
        if kind == "loop":  # loop variable, loop-invariant b, a stream defined in the loop
            lines.append(f"for q in [{a}, {c}]:")
            lines.append(f"    {target} = step.Map(fn=fn_add2).apply((q, {b}))")
            live.append(target)
            names.append(target)
            continue
        if kind == "neg":
            line = f"{target} = step.Map(fn=fn_neg).apply({a})"
        elif kind == "add":
            line = f"{target} = step.Map(fn=fn_add2).apply(({a}, {b}))"
        elif kind == "zipadd":
            line = f"{target} = step.Map(fn=fn_add2).apply(step.Zip().apply(({a}, {b})))"
        elif kind == "scan":
            line = f"{target} = step.Scan(fn=fn_sum, b=1).apply({a})"
        elif kind == "copy":
            other = next(fresh)
            line = f"{target}, {other} = step.Copy().apply({a})"
            live.append(other)
            names.append(other)
        else:  # reassign an existing name: a new stream under an old name
            target = draw(st.sampled_from(names))
            line = f"{target} = step.Map(fn=fn_neg).apply(({b}))"
        if draw(st.booleans()):
            line += f"  # uses {a}"
        lines.append(line)
        if target not in live:
            live.append(target)
            names.append(target)
        if draw(st.integers(0, 5)) == 0:
            lines.append("")
    outs = draw(st.lists(st.sampled_from(live), min_size=1, max_size=2))
    lines.append("return " + ", ".join(outs) if len(outs) > 1 else f"return {outs[0]}")
    return "\n".join(lines) + "\n"


def _subsequence(needles: list[str], haystack: list[str]) -> bool:
    it = iter(haystack)
    return all(any(n == h for h in it) for n in needles)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_repair_fixes_every_straight_line_program(src: str) -> None:
    before = check_source(src, params=INPUTS)
    out = repair(src, params=INPUTS)
    assert check_source(out, params=INPUTS) == []
    assert repair(out, params=INPUTS) == out
    if not before:
        assert out == src
        return
    # k uses of a stream -> k-1 Copies; untouched lines survive verbatim and in order
    inserted = sum(v.count - 1 for v in before)
    assert out.count("\n") == src.count("\n") + inserted
    touched = {line for v in before for line in v.lines}
    touched |= {i for i, ln in enumerate(src.split("\n"), 1) if ln.startswith("for ")}
    kept = [ln for i, ln in enumerate(src.split("\n"), 1) if i not in touched]
    assert _subsequence(kept, out.split("\n"))


# ----------------------------------------------------------------------------- execution

from stepsmith import step  # noqa: E402


def _namespace() -> dict:
    ns: dict = {"step": step}
    ns["fn_neg"] = step.Fn.from_source("fn_neg", "return [-input[0]]", "fp32", "fp32", namespace=ns)
    ns["fn_add2"] = step.Fn.from_source(
        "fn_add2", "return [input[0] + 2 * input[1]]", ["fp32", "fp32"], "fp32", namespace=ns
    )
    ns["fn_sum"] = step.Fn.from_source(
        "fn_sum", "return [state[0] * 0.5 + input[0]]", "fp32", "fp32", init=[0], namespace=ns
    )
    return ns


_NS = _namespace()


def _run(body: str, affine: str, seed: int) -> list[torch.Tensor]:
    """Run like the verifier: `def impl(<inputs>):` + body, inside a Session."""
    src = f"def impl({', '.join(INPUTS)}):\n" + textwrap.indent(body, "    ")
    ns = dict(_NS)
    exec(compile(src, "<impl>", "exec"), ns)  # noqa: S102 - generated test programs
    gen = torch.Generator().manual_seed(seed)
    with step.Session(binding={"N": 4, "M": 3}, affine=affine):
        inputs = [
            step.Stream.input(name, "fp32", ["N", "M"], torch.randn(3, 4, generator=gen))
            for name in INPUTS
        ]
        out = ns["impl"](*inputs)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return [o.data for o in outs]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs(), st.integers(0, 2**16))
def test_repaired_program_runs_strict_and_computes_the_same(src: str, seed: int) -> None:
    fixed = repair(src, params=INPUTS)
    expected = _run(src, "off", seed)
    got = _run(fixed, "strict", seed)
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=0)


def test_original_with_reuse_is_rejected_at_runtime_but_repaired_is_not() -> None:
    """Guards the execution test above: reuse really is an error in strict mode."""
    src = "S0 = step.Map(fn=fn_add2).apply((E0, E0))\nreturn S0\n"
    with pytest.raises(step.StepAffineError):
        _run(src, "strict", 0)
    (got,) = _run(repair(src, params=INPUTS), "strict", 0)
    (exp,) = _run(src, "off", 0)
    torch.testing.assert_close(got, exp, rtol=0, atol=0)


# ----------------------------------------------------------------------------- robustness

_SEED_PROGRAMS = [
    "E0_a, E0_b = step.Copy().apply(E0)\nE1 = step.Map(fn=fn_sq).apply(E0_a)\n"
    "parts = step.Partition(N=E_value).apply((E1, sel))\n"
    "outs = [step.Map(fn=f).apply((p, E0_b)) for f, p in zip([fn_a, fn_b], parts)]\n"
    "return step.Merge(fn=fn_add).apply((outs, sel))\n",
    "for i in range(3):\n    x = step.Zip().apply((x, w))\nreturn step.Map(fn=fn_a).apply(x)\n",
]
_TOKENS = ["(", ")", "[", "]", ",", " for ", " in ", "x", "E0", "\n", "    ", ":", "=", "#", "'"]


@st.composite
def garbled(draw: st.DrawFn) -> str:
    """A seed program with a few random insertions, deletions and duplications."""
    src = draw(st.sampled_from(_SEED_PROGRAMS))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(src)))
        j = min(len(src), i + draw(st.integers(1, 12)))
        op = draw(st.sampled_from(["insert", "delete", "duplicate"]))
        if op == "insert":
            src = src[:i] + draw(st.sampled_from(_TOKENS)) + src[i:]
        elif op == "delete":
            src = src[:i] + src[j:]
        else:
            src = src[:j] + src[i:j] + src[j:]
    return src


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(garbled())
def test_garbled_programs_never_crash_the_analysis(src: str) -> None:
    from stepsmith.step.affine import AffineParseError

    try:
        before = check_source(src)
    except AffineParseError:
        before = None
    out = repair(src)
    assert repair(out) == out
    if before is None:
        assert out == src
    else:
        assert len(check_source(out)) <= len(before)
