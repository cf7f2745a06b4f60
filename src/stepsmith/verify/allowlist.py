"""AST allow-list for untrusted STeP programs, checked before anything is executed.

LLM-written programs run inside our process tree, so before compiling them we accept only the
small Python subset a STeP program needs: assignments (tuple unpacking, `+=` on ints), calls
`step.<Primitive>(...).apply(...)`, a few pure builtins (`zip`, `range`, `enumerate`, `len`,
...), tuples, lists, list comprehensions and `for` loops over those, indexing and slicing,
arithmetic, comparisons and `if` on sizes, `return`, names and constants. Everything that could
reach the interpreter's internals (dunders, attribute access other than `step.X` / `.apply`,
`getattr`, `exec`, imports, ...) or hang it without a loop bound (`while`) is rejected with a
message that names the line and the construct, because the message goes back to the LLM.
Resource exhaustion that stays within the subset (`range(10**12)`, huge `Repeat`) is the
sandbox's job (timeouts and memory limits), not this module's.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping

# one program parser and one recogniser of `step.P` for the allow-list, the affine analysis and
# the mutants (bodies copied from inside a `def` are indented; untrusted text must not spray
# SyntaxWarnings); the primitives and their parameter names are the registry's
from stepsmith.step.affine.source import apply_receiver, parse_body, primitive_of, step_attr
from stepsmith.step.registry import REGISTRY

__all__ = ["ALLOWED_BUILTINS", "DisallowedConstruct", "ProgramCheckError", "ProgramSyntaxError",
           "check_program"]

#: Builtins a program may call: pure, bounded by their arguments, no access to objects' guts.
ALLOWED_BUILTINS: frozenset[str] = frozenset(
    {"zip", "range", "enumerate", "len", "list", "tuple", "reversed", "min", "max", "abs", "int"}
)

#: Names that give access to the interpreter; rejected even when only read. `input_data` and
#: `ctx` are the task's data and context: a program computes from its input streams.
FORBIDDEN_NAMES: frozenset[str] = frozenset(
    "exec eval open compile getattr setattr delattr hasattr globals locals vars dir breakpoint "
    "input print help type object super memoryview bytearray classmethod staticmethod property "
    "exit quit format iter next torch input_data ctx os sys builtins".split()
)

_ITER_CALLS = frozenset({"zip", "range", "enumerate", "reversed", "list", "tuple"})
#: Expressions allowed as such: the checker checks their operator, then every operand.
_OPERANDS = (ast.Tuple, ast.List, ast.Starred, ast.Subscript, ast.Slice, ast.BinOp, ast.UnaryOp,
             ast.Compare, ast.BoolOp, ast.IfExp)
_UNARY_OPS = (ast.USub, ast.UAdd, ast.Not)
_ARITH_OPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow)
_HINT = "use only step.<Primitive>(...).apply(...) calls"
_MAX_EXPONENT = 64


def _small_exponent(node: ast.expr) -> bool:
    """`x ** 2`, `x ** D`, `x ** E_value` are fine; `2 ** 10 ** 10` stalls the interpreter."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        node = node.operand
    if isinstance(node, ast.Constant):
        return isinstance(node.value, (int, float)) and abs(node.value) <= _MAX_EXPONENT
    return isinstance(node, (ast.Name, ast.Subscript))


# Statement/expression kinds with a fixed explanation of why they are rejected.
_REJECTED: dict[type, str] = {
    ast.Import: "imports are not allowed in a STeP program",
    ast.ImportFrom: "imports are not allowed in a STeP program",
    ast.FunctionDef: "defining functions is not allowed; the program is already the body of impl()",
    ast.AsyncFunctionDef: "defining functions is not allowed",
    ast.ClassDef: "defining classes is not allowed",
    ast.Lambda: "lambda is not allowed; pass the task's fns by name (fn=fn_name)",
    ast.With: "`with` is not allowed",
    ast.AsyncWith: "`with` is not allowed",
    ast.Try: "try/except is not allowed; errors are reported by the verifier",
    ast.TryStar: "try/except is not allowed; errors are reported by the verifier",
    ast.While: "while loops are not allowed; use `for ... in range(...)` or a comprehension",
    ast.Delete: "`del` is not allowed",
    ast.Global: "`global` is not allowed",
    ast.Nonlocal: "`nonlocal` is not allowed",
    ast.Yield: "`yield` is not allowed; return the output stream(s)",
    ast.YieldFrom: "`yield` is not allowed; return the output stream(s)",
    ast.Await: "`await` is not allowed",
    ast.AsyncFor: "`async for` is not allowed",
    ast.Raise: "`raise` is not allowed",
    ast.Assert: "`assert` is not allowed",
    ast.NamedExpr: "the walrus operator `:=` is not allowed; use a plain assignment",
    ast.JoinedStr: "f-strings are not allowed; a STeP program has no use for strings",
    ast.Dict: "dict displays are not allowed; use tuples or lists",
    ast.Set: "set displays are not allowed; use tuples or lists",
    ast.DictComp: "dict comprehensions are not allowed; use a list comprehension",
    ast.SetComp: "set comprehensions are not allowed; use a list comprehension",
    ast.Match: "`match` is not allowed",
    ast.AnnAssign: "annotated assignments are not allowed; write `x = ...`",
}


class ProgramCheckError(Exception):
    """A program rejected before execution; `message` is LLM-facing, `line` is 1-based."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line

    def __str__(self) -> str:
        return self.message


class DisallowedConstruct(ProgramCheckError):
    """The program uses Python outside the STeP subset."""


class ProgramSyntaxError(ProgramCheckError):
    """The program is not valid Python."""


def _parse(src: str) -> ast.Module:
    """Parse a body (`parse_body`: plain or uniformly indented), failures worded for the model."""
    try:
        return parse_body(src)
    except SyntaxError as err:
        text = " ".join((err.text or "").split())
        where = f"line {err.lineno}: " if err.lineno else ""
        shown = f" in `{text[:80]}`" if text else ""
        raise ProgramSyntaxError(f"{where}syntax error{shown}: {err.msg}; the answer must be the "
                                 "Python body of the impl function (STeP calls, assignments and "
                                 "a return)", err.lineno) from None
    except RecursionError:
        raise ProgramSyntaxError("the program is nested too deeply to parse; write it as a "
                                 "sequence of assignments", None) from None
    except (ValueError, MemoryError) as exc:  # e.g. NUL bytes
        raise ProgramSyntaxError(f"the program cannot be parsed: {exc}", None) from None


def check_program(src: str, fn_aliases: Mapping[str, str] | None = None) -> None:
    """Raise `DisallowedConstruct` / `ProgramSyntaxError` unless `src` is in the STeP subset.

    `fn_aliases` maps the task's fn names to their func_names (ScaleRow -> fn_scale): models
    often write `step.ScaleRow(...)`, and the message should say how to pass that fn instead.
    """
    if not isinstance(src, str):
        raise ProgramSyntaxError(
            f"the program must be Python source text, found {type(src).__name__}", None)
    mod = _parse(src)
    try:
        _Checker(src, fn_aliases or {}).visit_block(mod.body)
    except RecursionError:
        raise DisallowedConstruct("the program is nested too deeply to check; write it as a "
                                  "sequence of assignments", None) from None


class _Checker:
    def __init__(self, src: str, fn_aliases: Mapping[str, str]) -> None:
        self.src = src
        self.fn_aliases = fn_aliases

    # ----------------------------------------------------------------- reporting
    def _snippet(self, node: ast.AST) -> str:
        try:
            text = ast.get_source_segment(self.src, node) or ast.unparse(node)
        except Exception:  # noqa: BLE001 - only used to decorate a message
            text = type(node).__name__
        text = " ".join(text.split())
        return text if len(text) <= 70 else text[:67] + "..."

    def reject(self, node: ast.AST, why: str, hint: bool = True) -> None:
        line = getattr(node, "lineno", None)
        where = f"line {line}: " if line else ""
        tail = f"; {_HINT}" if hint else ""
        raise DisallowedConstruct(f"{where}`{self._snippet(node)}` — {why}{tail}", line)

    # ----------------------------------------------------------------- statements
    def visit_block(self, stmts: list[ast.stmt]) -> None:
        for stmt in stmts:
            self.stmt(stmt)

    def stmt(self, node: ast.stmt) -> None:
        if type(node) in _REJECTED:
            self.reject(node, _REJECTED[type(node)])
        if isinstance(node, ast.Assign):
            for target in node.targets:
                self.target(target)
            self.expr(node.value)
        elif isinstance(node, ast.AugAssign):
            if not isinstance(node.op, _ARITH_OPS):
                self.reject(node, "only arithmetic augmented assignment (+=, -=, *=, ...) is "
                                  "allowed")
            if not isinstance(node.target, ast.Name):
                self.reject(node, "augmented assignment is only allowed on plain names")
            self.target(node.target)
            self.expr(node.value)
        elif isinstance(node, ast.Expr):
            self.expr(node.value)
        elif isinstance(node, ast.Return):
            if node.value is not None:
                self.expr(node.value)
        elif isinstance(node, ast.For):
            self.target(node.target)
            self.iterable(node.iter)
            if node.orelse:
                self.reject(node, "`for ... else` is not allowed")
            self.visit_block(node.body)
        elif isinstance(node, ast.If):
            self.expr(node.test)
            self.visit_block(node.body)
            self.visit_block(node.orelse)
        elif isinstance(node, (ast.Pass, ast.Break, ast.Continue)):
            return
        else:
            self.reject(node, f"{type(node).__name__} statements are not allowed")

    def target(self, node: ast.expr) -> None:
        if isinstance(node, ast.Name):
            self.name(node, store=True)
        elif isinstance(node, (ast.Tuple, ast.List)):
            for elt in node.elts:
                self.target(elt)
        elif isinstance(node, ast.Starred):
            self.target(node.value)
        elif isinstance(node, ast.Subscript):
            self.expr(node)
        else:
            self.reject(node, "only names, tuples of names and subscripts can be assigned to")

    def iterable(self, node: ast.expr) -> None:
        """Loops may only run over zip/range/enumerate/..., names, displays and subscripts."""
        ok = (isinstance(node, (ast.Name, ast.Tuple, ast.List, ast.Subscript))
              or (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                  and node.func.id in _ITER_CALLS)
              or apply_receiver(node) is not None)
        if not ok:
            self.reject(node, "loops may only iterate over zip(...), range(...), enumerate(...), "
                              "a list or a name")
        self.expr(node)

    # ----------------------------------------------------------------- expressions
    def name(self, node: ast.Name, store: bool = False) -> None:
        ident = node.id
        if "__" in ident:
            self.reject(node, f"the name `{ident}` is not allowed (double-underscore names)")
        if ident in FORBIDDEN_NAMES:
            self.reject(node, f"`{ident}` is not available in a STeP program")
        if store and ident == "step":
            self.reject(node, "`step` is the STeP module and cannot be reassigned")
        if store and ident in ALLOWED_BUILTINS:
            self.reject(node, f"the builtin `{ident}` cannot be reassigned; pick another name")

    def attribute(self, node: ast.Attribute) -> None:
        if "__" in node.attr:
            self.reject(node, f"the attribute `{node.attr}` is not allowed (double-underscore "
                              "names)")
        name = step_attr(node)
        if name is None:
            self.reject(node, f"attribute access `.{node.attr}` is not allowed; the only "
                              "attributes are step.<Primitive> and .apply, as in "
                              "step.Map(fn=fn_name).apply(stream)", hint=False)
        elif name in self.fn_aliases and name not in REGISTRY:
            self.reject(node, f"`step.{name}` is not a STeP primitive: {name} is one of the task's "
                              f"specialized functions; pass it to a primitive by its func_name, "
                              f"e.g. step.Map(fn={self.fn_aliases[name]}).apply(stream) (or "
                              "Accum/Scan/Merge for a stateful fn)")
        elif name not in REGISTRY:
            allowed = ", ".join(sorted(REGISTRY))
            self.reject(node, f"`step.{name}` is not a STeP primitive (allowed: {allowed})")

    def call(self, node: ast.Call) -> None:
        func = node.func
        star_ok = True
        recv = apply_receiver(node)
        if recv is not None:
            if isinstance(recv, ast.Call) and step_attr(recv.func) is not None:
                self.call(recv)
            elif isinstance(recv, ast.Name):
                self.name(recv)
            else:
                self.reject(node, ".apply(...) must be called on a primitive, as in "
                                  "step.Map(fn=fn_name).apply(stream)")
        elif isinstance(func, ast.Attribute) and step_attr(func) is not None:
            self.attribute(func)
            self.parameters(node)
        elif isinstance(func, ast.Name):
            self.name(func)
            if func.id not in ALLOWED_BUILTINS:
                allowed = ", ".join(sorted(ALLOWED_BUILTINS))
                self.reject(node, f"calling `{func.id}(...)` is not allowed; a program may call "
                                  f"step primitives and the builtins {allowed}")
            for kw in node.keywords:
                if kw.arg == "key":  # max(xs, key=f) would call f: a way around this list
                    self.reject(node, f"`{func.id}(..., key=...)` is not allowed: it calls a "
                                      "function on every item; compare sizes or streams directly")
        elif isinstance(func, ast.Attribute):
            self.attribute(func)
            star_ok = False
        else:
            self.reject(node, "only step.<Primitive>(...) and builtins can be called")
            star_ok = False
        for arg in node.args:
            if isinstance(arg, ast.Starred) and not star_ok:
                self.reject(arg, "starred arguments are only allowed in known calls")
            self.expr(arg)
        for kw in node.keywords:
            if kw.arg is None:
                self.reject(node, "`**kwargs` unpacking is not allowed; write keyword=value")
            elif "__" in kw.arg:
                self.reject(node, f"the keyword `{kw.arg}` is not allowed")
            self.expr(kw.value)

    def parameters(self, node: ast.Call) -> None:
        """`step.P(k=...)`: every keyword is one of P's parameters in the registry (P itself was
        checked by `attribute`)."""
        pdef = REGISTRY[primitive_of(node) or ""]
        for kw in node.keywords:
            if kw.arg is not None and kw.arg not in pdef.param_names:
                takes = ", ".join(pdef.param_names) or "none"
                self.reject(node, f"step.{pdef.name} has no parameter `{kw.arg}` (its parameters: "
                                  f"{takes}); {pdef.usage}", hint=False)

    def comprehension(self, node: ast.ListComp | ast.GeneratorExp) -> None:
        for gen in node.generators:
            if gen.is_async:
                self.reject(node, "async comprehensions are not allowed")
            self.target(gen.target)
            self.iterable(gen.iter)
            for cond in gen.ifs:
                self.expr(cond)
        self.expr(node.elt)

    def expr(self, node: ast.expr) -> None:
        if type(node) in _REJECTED:
            self.reject(node, _REJECTED[type(node)])
        if isinstance(node, ast.Name):
            self.name(node, store=isinstance(node.ctx, ast.Store))
        elif isinstance(node, ast.Constant):
            if isinstance(node.value, bytes):
                self.reject(node, "bytes literals are not allowed")
        elif isinstance(node, ast.Attribute):
            self.attribute(node)
        elif isinstance(node, ast.Call):
            self.call(node)
        elif isinstance(node, (ast.ListComp, ast.GeneratorExp)):
            self.comprehension(node)
        elif isinstance(node, _OPERANDS):  # checked itself, then its operands in source order
            if isinstance(node, ast.BinOp):
                self.operator(node)
            elif isinstance(node, ast.UnaryOp) and not isinstance(node.op, _UNARY_OPS):
                self.reject(node, "only unary +, - and `not` are allowed")
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.expr):
                    self.expr(child)
        else:
            self.reject(node, f"{type(node).__name__} expressions are not allowed")

    def operator(self, node: ast.BinOp) -> None:
        if not isinstance(node.op, _ARITH_OPS):
            self.reject(node, "only arithmetic operators (+ - * / // % **) are allowed")
        if isinstance(node.op, ast.Pow) and not _small_exponent(node.right):
            self.reject(node, f"the exponent must be a small integer (at most {_MAX_EXPONENT}) or "
                              "a size name; huge powers only stall the verifier")
        if isinstance(node.op, ast.Mod) and isinstance(node.left, ast.Constant):
            if isinstance(node.left.value, str):
                self.reject(node, "string formatting is not allowed")
