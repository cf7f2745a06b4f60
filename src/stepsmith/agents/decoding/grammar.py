"""The context-free grammar (GBNF) of one task's programs, for `--constrain grammar`.

It fixes the syntax of the STeP subset and the task's vocabulary — primitives with their
parameters (from the registry's parameter kinds), the task's fns by kind, its input names,
size symbols and constants — but not types or the consume-once rule (a context-free grammar
cannot). The same text goes to every engine that takes GBNF: llama.cpp (`grammar`), vLLM
(`structured_outputs.grammar`, recognised as EBNF by its `::=`), SGLang (`ebnf`), and locally
llguidance (which converts GBNF to its Lark dialect).
"""

from __future__ import annotations

import json
import re

from stepsmith.step.registry import REGISTRY, Param, PrimitiveDef, int_literals
from stepsmith.tasks.task import Task

from .space import Facts
from .statements import PREFIX, SUFFIX


def _lit(s: str) -> str:
    return json.dumps(s)


def _alt(options: list[str]) -> str:
    return " | ".join(_lit(o) for o in options)


def _param_rule(p: Param, facts: Facts) -> str:
    if p.kind == "fn_stateless":
        return "fnstateless"
    if p.kind == "fn_stateful":
        return "fnstateful"
    if p.kind == "axis":
        return "int"
    if p.kind == "axes":
        return "axes"
    if p.kind == "size":
        return "size"
    return "count"


def _call_rule(pdef: PrimitiveDef, facts: Facts, arg: str, loop: bool = False) -> str:
    """`"step.Accum(" "fn=" fnstateful ", b=" int ").apply(" arg ")"` with optional params;
    inside a comprehension (`loop`) a fn may be the loop variable (`fn=f`)."""
    parts: list[str] = []
    first = True
    for p in pdef.params:
        sep = "" if first else ", "
        rule = _param_rule(p, facts)
        if loop and p.kind.startswith("fn"):
            rule = f"({rule} | name)"
        piece = f'"{sep}{p.name}=" {rule}'
        parts.append(piece if p.required else f"({piece})?")
        first = False
    params = " ".join(parts) if parts else ""
    return f'"step.{pdef.name}(" {params} ").apply(" {arg} ")"'.replace("  ", " ")


def task_grammar(task: Task, facts: Facts | None = None) -> str:
    """GBNF for the answer to `task`: the fenced `impl: |-` block of statements and a return."""
    return "\n".join(f"{name} ::= {body}" for name, body in _rules(task, facts)) + "\n"


_TERMINALS = {"name": ("NAME", "/[A-Za-z_][A-Za-z0-9_]*/"), "int": ("INT", "/[0-9][0-9]?/")}


def task_lark(task: Task, facts: Facts | None = None) -> str:
    """The same grammar in llguidance's Lark dialect (what local `grammar` decoding uses).

    Written directly rather than converted from the GBNF: the converter turns rules made only
    of literals into lexemes, and a lexeme `"  return ..."` then shadows the `"  "` that starts
    every other line (the lexer is greedy)."""
    out = []
    for name, body in _rules(task, facts):
        if name in _TERMINALS:
            term, rx = _TERMINALS[name]
            out.append(f"{term}: {rx}")
            continue
        for n, (term, _) in _TERMINALS.items():
            body = re.sub(rf"(?<![\w\"]){n}(?![\w\"])", term, body)
        out.append(f"{'start' if name == 'root' else name}: {body}")
    return "\n".join(out) + "\n"


def _rules(task: Task, facts: Facts | None = None) -> list[tuple[str, str]]:
    f = facts or Facts.from_task(task)
    stateless = [n for n, fn in f.fns.items() if not fn.stateful]
    stateful = [n for n, fn in f.fns.items() if fn.stateful]
    sizes = list(f.sizes) + [str(k) for k in int_literals("size", 0)]
    counts = [n for n, v in f.ints.items() if v > 0] + [str(k) for k in int_literals("count", 0)]
    arg_rules = {
        "stream": "ref",
        "streams": 'ref | "(" ref (", " ref)+ ")"',
        "zip": '"(" ref (", " ref)+ ")"',
        "pair": '"(" ref ", " ref ")"',
        "parts_sel": '"(" name ", " ref ")"',
    }
    calls, elem_calls = [], []
    missing = {k for k, names in (("fn_stateless", stateless), ("fn_stateful", stateful))
               if not names}
    for pdef in REGISTRY.values():
        if any(p.kind in missing and p.required for p in pdef.params):
            continue  # the task has no fn of that kind: the primitive cannot be used
        calls.append(_call_rule(pdef, f, f"arg{pdef.args.replace('_', '')}"))
        if pdef.args in ("stream", "streams"):
            elem_calls.append(_call_rule(pdef, f, "elemarg", loop=True))
    rules = [
        f"root ::= {_lit(PREFIX)} stmt* ret {_lit(SUFFIX)}",
    ]
    rules = [r.replace(" ::= ", "\x00", 1) for r in rules + _more_rules(
        stateless, stateful, sizes, counts, calls, elem_calls, arg_rules)]
    return [tuple(r.split("\x00", 1)) for r in rules if r]  # type: ignore[misc]


def _more_rules(stateless: list[str], stateful: list[str], sizes: list[str], counts: list[str],
                calls: list[str], elem_calls: list[str], arg_rules: dict[str, str]) -> list[str]:
    rules = [
        'stmt ::= "  " names " = " rhs "\\n"',
        'ret ::= "  " "return " retval (", " retval)* "\\n"',
        "retval ::= ref | call",
        'names ::= name ("," " "? name)*',
        "rhs ::= call | comp" + (" | fnlist" if stateless else ""),
        "call ::= " + " | ".join(calls),
        "elemcall ::= " + " | ".join(elem_calls),
        'elemarg ::= name | elemcall',
        ('comp ::= "[" elemcall " for " name (", " name)? " in " (name | "zip(" '
         + ('(fnlist | name)' if stateless else "name") + ' ", " name ")") "]"'),
        'fnlist ::= "[" fnstateless (", " fnstateless)* "]"' if stateless else "",
        'ref ::= name ("[" int "]")?',
        "name ::= [A-Za-z_] [A-Za-z0-9_]*",
        "int ::= [0-9] [0-9]?",
        'axes ::= "[" int (", " int)* "]"',
        f"fnstateless ::= {_alt(stateless)}" if stateless else "",
        f"fnstateful ::= {_alt(stateful)}" if stateful else "",
        f"size ::= {_alt(sizes)}",
        f"count ::= {_alt(counts)}",
    ]
    for form, rule in arg_rules.items():
        rules.append(f"arg{form.replace('_', '')} ::= {rule}")
    return rules
