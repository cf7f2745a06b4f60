"""AST allow-list for untrusted STeP programs (stepsmith.verify.allowlist)."""

from __future__ import annotations

import pytest

from stepsmith.step import REGISTRY
from stepsmith.verify.allowlist import DisallowedConstruct, ProgramSyntaxError, check_program

ACCEPT = {
    "paper_example": (
        "E0_a, E0_b = step.Copy().apply(E0)\n"
        "E1 = step.Map(fn=fn_square).apply(E0_a)\n"
        "E2 = step.Accum(fn=fn_sum, b=1).apply(E1)\n"
        "E3 = step.RepeatRef().apply((E2, E0_b))\n"
        "parts = step.Partition(N=E_value).apply((E3, sel))\n"
        "outs = [step.Map(fn=f).apply(p) for f, p in zip([fn_a, fn_b, fn_c], parts)]\n"
        "return step.Merge(fn=fn_add).apply((outs, sel2))\n"
    ),
    "comments_docstring_blank": '"""doc"""\n# comment\n\nreturn step.Identity().apply(x)\n',
    "shape_primitives": (
        "a = step.Promote(b=2).apply(x)\nb = step.Flatten(L=[1, 2]).apply(a)\n"
        "c = step.Reshape(L=[0], S=D * 2).apply(b)\nd = step.Bufferize(a=1).apply(c)\n"
        "e = step.Streamify().apply(d)\nf = step.Repeat(n=D // 2).apply(e)\n"
        "return step.Scan(fn=fn_s, b=1).apply(f)\n"
    ),
    "for_loop_range_len": (
        "for i in range(len(parts)):\n    parts[i] = step.Map(fn=fns[i]).apply(parts[i])\n"
        "return parts\n"
    ),
    "for_enumerate_tuple_targets": (
        "for i, (f, p) in enumerate(zip(fns, parts)):\n    y = step.Map(fn=f).apply(p)\n"
        "return y\n"
    ),
    "small_powers": "n = D ** 2 + 2 ** E_value + 10 ** 12 + K ** -1\nreturn x\n",
    "augmented_int": "n = E_value\nn += 1\nn -= 2\nreturn step.Partition(N=n).apply((x, s))\n",
    "slicing_and_negative_index": "a = parts[1:]\nb = parts[-1]\nc, *rest = a\nreturn b\n",
    "primitive_held_in_a_variable": "m = step.Map(fn=fn_a)\nreturn m.apply(x)\n",
    "if_on_sizes": (
        "if E_value > 2 and not D == 1:\n    y = step.Map(fn=fn_a).apply(x)\n"
        "else:\n    y = x\nreturn y if E_value else x\n"
    ),
    "expression_statement_and_pass": "step.Map(fn=fn_a).apply(x)\npass\n",
    "indented_body": "    y = step.Map(fn=fn_a).apply(x)\n    return y\n",
    "builtins": "n = min(max(abs(-3), 1), int(2.0))\nys = list(reversed(tuple(parts)))\nreturn ys\n",
    "starred_in_known_call": "pairs = [(fn_a, p) for p in parts]\nreturn list(zip(*pairs))\n",
    "nested_comprehension_with_if": (
        "ys = [step.Map(fn=f).apply(p) for f, ps in zip(fns, groups) for p in ps if E_value]\n"
        "return ys\n"
    ),
    "loop_over_apply_output": (
        "for p in step.Partition(N=2).apply((x, s)):\n    break\nreturn x\n"
    ),
}


@pytest.mark.parametrize("name", sorted(ACCEPT))
def test_accepts_step_programs(name: str) -> None:
    assert check_program(ACCEPT[name]) is None


# (source, line, fragment that must appear in the message)
REJECT = {
    "import": ("x = 1\nimport os\n", 2, "`import os` — imports are not allowed"),
    "from_import": ("from os import system\n", 1, "imports are not allowed"),
    "dunder_attr_on_step": ("x = step.__class__\n", 1, "`__class__` is not allowed"),
    "tuple_class_bases": ("y = ().__class__.__bases__\n", 1, "double-underscore"),
    "step_map_init": ("f = step.Map.__init__\n", 1, "`__init__` is not allowed"),
    "getattr": ("f = getattr(step, 'x')\n", 1, "`getattr` is not available"),
    "list_append": ("ys = []\nys.append(x)\n", 2, "attribute access `.append` is not allowed"),
    "print": ("print(x)\n", 1, "`print` is not available"),
    "format_trick": ("s = '{0.__class__}'.format(step)\n", 1, "`.format` is not allowed"),
    "percent_format": ("s = '%s' % (x,)\n", 1, "string formatting is not allowed"),
    "fstring": ("s = f'{x}'\n", 1, "f-strings are not allowed"),
    "exec": ("exec('import os')\n", 1, "`exec` is not available"),
    "eval": ("y = eval('1')\n", 1, "`eval` is not available"),
    "open": ("fh = open('/etc/passwd')\n", 1, "`open` is not available"),
    "dunder_import_name": ("m = __import__('os')\n", 1, "`__import__` is not allowed"),
    "globals": ("g = globals()\n", 1, "`globals` is not available"),
    "vars": ("v = vars(step)\n", 1, "`vars` is not available"),
    "compile": ("c = compile('1', 'f', 'eval')\n", 1, "`compile` is not available"),
    "breakpoint": ("breakpoint()\n", 1, "`breakpoint` is not available"),
    "lambda": ("f = lambda: 1\n", 1, "lambda is not allowed"),
    "def": ("def f():\n    return 1\n", 1, "defining functions is not allowed"),
    "class": ("class A:\n    pass\n", 1, "defining classes is not allowed"),
    "with": ("with x:\n    pass\n", 1, "`with` is not allowed"),
    "try": ("try:\n    pass\nexcept Exception:\n    pass\n", 1, "try/except is not allowed"),
    "while": ("while True:\n    pass\n", 1, "while loops are not allowed"),
    "del": ("del x\n", 1, "`del` is not allowed"),
    "global": ("global x\n", 1, "`global` is not allowed"),
    "nonlocal_in_body": ("x = 1\nnonlocal x\n", 2, None),
    "yield": ("yield x\n", 1, "`yield` is not allowed"),
    "await": ("await x\n", 1, "`await` is not allowed"),
    "walrus": ("y = (z := 1)\n", 1, "walrus"),
    "unknown_primitive": ("y = step.REGISTRY\n", 1, "`step.REGISTRY` is not a STeP primitive"),
    "step_session": ("s = step.Session()\n", 1, "`step.Session` is not a STeP primitive"),
    "unknown_function_call": ("y = foo(x)\n", 1, "calling `foo(...)` is not allowed"),
    "call_a_fn_directly": ("y = fn_square(x)\n", 1, "calling `fn_square(...)` is not allowed"),
    "rebind_builtin": ("zip = getattr\n", 1, "`zip` cannot be reassigned"),
    "rebind_step": ("step = None\n", 1, "`step` is the STeP module and cannot be reassigned"),
    "apply_on_call_result": ("y = foo().apply(x)\n", 1, None),
    "kwargs_unpacking": ("y = step.Map(**{'fn': fn_a}).apply(x)\n", 1, None),
    "dict_display": ("d = {}\n", 1, "dict displays are not allowed"),
    "set_comprehension": ("s = {p for p in parts}\n", 1, "set comprehensions"),
    "attribute_on_stream": ("d = x.data\n", 1, "attribute access `.data` is not allowed"),
    "torch": ("t = torch.zeros(3)\n", 1, None),
    "task_data": ("w = input_data['W']\n", 1, "`input_data` is not available"),
    "subscript_of_call_attr": ("y = [].__len__\n", 1, "double-underscore"),
    "loop_over_weird_iterable": ("for c in 'abc' * 3:\n    pass\n", 1, "loops may only iterate"),
    "bitshift": ("n = 1 << 40\n", 1, "only arithmetic operators"),
    "raise": ("raise ValueError('x')\n", 1, "`raise` is not allowed"),
    "assert": ("assert x\n", 1, "`assert` is not allowed"),
    "match": ("match x:\n    case 1:\n        pass\n", 1, "`match` is not allowed"),
    "type_name": ("t = type(x)\n", 1, "`type` is not available"),
    "bytes": ("b = b'x'\n", 1, "bytes literals are not allowed"),
    "for_else": ("for p in parts:\n    pass\nelse:\n    pass\n", 1, "for ... else"),
    "annotated": ("x: int = 1\n", 1, "annotated assignments"),
    "async_comprehension_like": ("y = [p async for p in parts]\n", 1, None),
    "huge_power": ("n = 2 ** 10 ** 10\n", 1, "the exponent must be a small integer"),
    "huge_literal_power": ("n = 10 ** 1000\n", 1, "the exponent must be a small integer"),
    "later_line_reported": (
        "a = step.Map(fn=fn_a).apply(x)\nb = step.Map(fn=fn_b).apply(a)\n"
        "c = a.__dict__\n",
        3,
        "`a.__dict__`",
    ),
}


@pytest.mark.parametrize("name", sorted(REJECT))
def test_rejects_with_line_and_construct(name: str) -> None:
    src, line, fragment = REJECT[name]
    with pytest.raises(DisallowedConstruct) as info:
        check_program(src)
    err = info.value
    assert err.line == line
    assert str(err).startswith(f"line {line}: `")
    assert err.message == str(err)
    if fragment is not None:
        assert fragment in err.message


def test_import_message_is_the_documented_one() -> None:
    with pytest.raises(DisallowedConstruct) as info:
        check_program("a = 1\nb = 2\nc = 3\nimport os\n")
    assert info.value.message == (
        "line 4: `import os` — imports are not allowed in a STeP program; "
        "use only step.<Primitive>(...).apply(...) calls"
    )


@pytest.mark.parametrize(
    ("src", "line"),
    [
        ("x = (\n", 1),
        ("a = 1\nb = step.Map(fn=\n", 2),
        ("a = 1\n  b = 2\n", 2),
        ("return )", 1),
        ("  a = 1\n b = 2\n", 2),  # indented body: the real error, not "unexpected indent"
        ("    a = 1\n    b = (\n", 2),
    ],
)
def test_syntax_errors_name_the_line(src: str, line: int) -> None:
    with pytest.raises(ProgramSyntaxError) as info:
        check_program(src)
    assert info.value.line == line
    assert info.value.message.startswith(f"line {line}: syntax error")


def test_non_text_and_null_bytes_are_clear_errors() -> None:
    with pytest.raises(ProgramSyntaxError, match="must be Python source text"):
        check_program(b"x = 1")  # type: ignore[arg-type]
    with pytest.raises(ProgramSyntaxError):
        check_program("x = 1\x00")


def test_primitives_and_their_parameters_come_from_the_registry() -> None:
    """No list of names here: every registry primitive, with every parameter it declares, is
    allowed, and nothing else is."""
    assert len(REGISTRY) >= 15
    for prim in sorted(REGISTRY):
        check_program(f"y = step.{prim}().apply(x)\n")
        given = ", ".join(f"{p.name}=v" for p in REGISTRY[prim].params)
        check_program(f"y = step.{prim}({given}).apply(x)\n")
    with pytest.raises(DisallowedConstruct, match="not a STeP primitive"):
        check_program("y = step.Transpose().apply(x)\n")


@pytest.mark.parametrize(
    ("src", "message"),
    [
        ("y = step.Accum(fn=f, bb=1).apply(x)\n",
         "step.Accum has no parameter `bb` (its parameters: fn, b); usage: step.Accum(fn=f, b=k)"),
        ("y = step.Zip(n=2).apply((a, b))\n",
         "step.Zip has no parameter `n` (its parameters: none); usage: step.Zip().apply((a, b"),
        ("return [step.Repeat(m=D).apply(p) for p in ps]\n", "no parameter `m`"),
    ],
)
def test_a_keyword_the_primitive_does_not_declare_is_rejected(src: str, message: str) -> None:
    with pytest.raises(DisallowedConstruct) as info:
        check_program(src)
    assert info.value.line == 1 and message in info.value.message


@pytest.mark.parametrize(
    "src",
    ["y = " + "(" * 400 + "1" + ")" * 400 + "\n", "y = " + "-" * 5000 + "1\n"],
    ids=["parentheses", "unary_minus"],
)
def test_deeply_nested_expression_is_a_clear_error_not_a_crash(src: str) -> None:
    with pytest.raises((ProgramSyntaxError, DisallowedConstruct)) as info:
        check_program(src)
    assert "nested" in info.value.message or "syntax error" in info.value.message


def test_every_reference_program_of_the_suite_is_accepted() -> None:
    from stepsmith.tasks.suite import benchmark_tasks, demo_tasks

    tasks = [t for t in list(benchmark_tasks()) + list(demo_tasks()) if t.impl]
    assert len(tasks) >= 20, "the task suite did not load its reference programs"
    for task in tasks:
        check_program(task.impl)


def test_garbled_programs_get_one_of_the_two_documented_errors() -> None:
    import random

    from stepsmith.verify.allowlist import ProgramCheckError

    base = ACCEPT["paper_example"]
    rng = random.Random(3)
    tokens = ["(", ")", ".__class__", "import os\n", ",", "\n", "  ", "lambda: 0", "'", "#"]
    for _ in range(300):
        src = base
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(src))
            src = src[:i] + rng.choice(tokens) + src[i:]
        try:
            check_program(src)
        except ProgramCheckError as exc:
            assert exc.message and (exc.line is None or exc.line >= 1)
