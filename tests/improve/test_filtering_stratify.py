"""σ (AST-isomorphism filtering) and β (difficulty stratification)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stepsmith.demos import canonical_form
from stepsmith.demos import isomorphic as is_isomorphic
from stepsmith.improve.filtering import pure_code_lines, select_representative
from stepsmith.improve.stratify import boundaries, cumulative, split_evenly, stratify

PROG = """\
sq = step.Map(fn=Square).apply(x)
total = step.Accum(fn=Add, b=1).apply(sq)
return total
"""


def test_renamed_bound_variables_are_isomorphic() -> None:
    renamed = "a1 = step.Map(fn=Square).apply(x)\nzz = step.Accum(fn=Add, b=1).apply(a1)\nreturn zz\n"
    assert is_isomorphic(PROG, renamed)


def test_comments_blank_lines_keyword_order_do_not_matter() -> None:
    noisy = (
        "# square every element\n\n"
        "s = step.Map(fn=Square).apply(x)  # stream of squares\n"
        "'''docstring-ish note'''\n"
        "t = step.Accum(b=1, fn=Add).apply(s)\n\nreturn t\n"
    )
    assert is_isomorphic(PROG, noisy)


def test_free_names_carry_meaning() -> None:
    # A different fn, a different input stream or a different constant is a different program.
    assert not is_isomorphic(PROG, PROG.replace("Square", "Sqrt"))
    assert not is_isomorphic(PROG, PROG.replace("apply(x)", "apply(y)"))
    assert not is_isomorphic(PROG, PROG.replace("b=1", "b=2"))


def test_swapping_which_variable_is_used_is_not_isomorphic() -> None:
    a = "p, q = step.Copy().apply(x)\nu = step.Map(fn=F).apply(p)\nreturn (u, q)"
    b = "p, q = step.Copy().apply(x)\nu = step.Map(fn=F).apply(q)\nreturn (u, p)"
    assert not is_isomorphic(a, b)


def test_unparsable_only_matches_itself() -> None:
    assert canonical_form("x = (") == canonical_form("x =   (")
    assert canonical_form("x = (") != canonical_form("y = (")


def test_pure_code_lines() -> None:
    src = "# header\n\nx = step.Map(\n    fn=F,\n).apply(a)  # c\n'''note'''\nreturn x\n"
    assert pure_code_lines(src) == 4
    assert pure_code_lines("") == 0


def test_select_representative_fewest_pure_lines_one_per_class() -> None:
    long_variant = (
        "i = step.Identity().apply(x)\n"
        "sq = step.Map(fn=Square).apply(i)\n"
        "total = step.Accum(fn=Add, b=1).apply(sq)\nreturn total\n"
    )
    commented = "# many\n# comments\n" + PROG.replace("sq", "s2")
    answers = [long_variant, commented, PROG, long_variant]
    rep = select_representative(answers)
    assert rep.classes == 2
    assert rep.lines == 3
    assert rep.impl in (PROG, commented) and is_isomorphic(rep.impl, PROG)
    assert rep.class_size == 2
    with pytest.raises(ValueError, match="at least one correct answer"):
        select_representative([])


def test_split_and_boundaries() -> None:
    assert split_evenly(7, 3) == [3, 2, 2]
    assert split_evenly(2, 3) == [1, 1]
    assert boundaries([5, 1, 3, 2, 8, 9, 4], 3) == [3, 5, 9]


def test_stratify_rebins_ties_into_one_level() -> None:
    # sorted scores 1,1,1,2,5,6: even split [1,1],[1,2],[5,6] → bounds 1,2,6;
    # every task with score 1 must land in the hardest level.
    items = [("a", 1), ("b", 1), ("c", 1), ("d", 2), ("e", 5), ("f", 6)]
    assert stratify(items, 3) == [["a", "b", "c"], ["d"], ["e", "f"]]


def test_stratify_drops_levels_emptied_by_rebinning() -> None:
    items = [("a", 0.25), ("b", 0.5), ("c", 1.0), ("d", 1.0)]
    # chunks [a,b],[c],[d] → bounds 0.5,1.0,1.0 → the third level is empty after re-binning
    assert stratify(items, 3) == [["a", "b"], ["c", "d"]]
    assert stratify([], 3) == []
    with pytest.raises(ValueError, match="m"):
        stratify(items, 0)


def test_cumulative_h_hm_hme() -> None:
    assert cumulative([["h"], ["m1", "m2"], ["e"]]) == [["h"], ["h", "m1", "m2"], ["h", "m1", "m2", "e"]]
    assert cumulative([]) == [[]]


@given(st.lists(st.integers(0, 20), min_size=1, max_size=40), st.integers(1, 6))
def test_stratify_properties(scores: list[int], m: int) -> None:
    items = [(i, s) for i, s in enumerate(scores)]
    levels = stratify(items, m)
    flat = [k for lvl in levels for k in lvl]
    assert sorted(flat) == list(range(len(scores)))  # a partition
    assert 1 <= len(levels) <= m
    for lo, hi in zip(levels, levels[1:], strict=False):  # strictly harder first, ties together
        assert max(scores[k] for k in lo) < min(scores[k] for k in hi)


def test_sigma_classes_are_the_leakage_guards_notion_of_same() -> None:
    """A demonstration the loop lets through must never trip compose_messages' guard: σ puts
    two answers in one class exactly when the guard calls them the same program."""
    variants = [
        PROG,
        "  " + PROG.replace("\n", "\n  ").rstrip() + "\n",  # indented
        PROG.replace("sq", "q"),
        PROG.replace("Square", "Cube"),
        PROG.replace("b=1", "b=2"),
        "a, b = step.Copy().apply(x)\nreturn step.Zip().apply((a, b))\n",
        "b, a = step.Copy().apply(x)\nreturn step.Zip().apply((b, a))\n",
        "y = step.Map(fn=F).apply(x\nreturn y\n",  # unparsable
        "y = step.Map(fn=F).apply(x\n   return y",  # the same text up to whitespace
        "z = step.Map(fn=F).apply(x\nreturn z\n",  # unparsable, renamed: different text
    ]
    for a in variants:
        for b in variants:
            same_class = select_representative([a, b]).classes == 1
            assert same_class == is_isomorphic(a, b), (a, b)


def test_unparsable_text_is_the_same_program_only_as_the_same_text() -> None:
    """One definition for σ and the guard (they used to disagree here): unparsable text is its
    whitespace-normalised self, so a verbatim copy is the same program and a renamed one is not."""
    broken = "y = step.Map(fn=F).apply(x\nreturn y\n"
    assert is_isomorphic(broken, broken)
    assert is_isomorphic(broken, "  y = step.Map(fn=F).apply(x   \n\treturn y")
    assert not is_isomorphic(broken, broken.replace("y", "z"))
    assert not is_isomorphic(broken, "y = step.Map(fn=F).apply(x)\nreturn y\n")
    assert canonical_form(broken).startswith("unparsable:")
    assert not is_isomorphic(broken, None) and not is_isomorphic("", "")
