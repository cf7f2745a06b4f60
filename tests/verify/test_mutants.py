"""Mutant generation for the verifier self-audit (stepsmith.verify.mutants)."""

from __future__ import annotations

import ast
import textwrap

import pytest
import torch

from stepsmith.step.affine import AffineParseError, check_source
from stepsmith.verify.mutants import MUTANT_KINDS, PAPER_BINDING, Mutant, mutants

MOE = """\
E0_a, E0_b = step.Copy().apply(E0)
E1 = step.Map(fn=fn_square).apply(E0_a)  # square
E2 = step.Accum(fn=fn_sum, b=1).apply(E1)
E3 = step.RepeatRef().apply((E2, E0_b))
E4 = step.Repeat(n=D).apply(E3)
parts = step.Partition(N=E_value).apply((E4, sel))
outs = [step.Map(fn=f).apply(p) for f, p in zip([fn_a, fn_b, fn_c], parts)]
return step.Merge(fn=fn_add).apply((outs, sel2))
"""

NORM = """\
x_a, x_b = step.Copy().apply(x)
s = step.Accum(fn=fn_sum, b=1).apply(x_a)
m = step.Map(fn=fn_div_by_d).apply(s)
r = step.Repeat(n=D).apply(m)
return step.Map(fn=fn_minus).apply((x_b, r))
"""

NO_COPY = """\
a = step.Map(fn=fn_a).apply(E0)
b = step.Flatten(L=[1, 2]).apply(E1)
c = step.Zip().apply((a, b))
return c
"""

SAMPLES = {"moe": MOE, "norm": NORM, "no_copy": NO_COPY}


def _parses(src: str) -> bool:
    try:
        ast.parse(src)
    except SyntaxError:
        return False
    return True


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_mutants_are_deterministic_unique_parse_and_differ(name: str) -> None:
    src = SAMPLES[name]
    first = mutants(src)
    assert first == mutants(src)
    assert all(isinstance(m, Mutant) and m.kind in MUTANT_KINDS for m in first)
    sources = [m.source for m in first]
    assert len(set(sources)) == len(sources)
    assert src not in sources
    assert all(_parses(s) for s in sources)
    assert all(m.description for m in first)
    kinds = [m.kind for m in first]
    assert kinds == sorted(kinds, key=MUTANT_KINDS.index)  # grouped in MUTANT_KINDS order


def test_every_kind_is_produced_for_a_rich_program() -> None:
    kinds = {m.kind for m in mutants(MOE, binding={"M": 5, "N": 7, "K": 9, "D": 16, "E": 3})}
    assert kinds == set(MUTANT_KINDS)


def _by_kind(ms: list[Mutant], kind: str) -> list[Mutant]:
    return [m for m in ms if m.kind == kind]


def test_drop_primitive_replaces_a_stage_by_its_input_and_keeps_names() -> None:
    drops = _by_kind(mutants(NORM), "drop_primitive")
    sources = {m.source for m in drops}
    assert NORM.replace("step.Accum(fn=fn_sum, b=1).apply(x_a)", "x_a") in sources
    assert NORM.replace("step.Repeat(n=D).apply(m)", "m") in sources
    assert NORM.replace("step.Map(fn=fn_minus).apply((x_b, r))", "x_b") in sources
    # Copy is never dropped (that is reuse_without_copy's job)
    assert all("x_a, x_b = step.Copy().apply(x)" in s for s in sources)
    assert len(drops) == 4


def test_change_arg_off_by_one_and_other_symbols() -> None:
    ms = _by_kind(mutants(MOE, binding={"M": 5, "N": 7, "D": 16}), "change_arg")
    sources = {m.source for m in ms}
    assert MOE.replace("b=1", "b=2") in sources
    assert MOE.replace("b=1", "b=0") in sources
    assert MOE.replace("n=D", "n=M") in sources and MOE.replace("n=D", "n=N") in sources
    assert MOE.replace("N=E_value", "N=E_value + 1") in sources
    assert MOE.replace("N=E_value", "N=E_value - 1") in sources
    flat = {m.source for m in _by_kind(mutants(NO_COPY), "change_arg")}
    assert NO_COPY.replace("L=[1, 2]", "L=[2, 2]") in flat
    assert NO_COPY.replace("L=[1, 2]", "L=[0, 2]") in flat
    assert NO_COPY.replace("L=[1, 2]", "L=[1, 3]") in flat


def test_change_arg_follows_the_registry_parameters_and_their_kinds() -> None:
    """Which parameters move, and how, is the registry's: a count stays >= 1, a positional
    parameter is mutated like a keyword one, a keyword the primitive does not have is not."""
    src = (
        "a, b, c = step.Copy(n=3).apply(x)\n"
        "s = step.Accum(fn_sum, 2).apply(a)\n"
        "t = step.Map(fn=fn_a, b=1).apply(b)\n"
        "u = step.Copy(n=1).apply(c)\n"
        "return (s, t, u)\n"
    )
    changed = {m.source for m in _by_kind(mutants(src, ["x"]), "change_arg")}
    assert changed == {
        src.replace("n=3", "n=4"), src.replace("n=3", "n=2"),  # Copy's n: a count
        src.replace("fn_sum, 2", "fn_sum, 3"), src.replace("fn_sum, 2", "fn_sum, 1"),  # Accum b
        src.replace("n=1", "n=2"),  # a count never goes below 1
    }  # Map has no parameter b: left alone
    swapped = {m.description for m in _by_kind(mutants(src, ["x"]), "swap_fns")}
    assert swapped == {"swapped the fns `fn_a` and `fn_sum` everywhere"}  # positional fn too


def test_only_one_stream_primitives_taking_a_stream_first_are_dropped() -> None:
    """Copy and Partition return several streams and Merge takes a list of parts first: the
    registry's output arity and argument form, not a list kept here, exclude them."""
    dropped = {m.description.split("removed ")[1].split("(")[0]
               for m in _by_kind(mutants(MOE), "drop_primitive")}
    assert dropped == {"step.Map", "step.Accum", "step.RepeatRef", "step.Repeat"}


def test_swap_fns_swaps_every_occurrence_of_a_pair() -> None:
    ms = _by_kind(mutants(NORM), "swap_fns")
    fns = ["fn_div_by_d", "fn_minus", "fn_sum"]
    assert len(ms) == 3  # all pairs of the three fns
    swapped = NORM.replace("fn_sum", "TMP").replace("fn_minus", "fn_sum").replace("TMP", "fn_minus")
    assert swapped in {m.source for m in ms}
    for m in ms:
        assert sorted(n for n in fns if n in m.source) == fns  # a swap, not a deletion


def test_swap_fns_includes_list_entries_but_not_loop_variables() -> None:
    ms = _by_kind(mutants(MOE), "swap_fns")
    described = " ".join(m.description for m in ms)
    assert "`fn_a` and `fn_b`" in described
    assert "`f`" not in described


def test_reuse_without_copy_introduces_an_affine_violation() -> None:
    for src in (MOE, NORM, NO_COPY):
        ms = _by_kind(mutants(src), "reuse_without_copy")
        assert ms, src
        for m in ms:
            assert check_source(m.source), m.source
    (first, *_) = _by_kind(mutants(NORM), "reuse_without_copy")
    assert "s = step.Accum(fn=fn_sum, b=1).apply(x)\n" in first.source


def test_reuse_without_copy_through_an_indexed_copy() -> None:
    src = "c = step.Copy().apply(x)\nreturn step.Zip().apply((c[0], c[1]))\n"
    ms = _by_kind(mutants(src), "reuse_without_copy")
    assert [m.source for m in ms] == [
        "c = step.Copy().apply(x)\nreturn step.Zip().apply((x, c[1]))\n",
        "c = step.Copy().apply(x)\nreturn step.Zip().apply((c[0], x))\n",
    ]


def test_return_input_for_each_input() -> None:
    ms = _by_kind(mutants(NO_COPY), "return_input")
    assert [m.source.splitlines()[-1] for m in ms] == ["return E0", "return E1"]
    tuple_ret = "a = step.Map(fn=fn_a).apply(x)\nreturn a, x\n"
    ms = _by_kind(mutants(tuple_ret, params=["x"]), "return_input")
    assert [m.source for m in ms] == ["a = step.Map(fn=fn_a).apply(x)\nreturn x, x\n"]


def test_symbol_to_literal_uses_the_binding() -> None:
    ms = _by_kind(mutants(NORM, binding={"D": 8, "M": 3}), "symbol_to_literal")
    assert [m.source for m in ms] == [NORM.replace("n=D", "n=8")]
    default = _by_kind(mutants(NORM), "symbol_to_literal")
    assert [m.source for m in default] == [NORM.replace("n=D", f"n={PAPER_BINDING['D']}")]


def test_symbol_value_names_become_literals_too() -> None:
    src = "parts = step.Partition(N=E_value).apply((x, sel))\nreturn parts\n"
    ms = _by_kind(mutants(src, binding={"E": 4, "D": 16}), "symbol_to_literal")
    assert [m.source for m in ms] == [src.replace("N=E_value", "N=4")]
    assert _by_kind(mutants(src, binding={"D": 16}), "symbol_to_literal") == []


def test_symbols_that_are_streams_are_left_alone() -> None:
    attn = "s = step.Map(fn=fn_qk).apply((Q, K))\nr = step.Repeat(n=D).apply(s)\nreturn r\n"
    ms = mutants(attn, params=["Q", "K"], binding={"K": 9, "D": 16})
    lits = _by_kind(ms, "symbol_to_literal")
    assert [m.source for m in lits] == [attn.replace("n=D", "n=16")]
    assert not any("(Q, 9)" in m.source for m in ms)


def test_comments_and_layout_survive_in_mutants() -> None:
    for m in mutants(MOE):
        assert "# square" in m.source
        assert m.source.count("\n") == MOE.count("\n")


def test_unparsable_program_is_a_clear_error() -> None:
    with pytest.raises(AffineParseError, match="line 2"):
        mutants("a = step.Map(fn=fn_a).apply(x)\nb = (\n")


def test_def_wrapped_and_indented_programs() -> None:
    wrapped = "def impl(x):\n    y = step.Map(fn=fn_a).apply(x)\n    return y\n"
    ms = mutants(wrapped)
    assert [(m.kind, m.source) for m in ms] == [
        ("drop_primitive", "def impl(x):\n    y = x\n    return y\n"),
        ("return_input", "def impl(x):\n    y = step.Map(fn=fn_a).apply(x)\n    return x\n"),
    ]
    indented = "    y = step.Map(fn=fn_a).apply(x)\n    return step.Accum(fn=fn_s, b=1).apply(y)\n"
    ms = mutants(indented)
    assert any(m.kind == "change_arg" for m in ms)
    for m in ms:
        assert _parses("if 1:\n" + m.source)


# ----------------------------------------------------------------------------- behaviour

from stepsmith import step  # noqa: E402

RUNNABLE = """\
a, b = step.Copy().apply(E0)
s = step.Accum(fn=fn_sum, b=1).apply(a)
r = step.Repeat(n=N).apply(s)
return step.Map(fn=fn_sub).apply((b, r))
"""


def _run(body: str, binding: dict[str, int], affine: str = "strict") -> torch.Tensor:
    ns: dict = {"step": step}
    for k, v in binding.items():
        ns[k] = step.Dim.sym(k)
        ns[f"{k}_value"] = v
    ns["fn_sum"] = step.Fn.from_source(
        "fn_sum", "return [state[0] + input[0]]", "fp32", "fp32", init=[0], namespace=ns
    )
    ns["fn_sub"] = step.Fn.from_source(
        "fn_sub", "return [input[0] - input[1]]", ["fp32", "fp32"], "fp32", namespace=ns
    )
    exec(compile("def impl(E0):\n" + textwrap.indent(body, "    "), "<m>", "exec"), ns)
    gen = torch.Generator().manual_seed(0)
    data = torch.randn(binding["M"], binding["N"], generator=gen)
    with step.Session(binding=binding, affine=affine):
        x = step.Stream.input("E0", "fp32", ["N", "M"], data)
        return ns["impl"](x).data


def test_mutant_kinds_really_change_behaviour() -> None:
    paper, other = {"M": 5, "N": 7}, {"M": 3, "N": 4}
    ref = _run(RUNNABLE, paper)
    ms = mutants(RUNNABLE, binding=paper)
    assert {m.kind for m in ms} >= {"drop_primitive", "reuse_without_copy", "symbol_to_literal"}
    for m in _by_kind(ms, "reuse_without_copy"):
        with pytest.raises(step.StepAffineError):
            _run(m.source, paper)
    for m in _by_kind(ms, "symbol_to_literal"):
        # symbolic shape typing (`[7, M]` vs `[N, M]`) or another binding must expose it
        assert m.source == RUNNABLE.replace("n=N", "n=7")
        with pytest.raises(step.StepError):
            _run(m.source, other)
    for m in _by_kind(ms, "drop_primitive") + _by_kind(ms, "return_input"):
        try:
            out = _run(m.source, paper)
        except step.StepError:
            continue
        assert out.shape != ref.shape or not torch.allclose(out, ref), m.description


def test_garbled_programs_give_mutants_or_a_parse_error() -> None:
    """Random edits of a program: mutants() either works (every mutant parses) or raises the
    documented AffineParseError, never anything else."""
    import random

    rng = random.Random(7)
    for _ in range(300):
        src = MOE
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(src))
            src = src[:i] + rng.choice(["(", ")", ",", "x", "\n", " = ", "["]) + src[i + 1 :]
        try:
            ms = mutants(src)
        except AffineParseError:
            continue
        assert all(_parses("if 1:\n" + textwrap.indent(m.source, " ")) for m in ms)
