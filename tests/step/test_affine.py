"""Static affine rule and Copy repair (stepsmith.step.affine)."""

from __future__ import annotations

import pytest

from stepsmith.step.affine import (
    AffineParseError,
    AffineViolation,
    check_source,
    infer_inputs,
    repair,
)

PAPER_EXAMPLE = """\
E0_a, E0_b = step.Copy().apply(E0)
E1 = step.Map(fn=fn_square).apply(E0_a)
E2 = step.Accum(fn=fn_sum, b=1).apply(E1)
E3 = step.RepeatRef().apply((E2, E0_b))
parts = step.Partition(N=E_value).apply((E3, sel))
outs = [step.Map(fn=f).apply(p) for f, p in zip([fn_a, fn_b, fn_c], parts)]
return step.Merge(fn=fn_add).apply((outs, sel2))
"""

# Programs that obey the rule: check_source finds nothing and repair returns them byte-identical.
CLEAN = {
    "paper_example": PAPER_EXAMPLE,
    "single_map": "return step.Map(fn=fn_a).apply(E0)\n",
    "no_trailing_newline": "E1 = step.Map(fn=fn_a).apply(E0)\nreturn E1",
    "return_plus_one_use": "E1 = step.Map(fn=fn_a).apply(E0)\nreturn (E1, E0)\n",
    "returned_twice": "E1 = step.Map(fn=fn_a).apply(E0)\nreturn E1, E1\n",
    "unused_stream": "E1 = step.Map(fn=fn_a).apply(E0)\nE2 = step.Map(fn=fn_b).apply(E1)\nreturn E1\n",
    "unused_copy_output": "a, b = step.Copy().apply(E0)\nreturn step.Map(fn=fn_a).apply(a)\n",
    "comments_and_blank_lines": (
        "# square it\n\nE1 = step.Map(fn=fn_sq).apply(E0)  # E0 once\n\n"
        "# E0 in a comment: E0 E0\nreturn E1\n"
    ),
    "crlf_lines": "E1 = step.Map(fn=fn_a).apply(E0)\r\nreturn E1\r\n",
    "tabs": "for i in range(2):\n\tE0 = step.Map(fn=fn_a).apply(E0)\nreturn E0\n",
    "indented_body": "    E1 = step.Map(fn=fn_a).apply(E0)\n    return E1\n",
    "def_wrapper": "def impl(E0, E1):\n    return step.Zip().apply((E0, E1))\n",
    "parts_each_once": (
        "parts = step.Partition(N=3).apply((x, sel))\n"
        "a = step.Map(fn=fn_a).apply(parts[0])\n"
        "b = step.Map(fn=fn_b).apply(parts[1])\n"
        "c = step.Map(fn=fn_c).apply(parts[2])\n"
        "return a, b, c\n"
    ),
    "parts_unpacked": (
        "p0, p1 = step.Partition(N=2).apply((x, sel))\n"
        "return step.Merge(fn=fn_add).apply(([step.Map(fn=fn_a).apply(p0), p1], sel2))\n"
    ),
    "copy_as_list": "c = step.Copy().apply(x)\nreturn step.Zip().apply((c[0], c[1]))\n",
    "loop_carried": "for i in range(3):\n    x = step.Map(fn=fn_a).apply(x)\nreturn x\n",
    "for_loop_over_parts": (
        "parts = step.Partition(N=2).apply((x, sel))\n"
        "outs = [None, None]\n"
        "for f, p in zip([fn_a, fn_b], parts):\n"
        "    y = step.Map(fn=f).apply(p)\n"
        "return y\n"
    ),
    "enumerate_comprehension": (
        "outs = [step.Map(fn=fn_a).apply(p) for i, p in enumerate(parts)]\n"
        "return step.Merge(fn=fn_add).apply((outs, sel))\n"
    ),
    "nested_apply": "return step.Accum(fn=fn_s, b=1).apply(step.Map(fn=fn_a).apply(E0))\n",
    "if_else_exclusive": (
        "if E_value > 1:\n    y = step.Map(fn=fn_a).apply(x)\n"
        "else:\n    y = step.Map(fn=fn_b).apply(x)\nreturn y\n"
    ),
    "loop_runs_once": "ys = [step.Map(fn=fn_a).apply(x) for i in range(1)]\nreturn ys\n",
    "size_symbols_not_streams": (
        "E1 = step.Repeat(n=D).apply(E0)\nE2 = step.Reshape(L=[0], S=D).apply(E1)\n"
        "E3 = step.Promote(b=D).apply(E2)\nreturn E3\n"
    ),
    "reassigned_each_used_once": (
        "E1 = step.Map(fn=fn_a).apply(E0)\nE1 = step.Map(fn=fn_b).apply(E1)\n"
        "E1 = step.Map(fn=fn_c).apply(E1)\nreturn E1\n"
    ),
    "indexed_loop_replacing_elements": (
        "parts = step.Partition(N=E_value).apply((x, sel))\n"
        "for i in range(E_value):\n"
        "    parts[i] = step.Map(fn=fns[i]).apply(parts[i])\n"
        "return step.Merge(fn=fn_add).apply((parts, sel2))\n"
    ),
    "indexed_comprehension_over_partition": (
        "parts = step.Partition(N=E_value).apply((x, sel))\n"
        "outs = [step.Map(fn=fns[i]).apply(parts[i]) for i in range(E_value)]\n"
        "return step.Merge(fn=fn_add).apply((outs, sel2))\n"
    ),
    "unicode_comment": "E1 = step.Map(fn=fn_a).apply(E0)  # ∑ über alles\nreturn E1\n",
}


@pytest.mark.parametrize("name", sorted(CLEAN))
def test_clean_program_has_no_violation_and_is_returned_byte_identical(name: str) -> None:
    src = CLEAN[name]
    assert check_source(src) == []
    out = repair(src)
    assert out is src or out == src


# (source, expected repaired source)
REPAIRS = {
    "input_twice": (
        "E1 = step.Map(fn=fn_square).apply(E0)  # square\n"
        "E2 = step.Accum(fn=fn_sum, b=1).apply(E1)\n"
        "E3 = step.RepeatRef().apply((E2, E0))\n"
        "return E3\n",
        "E0_a, E0_b = step.Copy().apply(E0)\n"
        "E1 = step.Map(fn=fn_square).apply(E0_a)  # square\n"
        "E2 = step.Accum(fn=fn_sum, b=1).apply(E1)\n"
        "E3 = step.RepeatRef().apply((E2, E0_b))\n"
        "return E3\n",
    ),
    "input_three_times": (
        "E1 = step.Map(fn=fn_a).apply(E0)\n"
        "E2 = step.Zip().apply((E1, E0))\n"
        "E3 = step.Zip().apply((E2, E0))\n"
        "return E3\n",
        "E0_a, E0_t1 = step.Copy().apply(E0)\n"
        "E0_b, E0_c = step.Copy().apply(E0_t1)\n"
        "E1 = step.Map(fn=fn_a).apply(E0_a)\n"
        "E2 = step.Zip().apply((E1, E0_b))\n"
        "E3 = step.Zip().apply((E2, E0_c))\n"
        "return E3\n",
    ),
    "same_tuple": (
        "return step.Map(fn=fn_mul).apply((E0, E0))\n",
        "E0_a, E0_b = step.Copy().apply(E0)\n"
        "return step.Map(fn=fn_mul).apply((E0_a, E0_b))\n",
    ),
    "intermediate_twice_after_def": (
        "E1 = step.Map(fn=fn_a).apply(E0)\n"
        "\n"
        "E2 = step.Map(fn=fn_b).apply(E1)\n"
        "E3 = step.Map(fn=fn_c).apply(E1)\n"
        "return step.Zip().apply((E2, E3))\n",
        "E1 = step.Map(fn=fn_a).apply(E0)\n"
        "E1_a, E1_b = step.Copy().apply(E1)\n"
        "\n"
        "E2 = step.Map(fn=fn_b).apply(E1_a)\n"
        "E3 = step.Map(fn=fn_c).apply(E1_b)\n"
        "return step.Zip().apply((E2, E3))\n",
    ),
    "reassigned_variable_only_second_def_reused": (
        "E1 = step.Map(fn=fn_a).apply(E0)\n"
        "E1 = step.Map(fn=fn_b).apply(E1)\n"
        "return step.Zip().apply((E1, E1))\n",
        "E1 = step.Map(fn=fn_a).apply(E0)\n"
        "E1 = step.Map(fn=fn_b).apply(E1)\n"
        "E1_a, E1_b = step.Copy().apply(E1)\n"
        "return step.Zip().apply((E1_a, E1_b))\n",
    ),
    "both_defs_reused": (
        "x = step.Map(fn=fn_a).apply(E0)\n"
        "y = step.Zip().apply((x, x))\n"
        "x = step.Map(fn=fn_b).apply(y)\n"
        "return step.Zip().apply((x, x))\n",
        "x = step.Map(fn=fn_a).apply(E0)\n"
        "x_a, x_b = step.Copy().apply(x)\n"
        "y = step.Zip().apply((x_a, x_b))\n"
        "x = step.Map(fn=fn_b).apply(y)\n"
        "x_a2, x_b2 = step.Copy().apply(x)\n"
        "return step.Zip().apply((x_a2, x_b2))\n",
    ),
    "partition_element": (
        "parts = step.Partition(N=2).apply((x, sel))\n"
        "a = step.Map(fn=fn_a).apply(parts[0])\n"
        "b = step.Map(fn=fn_b).apply(parts[0])\n"
        "return step.Merge(fn=fn_add).apply(([a, b], sel2))\n",
        "parts = step.Partition(N=2).apply((x, sel))\n"
        "parts_0_a, parts_0_b = step.Copy().apply(parts[0])\n"
        "a = step.Map(fn=fn_a).apply(parts_0_a)\n"
        "b = step.Map(fn=fn_b).apply(parts_0_b)\n"
        "return step.Merge(fn=fn_add).apply(([a, b], sel2))\n",
    ),
    "for_loop_variable": (
        "for f, p in zip([fn_a, fn_b], parts):\n"
        "    y = step.Map(fn=f).apply(p)  # keep\n"
        "    z = step.Map(fn=f).apply(p)\n"
        "return y\n",
        "for f, p in zip([fn_a, fn_b], parts):\n"
        "    p_a, p_b = step.Copy().apply(p)\n"
        "    y = step.Map(fn=f).apply(p_a)  # keep\n"
        "    z = step.Map(fn=f).apply(p_b)\n"
        "return y\n",
    ),
    "defined_in_loop_used_after": (
        "for i in range(2):\n"
        "    x = step.Map(fn=fn_a).apply(x)\n"
        "return step.Zip().apply((x, x))\n",
        "for i in range(2):\n"
        "    x = step.Map(fn=fn_a).apply(x)\n"
        "x_a, x_b = step.Copy().apply(x)\n"
        "return step.Zip().apply((x_a, x_b))\n",
    ),
    "selector_for_partition_and_merge": (
        "parts = step.Partition(N=E_value).apply((x, sel))\n"
        "outs = [step.Map(fn=f).apply(p) for f, p in zip(fns, parts)]\n"
        "return step.Merge(fn=fn_add).apply((outs, sel))\n",
        "sel_a, sel_b = step.Copy().apply(sel)\n"
        "parts = step.Partition(N=E_value).apply((x, sel_a))\n"
        "outs = [step.Map(fn=f).apply(p) for f, p in zip(fns, parts)]\n"
        "return step.Merge(fn=fn_add).apply((outs, sel_b))\n",
    ),
    "use_inside_comprehension_plus_outside": (
        "outs = [step.Map(fn=f).apply((p, w[0])) for f, p in zip(fns, [a])]\n"
        "return step.Map(fn=fn_x).apply(w[0])\n",
        None,  # see test below: comprehension over a 1-element list
    ),
    "multi_line_statement_and_unicode": (
        "E1 = step.Map(fn=fn_a).apply(  # ünïcode\n"
        "    E0)\n"
        "E2 = step.Zip().apply((E1,\n"
        "                       E0))  # ∑\n"
        "return E2\n",
        "E0_a, E0_b = step.Copy().apply(E0)\n"
        "E1 = step.Map(fn=fn_a).apply(  # ünïcode\n"
        "    E0_a)\n"
        "E2 = step.Zip().apply((E1,\n"
        "                       E0_b))  # ∑\n"
        "return E2\n",
    ),
    "name_collision_with_existing": (
        "E0_a = step.Map(fn=fn_a).apply(E1)\n"
        "return step.Zip().apply((E0, step.Zip().apply((E0, E0_a))))\n",
        "E0_a2, E0_b = step.Copy().apply(E0)\n"
        "E0_a = step.Map(fn=fn_a).apply(E1)\n"
        "return step.Zip().apply((E0_a2, step.Zip().apply((E0_b, E0_a))))\n",
    ),
    "crlf_preserved": (
        "E1 = step.Map(fn=fn_a).apply(E0)\r\nreturn step.Zip().apply((E1, E0))\r\n",
        "E0_a, E0_b = step.Copy().apply(E0)\r\nE1 = step.Map(fn=fn_a).apply(E0_a)\r\n"
        "return step.Zip().apply((E1, E0_b))\r\n",
    ),
    "indented_body": (
        "    y = step.Zip().apply((x, x))\n    return y\n",
        "    x_a, x_b = step.Copy().apply(x)\n    y = step.Zip().apply((x_a, x_b))\n    return y\n",
    ),
    "def_wrapper": (
        "def impl(x):\n    # body\n    return step.Zip().apply((x, x))\n",
        "def impl(x):\n    # body\n    x_a, x_b = step.Copy().apply(x)\n"
        "    return step.Zip().apply((x_a, x_b))\n",
    ),
    "copy_output_reused": (
        "a, b = step.Copy().apply(E0)\n"
        "y = step.Zip().apply((a, a))\n"
        "return step.Zip().apply((y, b))\n",
        "a, b = step.Copy().apply(E0)\n"
        "a_a, a_b = step.Copy().apply(a)\n"
        "y = step.Zip().apply((a_a, a_b))\n"
        "return step.Zip().apply((y, b))\n",
    ),
    "list_filled_by_index_in_a_loop": (
        "outs = [None] * E_value\n"
        "for i in range(E_value):\n"
        "    outs[i] = step.Map(fn=fns[i]).apply(parts[i])\n"
        "y = step.Map(fn=fn_a).apply(w)\n"
        "return step.Merge(fn=fn_add).apply((outs, sel)), step.Zip().apply((y, y))\n",
        "outs = [None] * E_value\n"
        "for i in range(E_value):\n"
        "    outs[i] = step.Map(fn=fns[i]).apply(parts[i])\n"
        "y = step.Map(fn=fn_a).apply(w)\n"
        "y_a, y_b = step.Copy().apply(y)\n"
        "return step.Merge(fn=fn_add).apply((outs, sel)), step.Zip().apply((y_a, y_b))\n",
    ),
    "tab_indented_loop_body": (
        "for f, p in zip(fns, parts):\n\ty = step.Zip().apply((p, p))\nreturn y\n",
        "for f, p in zip(fns, parts):\n\tp_a, p_b = step.Copy().apply(p)\n"
        "\ty = step.Zip().apply((p_a, p_b))\nreturn y\n",
    ),
    "no_trailing_newline": (
        "return step.Zip().apply((x, x))",
        "x_a, x_b = step.Copy().apply(x)\nreturn step.Zip().apply((x_a, x_b))",
    ),
}


@pytest.mark.parametrize("name", sorted(k for k, v in REPAIRS.items() if v[1] is not None))
def test_repair_inserts_chained_copies_and_renames_uses(name: str) -> None:
    src, expected = REPAIRS[name]
    assert check_source(src), "the case must start out violating the rule"
    out = repair(src)
    assert out == expected
    assert check_source(out) == []
    assert repair(out) == out


def test_four_uses_get_three_chained_copies() -> None:
    src = "y = step.Map(fn=fn_f).apply((x, x, x, x))\nreturn y\n"
    out = repair(src)
    assert out.count("step.Copy()") == 3
    assert check_source(out) == []
    assert "x_a, x_t1 = step.Copy().apply(x)\n" in out
    assert "x_b, x_t2 = step.Copy().apply(x_t1)\n" in out
    assert "x_c, x_d = step.Copy().apply(x_t2)\n" in out
    assert out.endswith("y = step.Map(fn=fn_f).apply((x_a, x_b, x_c, x_d))\nreturn y\n")


def test_copies_of_a_name_ending_in_underscore_get_no_double_underscore() -> None:
    """The allow-list refuses `x__a`; the 0.5B model named a stream `to_` (run 3f34)."""
    from stepsmith.verify.allowlist import check_program

    src = "a = step.Map(fn=fn_f).apply(to_)\nb = step.Map(fn=fn_g).apply((to_, a))\nreturn b\n"
    out = repair(src, params=["to_"])
    assert "__" not in out and check_source(out, params=["to_"]) == []
    assert "to_a, to_b = step.Copy().apply(to_)\n" in out
    check_program(out)  # raises on a disallowed construct


def test_params_restrict_what_counts_as_a_stream() -> None:
    src = "y = step.Map(fn=fn_f).apply((x, w, w))\nreturn y\n"
    # w is not an input stream here (the caller says so): nothing to report or repair
    assert check_source(src, params=["x"]) == []
    assert repair(src, params=["x"]) == src
    assert [v.name for v in check_source(src, params=["x", "w"])] == ["w"]
    assert "w_a, w_b = step.Copy().apply(w)" in repair(src, params=["x", "w"])


# ----------------------------------------------------------------------------- violations


def test_violation_fields_and_message_for_two_uses() -> None:
    src = "E1 = step.Map(fn=fn_a).apply(E0)\nE2 = step.Accum(fn=fn_s, b=1).apply(E1)\n" \
          "E3 = step.Accum(fn=fn_s, b=1).apply(E0)\nreturn E3\n"
    (v,) = check_source(src)
    assert isinstance(v, AffineViolation)
    assert (v.name, v.count, v.lines) == ("E0", 2, [1, 3])
    assert v.message == (
        "stream 'E0' is consumed 2 times (lines 1 and 3: step.Map(...), step.Accum(...)); "
        "a stream can be consumed once — split it with `a, b = step.Copy().apply(E0)`"
    )


def test_message_for_three_uses_teaches_chained_copies() -> None:
    src = "a = step.Map(fn=fn_a).apply(x)\nb = step.Map(fn=fn_b).apply(x)\n" \
          "c = step.Zip().apply((x, a))\nreturn c\n"
    (v,) = check_source(src)
    assert (v.name, v.count, v.lines) == ("x", 3, [1, 2, 3])
    assert "lines 1, 2 and 3: step.Map(...), step.Map(...), step.Zip(...)" in v.message
    assert "`a, t1 = step.Copy().apply(x)`" in v.message
    assert "`b, c = step.Copy().apply(t1)`" in v.message


def test_same_line_uses_are_listed_once_per_use() -> None:
    (v,) = check_source("y = step.Zip().apply((x, x))\n")
    assert v.lines == [1, 1]
    assert "(line 1: step.Zip(...), step.Zip(...))" in v.message


def test_each_reused_stream_is_reported_separately_in_source_order() -> None:
    src = (
        "a = step.Zip().apply((y, y))\n"
        "b = step.Zip().apply((x, x))\n"
        "c = step.Zip().apply((a, a))\n"
    )
    assert [(v.name, v.count) for v in check_source(src)] == [("y", 2), ("x", 2), ("a", 2)]


def test_comprehension_consumes_each_partition_element_once() -> None:
    src = (
        "parts = step.Partition(N=3).apply((x, sel))\n"
        "outs = [step.Map(fn=f).apply(p) for f, p in zip(fns, parts)]\n"
        "extra = step.Map(fn=fn_a).apply(parts[1])\n"
    )
    (v,) = check_source(src)
    assert v.name == "parts" and v.count == 2 and v.lines == [2, 3]
    assert repair(src) == src  # a whole list consumed twice cannot be fixed by one Copy


def test_whole_list_consumed_twice() -> None:
    src = (
        "outs = [step.Map(fn=f).apply(p) for f, p in zip(fns, parts)]\n"
        "a = step.Merge(fn=fn_add).apply((outs, s1))\n"
        "b = step.Merge(fn=fn_add).apply((outs, s2))\n"
    )
    assert [(v.name, v.count) for v in check_source(src)] == [("outs", 2)]
    assert repair(src) == src


def test_loop_variable_used_twice_inside_a_comprehension() -> None:
    src = "outs = [step.Zip().apply((p, p)) for p in parts]\n"
    (v,) = check_source(src)
    assert v.name == "p" and v.count == 2
    assert "each element of 'parts'" in v.message
    assert repair(src) == src  # no statement can be inserted inside a comprehension


def test_loop_invariant_stream_is_consumed_once_per_iteration() -> None:
    src = "outs = [step.Zip().apply((p, w)) for p in [a, b, c]]\n"
    (v,) = check_source(src)
    assert (v.name, v.count) == ("w", 3)
    assert "inside the loop at line 1, once per iteration (3 times in total" in v.message
    # a known trip count: one copy per iteration, zipped into the loop
    assert repair(src) == (
        "w_a, w_t1 = step.Copy().apply(w)\n"
        "w_b, w_c = step.Copy().apply(w_t1)\n"
        "outs = [step.Zip().apply((p, w_i)) for p, w_i in zip([a, b, c], [w_a, w_b, w_c])]\n"
    )


@pytest.mark.parametrize(("copy", "times"), [("Copy()", 2), ("Copy(n=3)", 3), ("Copy(4)", 4)])
def test_loop_over_copies_runs_as_often_as_the_registry_says_copy_returns(
    copy: str, times: int
) -> None:
    """The number of streams a primitive returns is the registry's `output_count`, not a
    hand-kept table: iterating over `Copy(n=3)` consumes a loop-invariant stream 3 times."""
    src = f"cs = step.{copy}.apply(x)\nreturn [step.Zip().apply((c, y)) for c in cs]\n"
    (v,) = check_source(src, ["x", "y"])
    assert (v.name, v.count) == ("y", times)
    assert f"{times} times in total" in v.message


def test_loop_invariant_in_a_for_loop_plus_a_use_after_it() -> None:
    src = (
        "for f, p in zip([fn_a, fn_b], parts):\n"
        "    y = step.Map(fn=f).apply((p, w))  # per expert\n"
        "z = step.Map(fn=fn_c).apply(w)\n"
    )
    (v,) = check_source(src)
    assert (v.name, v.count) == ("w", 3)
    assert repair(src) == (
        "w_a, w_t1 = step.Copy().apply(w)\n"
        "w_b, w_c = step.Copy().apply(w_t1)\n"
        "for (f, p), w_i in zip(zip([fn_a, fn_b], parts), [w_a, w_b]):\n"
        "    y = step.Map(fn=f).apply((p, w_i))  # per expert\n"
        "z = step.Map(fn=fn_c).apply(w_c)\n"
    )


def test_two_loop_invariant_streams_in_one_comprehension_and_a_reused_display_item() -> None:
    src = "ys = [step.Map(fn=fn_f).apply((q, u, w)) for q in [a, a]]\n"
    assert sorted(v.name for v in check_source(src)) == ["a", "u", "w"]
    out = repair(src)
    assert check_source(out) == []
    assert repair(out) == out
    assert "for q, u_i, w_i in zip([a_a, a_b], [u_a, u_b], [w_a, w_b])]" in out


def test_several_uses_per_iteration_are_reported_not_repaired() -> None:
    src = "ys = [step.Map(fn=fn_f).apply((q, w, w)) for q in [a, b]]\n"
    (v,) = check_source(src)
    assert (v.name, v.count) == ("w", 4)
    assert repair(src) == src


def test_loop_with_unknown_trip_count_reports_at_least_two() -> None:
    src = "for i in range(E_value):\n    y = step.Map(fn=fn_a).apply(w)\n"
    (v,) = check_source(src)
    assert (v.name, v.count) == ("w", 2)
    assert "at least 2 times" in v.message
    assert repair(src) == src


def test_use_in_comprehension_over_singleton_plus_outside_is_repaired() -> None:
    src, _ = REPAIRS["use_inside_comprehension_plus_outside"]
    (v,) = check_source(src)
    assert v.name == "w[0]" and v.count == 2
    out = repair(src)
    assert check_source(out) == []
    assert out.startswith("w_0_a, w_0_b = step.Copy().apply(w[0])\n")
    assert "apply((p, w_0_a))" in out and "apply(w_0_b)" in out


def test_if_branches_count_the_larger_branch() -> None:
    src = (
        "a = step.Map(fn=fn_a).apply(x)\n"
        "if E_value > 1:\n"
        "    b = step.Map(fn=fn_b).apply(x)\n"
        "else:\n"
        "    b = step.Zip().apply((x, x))\n"
    )
    (v,) = check_source(src)
    assert (v.name, v.count) == ("x", 3)
    out = repair(src)
    assert check_source(out) == []
    assert out.count("step.Copy()") == 3  # one copy per use site


def test_returns_do_not_count_but_applies_inside_return_do() -> None:
    assert check_source("y = step.Map(fn=fn_a).apply(x)\nreturn x, y, x\n") == []
    (v,) = check_source("y = step.Map(fn=fn_a).apply(x)\nreturn step.Map(fn=fn_b).apply(x)\n")
    assert v.lines == [1, 2]


def test_alias_is_the_same_stream() -> None:
    (v,) = check_source("z = x\na = step.Map(fn=fn_a).apply(z)\nb = step.Map(fn=fn_a).apply(x)\n")
    assert (v.name, v.count) == ("x", 2)
    # renaming through an alias is not attempted; the verifier reports it instead
    src = "z = x\na = step.Map(fn=fn_a).apply(z)\nb = step.Map(fn=fn_a).apply(x)\n"
    assert repair(src) == src


def test_semicolon_separated_use_on_def_line_is_left_alone() -> None:
    src = "y = step.Map(fn=fn_a).apply(x); z = step.Zip().apply((y, y))\n"
    (v,) = check_source(src)
    assert v.name == "y"
    assert repair(src) == src


def test_loop_carried_stream_used_twice_per_iteration_is_reported() -> None:
    src = "for i in range(3):\n    x = step.Zip().apply((x, x))\nreturn x\n"
    (v,) = check_source(src)
    assert v.name == "x" and v.count == 2
    assert repair(src) == src  # each iteration's x is a different stream: not renamable safely


# ----------------------------------------------------------------------------- odd input


@pytest.mark.parametrize(
    "src",
    [
        "",
        "   \n",
        "x = (",
        "return step.Zip().apply((x, x)",
        "\x00",
        "def f(:\n",
        "while True:\n    y = step.Zip().apply((x, x))\n",
        "with open('f') as fh:\n    y = step.Zip().apply((x, x))\n",
        "lambda: step.Zip().apply((x, x))\n",
        "outs[0] = step.Zip().apply((x, x))\n",
        "a, *rest = step.Partition(N=3).apply((x, s))\nb = step.Zip().apply((a, a))\n",
        "x = 1\nx += 2\ny = step.Map(fn=fn_a).apply(x)\n",
        "y = step.Map(fn=fn_a).apply(*xs)\n",
        "y = step.Map(fn=fn_a).apply(x=x)\n",
        "y = foo.apply((x, x))\n",
        "(a, b), c = step.Copy().apply(x), step.Map(fn=fn_a).apply(z)\n",
        "for i in range(10**12):\n    pass\n",
        "y = step.Map(fn=fn_a).apply(parts[i])\nz = step.Map(fn=fn_a).apply(parts[i])\n",
        "y = step.Map(fn=fn_a).apply(parts[1:])\n",
        "x = [[step.Map(fn=f).apply(p) for p in ps] for f, ps in zip(fns, groups)]\n",
    ],
)
def test_repair_never_raises_and_is_idempotent(src: str) -> None:
    out = repair(src)
    assert isinstance(out, str)
    assert repair(out) == out
    try:
        before = check_source(src)
    except AffineParseError:
        assert out == src
        return
    assert len(check_source(out)) <= len(before)


def test_check_source_reports_parse_errors_with_the_line() -> None:
    with pytest.raises(AffineParseError, match=r"line 2"):
        check_source("y = step.Map(fn=fn_a).apply(x)\nz = (\n")
    with pytest.raises(SyntaxError):  # AffineParseError is a SyntaxError
        check_source("x = )")
    with pytest.raises(AffineParseError, match=r"^line 2: '\(' was never closed"):
        check_source("    y = step.Map(fn=fn_a).apply(x)\n    z = (\n")


def test_nested_comprehension_each_element_once() -> None:
    src = "x = [[step.Map(fn=f).apply(p) for p in ps] for f, ps in zip(fns, groups)]\n"
    assert check_source(src) == []


def test_dynamic_index_same_expression_twice_is_flagged() -> None:
    src = "y = step.Map(fn=fn_a).apply(parts[i])\nz = step.Map(fn=fn_a).apply(parts[i])\n"
    assert [v.name for v in check_source(src)] == ["parts[i]"]


def test_infer_inputs() -> None:
    assert infer_inputs(PAPER_EXAMPLE) == ["E0", "sel", "sel2"]
    assert infer_inputs("def impl(a, b):\n    return a\n") == ["a", "b"]
    assert infer_inputs("y = step.Repeat(n=D).apply(x)\nreturn y\n") == ["x"]
    assert infer_inputs("y = step.Map(fn=fn_a).apply(x)\nreturn y, z\n") == ["x", "z"]
    assert infer_inputs("return z\n") == ["z"]


# ----------------------------------------------------------------------------- task suite


def _suite_tasks() -> list:
    """Every task with a reference; a suite that does not load fails the test (no skip)."""
    from stepsmith.tasks.suite import benchmark_tasks, demo_tasks

    tasks = [t for t in list(benchmark_tasks()) + list(demo_tasks()) if t.impl]
    assert tasks, "the task suite has no reference programs"
    return tasks


def _suite_programs() -> list[tuple[str, str, list[str]]]:
    return [(t.name, t.impl, [i.name for i in t.spec.inputs]) for t in _suite_tasks()]


def _outputs_equal(task, broken: str, fixed: str) -> None:
    """The repaired program (affine strict) computes what the broken one computes (affine off)."""
    import torch

    from stepsmith.verify.execute import run_program

    want = run_program(task, broken, affine="off")
    got = run_program(task, fixed, affine="strict")
    assert want.ok and got.ok, (want.error, got.error)
    assert len(got.outputs) == len(want.outputs)
    for g, w in zip(got.outputs, want.outputs, strict=True):
        gd = g.data if isinstance(g.data, tuple) else (g.data,)
        wd = w.data if isinstance(w.data, tuple) else (w.data,)
        for a, b in zip(gd, wd, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_reference_programs_have_no_false_positives_and_are_left_untouched() -> None:
    programs = _suite_programs()
    for name, impl, params in programs:
        assert check_source(impl, params) == [], name
        assert repair(impl, params) == impl, name
        assert set(infer_inputs(impl)) <= set(params), name


def test_removing_a_copy_from_reference_programs_is_detected_and_repaired() -> None:
    """Undo each Copy of every reference (use its input twice); the repair restores a clean
    program with as many Copies that computes the same outputs under strict affine checking."""
    import re

    tasks = _suite_tasks()
    pattern = re.compile(r"^(\s*)(\w+), (\w+) = step\.Copy\(\)\.apply\((\w+)\)$", re.M)
    checked = 0
    for task in tasks:
        name, impl, params = task.name, task.impl, [i.name for i in task.spec.inputs]
        for m in pattern.finditer(impl):
            indent, a, b, src = m.groups()
            body = impl[: m.start()] + impl[m.end() + 1 :]
            broken = re.sub(rf"\b({a}|{b})\b", src, body)
            if broken.count(src) < 3:  # the outputs were not both consumed
                continue
            violations = check_source(broken, params)
            if not any(v.name == src for v in violations):
                continue  # e.g. one output was only returned
            fixed = repair(broken, params)
            assert check_source(fixed, params) == [], (name, fixed)
            assert fixed.count("step.Copy()") >= impl.count("step.Copy()"), name
            _outputs_equal(task, broken, fixed)
            checked += 1
    assert checked >= 5
