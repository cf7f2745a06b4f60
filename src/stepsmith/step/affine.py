"""Static affine (consume-once) analysis and automatic `Copy` repair of STeP programs.

A STeP stream is a hardware FIFO drained by its reader, so every stream may be consumed by at
most one primitive (`.apply(...)` argument). The runtime tracks this too, but a static check
gives the LLM one message per offending stream before anything runs, and `repair` fixes the
common mistake deterministically (the paper's "guardian" did it with an LLM call and sometimes
corrupted correct programs).

Model. The program is the body of `def impl(<inputs>):`. Every definition of a stream variable
is a separate stream (SSA-style), so reassigning a name starts a fresh count. A *use* is an
occurrence of a stream inside the argument of an `.apply(...)` call; `return`, `len(...)`,
`zip(...)` and keyword arguments of the primitive constructor are not uses. Lists of streams
(Partition outputs, comprehension results, `c = step.Copy().apply(x)`) are tracked element-wise
(`parts[0]`, `parts[1]`), a whole-list use consumes every element. A comprehension or `for`
loop over a list consumes each element once; a stream defined outside a loop and consumed inside
it is consumed once per iteration (a violation unless the loop provably runs at most once).
Where the analysis cannot be sure (aliases through other containers, `if` branches that bind
differently) it errs on the side of *not* reporting: the runtime tracker is the backstop.

`repair` edits the text line-wise: for a stream used k > 1 times it inserts k-1 chained
`Copy` calls right after the stream's definition (at the top of the body for inputs, at the
top of the loop body for a loop variable) and renames each use to its own copy. A use repeated
by a loop of known trip count n gets n copies zipped into the loop
(`for p in parts` -> `for p, w_i in zip(parts, [w_a, w_b, w_c])`). Everything else is
byte-identical. What cannot be repaired safely (uses through aliases, several uses per
iteration, loops of unknown length, whole lists used twice, loop-carried streams) is left for
the verifier to report.
"""

from __future__ import annotations

import ast
import builtins
import itertools
import re
import warnings
from dataclasses import dataclass, field

__all__ = [
    "AffineParseError",
    "AffineViolation",
    "ParsedProgram",
    "check_source",
    "infer_inputs",
    "parse_program",
    "repair",
]

# Names that are never streams when the caller does not say which names are inputs.
_NON_STREAM_NAMES = frozenset(dir(builtins)) | {"step", "torch", "ctx", "input_data", "self"}
_LINE_RE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")


class AffineParseError(SyntaxError):
    """The program could not be parsed, so the affine rule could not be checked."""


@dataclass
class AffineViolation:
    """One stream consumed more than once; `message` is written for an LLM to act on."""

    name: str
    count: int
    lines: list[int]
    message: str


@dataclass
class ParsedProgram:
    """A parsed program body with positions relative to the source text as given."""

    body: list[ast.stmt]
    params: list[str] | None
    header_line: int  # line of the `def` when the source was a wrapped function, else 0


def _indented(src: str) -> bool:
    """The first code line is indented: the text is a body copied from inside a `def`."""
    for line in src.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            return line[:1] in (" ", "\t")
    return False


def _quiet_parse(src: str) -> ast.Module:
    """`ast.parse` without SyntaxWarnings on stderr (`1if x`): untrusted text is routine here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        return ast.parse(src)


def parse_program(src: str) -> ParsedProgram:
    """Parse an impl body (plain, uniformly indented, or wrapped in a single `def`).

    Raises `AffineParseError` naming the offending line when the text is not Python.
    """
    if not isinstance(src, str):
        raise AffineParseError(
            f"the program must be Python source text, found {type(src).__name__}"
        )
    try:
        mod = _quiet_parse(src)
    except ValueError as exc:  # NUL bytes
        raise AffineParseError(f"the program cannot be parsed: {exc}") from None
    except SyntaxError as exc:
        try:
            wrapped = _quiet_parse("if 1:\n" + src)
        except (SyntaxError, ValueError) as second:
            err, line = exc, exc.lineno
            if _indented(src) and getattr(second, "lineno", None):
                err, line = second, second.lineno - 1  # type: ignore[union-attr]
            text = " ".join((getattr(err, "text", None) or "").split())
            text = text if len(text) <= 80 else text[:77] + "..."
            where = f"line {line}: " if line else ""
            msg = getattr(err, "msg", str(err))
            raise AffineParseError(f"{where}{msg}" + (f": `{text}`" if text else "")) from None
        body = wrapped.body[0].body  # type: ignore[attr-defined]
        for stmt in body:
            ast.increment_lineno(stmt, -1)
        return ParsedProgram(body=body, params=None, header_line=0)
    if len(mod.body) == 1 and isinstance(mod.body[0], ast.FunctionDef):
        fn = mod.body[0]
        params = [a.arg for a in fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs]
        return ParsedProgram(body=fn.body, params=params, header_line=fn.lineno)
    return ParsedProgram(body=mod.body, params=None, header_line=0)


# --------------------------------------------------------------------------- abstract values


@dataclass(eq=False)
class _Obj:
    """One stream (or list of streams) produced by one definition."""

    name: str
    kind: str  # "input" | "single" | "list" | "pair" | "iter" | "unknown"
    anchor: tuple[tuple[int, int], ...]  # block path of the defining statement (-1 = block top)
    loop_ids: tuple[int, ...]
    def_line: int
    anonymous: bool = False
    parent: object = None  # for "iter": the value iterated over
    in_comprehension: bool = False
    carried: bool = False
    uses: list[_Use] = field(default_factory=list)
    propagated: bool = False
    loop_iter: ast.expr | None = None  # for "iter": the iterable expression of its loop


@dataclass(eq=False)
class _Use:
    obj: _Obj
    key: object  # None (whole) | int | "each" | ("dyn", text) | ("slice", text)
    node: ast.AST | None
    line: int
    consumer: str
    call: ast.Call | None
    path: tuple[tuple[int, int], ...]
    factor: int | None  # 1 normally; k (>= 2) or None (unknown) when consumed in a loop
    loop_line: int
    branches: tuple[tuple[int, int], ...]
    loops: tuple[_Loop, ...] = ()  # the loops that repeat this use (stream defined outside)
    scope: ast.AST | None = None  # the node `node` must lie in for a rename (call or loop iter)


@dataclass(eq=False)
class _Ref:
    obj: _Obj
    key: object
    node: ast.AST | None


@dataclass(eq=False)
class _ListVal:
    items: list[object]


@dataclass(eq=False)
class _EachOf:
    src: object  # a _Ref or _ListVal whose elements are iterated
    iterations: int | None


class _Opaque:
    def __init__(self, label: str) -> None:
        self.label = label

    def __repr__(self) -> str:
        return self.label


_NONSTREAM = _Opaque("nonstream")
_UNKNOWN = _Opaque("unknown")


@dataclass(eq=False)
class _Loop:
    id: int
    line: int
    assigned: frozenset[str]
    iterations: int | None
    target: ast.expr | None = None  # the loop's target and iterable, for the repair rewrite
    iter: ast.expr | None = None
    single_generator: bool = True


def _stored_names(nodes: list[ast.stmt] | list[ast.AST]) -> frozenset[str]:
    out: set[str] = set()
    for node in nodes:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                out.add(sub.id)
    return frozenset(out)


def _const_int(node: ast.AST) -> int | None:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, ast.USub)
        and isinstance(node.operand, ast.Constant)
        and type(node.operand.value) is int
    ):
        return -node.operand.value
    return None


def _primitive_name(func_value: ast.AST) -> str | None:
    """`step.Map(...)` -> "Map" for the receiver of an `.apply`."""
    if (
        isinstance(func_value, ast.Call)
        and isinstance(func_value.func, ast.Attribute)
        and isinstance(func_value.func.value, ast.Name)
        and func_value.func.value.id == "step"
    ):
        return func_value.func.attr
    return None


def _describe_consumer(call: ast.Call) -> str:
    recv = call.func.value  # type: ignore[attr-defined]
    prim = _primitive_name(recv)
    if prim is not None:
        return f"step.{prim}(...)"
    if isinstance(recv, ast.Name):
        return f"{recv.id}.apply(...)"
    return "….apply(...)"


class _Analyzer:
    """Walks the body once, building streams and their uses."""

    def __init__(self, parsed: ParsedProgram, params: list[str] | None) -> None:
        self.parsed = parsed
        self.params = params if params is not None else parsed.params
        self.objs: list[_Obj] = []
        self.env: dict[str, object] = {}
        self.loops: list[_Loop] = []
        self.path: list[tuple[int, int]] = []
        self.branches: list[tuple[int, int]] = []
        self.blocks: dict[int, list[ast.stmt]] = {}
        self.block_owner: dict[int, ast.AST | None] = {}
        self.unsafe = False
        self.returned: set[int] = set()
        self._loop_ids = itertools.count(1)
        self.root = parsed.body
        self._register_block(self.root, None)
        if self.params is not None:
            for name in self.params:
                self.env[name] = _Ref(self._new_input(name), None, None)

    # ----------------------------------------------------------------- objects and uses
    def _register_block(self, block: list[ast.stmt], owner: ast.AST | None) -> int:
        self.blocks[id(block)] = block
        self.block_owner[id(block)] = owner
        return id(block)

    def _new_input(self, name: str) -> _Obj:
        obj = _Obj(name, "input", ((id(self.root), -1),), (), 0)
        self.objs.append(obj)
        return obj

    def _new_obj(self, name: str, kind: str, line: int, anonymous: bool = False) -> _Obj:
        obj = _Obj(
            name,
            kind,
            tuple(self.path),
            tuple(lp.id for lp in self.loops),
            line,
            anonymous=anonymous,
        )
        self.objs.append(obj)
        return obj

    def _use(
        self, ref: _Ref, call: ast.Call, via_name: str | None, scope: ast.AST | None = None
    ) -> None:
        obj = ref.obj
        factor: int | None = 1
        loop_line = 0
        repeating: list[_Loop] = []
        varying: set[str] = set()  # `parts[i]` names a different element per value of i
        if isinstance(ref.node, ast.Subscript) and isinstance(ref.key, tuple):
            varying = {n.id for n in ast.walk(ref.node.slice) if isinstance(n, ast.Name)}
        for lp in self.loops:
            if lp.id in obj.loop_ids or varying & lp.assigned:
                continue
            if via_name is not None and via_name in lp.assigned:
                obj.carried = True
                continue
            loop_line = loop_line or lp.line
            repeating.append(lp)
            if factor is not None:
                factor = None if lp.iterations is None else factor * lp.iterations
        if factor is not None and factor <= 1:
            factor, loop_line, repeating = 1, 0, []
        node = ref.node
        line = getattr(node, "lineno", None) or call.lineno
        use = _Use(
            obj,
            ref.key,
            node,
            line,
            _describe_consumer(call),
            call,
            tuple(self.path),
            factor,
            loop_line,
            tuple(self.branches),
            tuple(repeating),
            scope if scope is not None else call,
        )
        obj.uses.append(use)
        if obj.kind == "iter" and not obj.propagated:
            obj.propagated = True
            self._propagate(obj, call)

    def _propagate(self, it: _Obj, call: ast.Call) -> None:
        """First use of a loop variable consumes each element of what is iterated once."""
        saved = self.loops
        self.loops = [lp for lp in self.loops if lp.id in it.loop_ids[:-1]]
        try:
            src = it.parent
            if isinstance(src, _Ref):
                key = "each" if src.key is None else src.key
                self._use(_Ref(src.obj, key, None), call, None)
            elif isinstance(src, _ListVal):
                # `for q in [a, b]`: the display is evaluated once, so a and b are renamable
                self._consume(src, call, scope=it.loop_iter)
        finally:
            self.loops = saved

    def _consume(self, value: object, call: ast.Call, scope: ast.AST | None = None) -> None:
        if isinstance(value, _Ref):
            node = value.node
            via = node.id if isinstance(node, ast.Name) else None
            if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
                via = node.value.id
            self._use(_Ref(value.obj, value.key, node), call, via, scope)
        elif isinstance(value, _ListVal):
            for item in value.items:
                self._consume(item, call, scope)

    # ----------------------------------------------------------------- expressions
    def _lookup(self, node: ast.Name) -> object:
        name = node.id
        if name in self.env:
            val = self.env[name]
            if isinstance(val, _Ref):
                return _Ref(val.obj, val.key, node)
            return val
        if self.params is None and not (
            name in _NON_STREAM_NAMES or name.startswith("fn_") or name.endswith("_value")
        ):
            obj = self._new_input(name)
            self.env[name] = _Ref(obj, None, None)
            return _Ref(obj, None, node)
        return _NONSTREAM

    def eval(self, node: ast.AST | None) -> object:
        if node is None:
            return _NONSTREAM
        method = getattr(self, f"_eval_{type(node).__name__}", None)
        if method is not None:
            return method(node)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                self.eval(child)
        return _UNKNOWN if isinstance(node, ast.expr) else _NONSTREAM

    def _eval_Name(self, node: ast.Name) -> object:
        return self._lookup(node)

    def _eval_Constant(self, node: ast.Constant) -> object:
        return _NONSTREAM

    def _eval_Attribute(self, node: ast.Attribute) -> object:
        self.eval(node.value)
        return _NONSTREAM

    def _eval_Starred(self, node: ast.Starred) -> object:
        return self.eval(node.value)

    def _eval_Tuple(self, node: ast.Tuple) -> object:
        return _ListVal([self.eval(e) for e in node.elts])

    _eval_List = _eval_Tuple

    def _eval_BinOp(self, node: ast.BinOp) -> object:
        self.eval(node.left)
        self.eval(node.right)
        return _NONSTREAM

    def _eval_UnaryOp(self, node: ast.UnaryOp) -> object:
        self.eval(node.operand)
        return _NONSTREAM

    def _eval_IfExp(self, node: ast.IfExp) -> object:
        self.eval(node.test)
        a, b = self.eval(node.body), self.eval(node.orelse)
        return _NONSTREAM if a is _NONSTREAM and b is _NONSTREAM else _UNKNOWN

    def _eval_Subscript(self, node: ast.Subscript) -> object:
        base = self.eval(node.value)
        index = _const_int(node.slice)
        if index is None:
            self.eval(node.slice)
        if base is _NONSTREAM:
            return _NONSTREAM
        text = ast.unparse(node)
        if isinstance(base, _ListVal):
            if index is not None and -len(base.items) <= index < len(base.items):
                return base.items[index]
            if isinstance(node.slice, ast.Slice):
                return _ListVal(base.items[_static_slice(node.slice)])
            return _UNKNOWN
        if isinstance(base, _Ref):
            if base.key is None:
                if index is not None:
                    return _Ref(base.obj, index, node)
                kind = "slice" if isinstance(node.slice, ast.Slice) else "dyn"
                return _Ref(base.obj, (kind, text), node)
            return _Ref(base.obj, ("dyn", text), node)
        return _UNKNOWN

    def _eval_Call(self, node: ast.Call) -> object:
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "apply":
            self.eval(func.value)
            for arg in node.args:
                self._consume(self.eval(arg), node)
            for kw in node.keywords:
                self._consume(self.eval(kw.value), node)
            prim = _primitive_name(func.value)
            kind = {"Copy": "pair", "Partition": "list"}.get(prim or "", "single")
            if prim is None:
                kind = "unknown"
            return _Ref(self._new_obj(f"step.{prim}(...)", kind, node.lineno, True), None, None)
        vals = [self.eval(a) for a in node.args]
        for kw in node.keywords:
            self.eval(kw.value)
        if isinstance(func, ast.Name) and func.id in ("list", "tuple") and len(vals) == 1:
            return vals[0]
        self.eval(func)
        return _NONSTREAM

    def _comprehension(self, node: ast.ListComp | ast.GeneratorExp) -> object:
        saved_env = dict(self.env)
        pushed = 0
        try:
            for gen in node.generators:
                elem = self._elem_of(gen.iter)
                assigned = _stored_names([gen.target, node.elt, *gen.ifs])
                self.loops.append(
                    _Loop(
                        next(self._loop_ids),
                        gen.iter.lineno,
                        assigned,
                        _iterations(elem),
                        gen.target,
                        gen.iter,
                        len(node.generators) == 1,
                    )
                )
                pushed += 1
                self._bind(gen.target, elem, gen.iter.lineno, in_comprehension=True)
                for cond in gen.ifs:
                    self.eval(cond)
            elt = self.eval(node.elt)
        finally:
            del self.loops[len(self.loops) - pushed :]
            self.env = {**saved_env, **{k: v for k, v in self.env.items() if k not in saved_env}}
            for gen in node.generators:
                for name in _stored_names([gen.target]):
                    if name in saved_env:
                        self.env[name] = saved_env[name]
                    else:
                        self.env.pop(name, None)
        if isinstance(elt, _Ref) and elt.obj.anonymous:
            return _Ref(self._new_obj("[...]", "list", node.lineno, True), None, None)
        return _NONSTREAM if elt is _NONSTREAM else _UNKNOWN

    _eval_ListComp = _comprehension
    _eval_GeneratorExp = _comprehension

    def _elem_of(self, node: ast.AST) -> object:
        """The abstract value of one element when iterating over `node`."""
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            fname = node.func.id
            if fname == "zip" and not node.keywords:
                if any(isinstance(a, ast.Starred) for a in node.args):
                    self.eval(node)
                    return _UNKNOWN
                return _ListVal([self._elem_of(a) for a in node.args])
            if fname == "enumerate" and node.args:
                for extra in node.args[1:]:
                    self.eval(extra)
                return _ListVal([_NONSTREAM, self._elem_of(node.args[0])])
            if fname in ("range", "len"):
                self.eval(node)
                n = _range_len(node) if fname == "range" else None
                return _EachOf(_NONSTREAM, n)
            if fname in ("list", "tuple", "reversed") and len(node.args) == 1:
                return self._elem_of(node.args[0])
        value = self.eval(node)
        if value is _NONSTREAM:
            return _NONSTREAM
        if isinstance(value, _ListVal):
            if all(item is _NONSTREAM for item in value.items):
                return _EachOf(_NONSTREAM, len(value.items))
            return _EachOf(value, len(value.items))
        if isinstance(value, _Ref):
            return _EachOf(value, 2 if value.obj.kind == "pair" and value.key is None else None)
        return _UNKNOWN

    # ----------------------------------------------------------------- binding
    def _bind(
        self, target: ast.AST, value: object, line: int, in_comprehension: bool = False
    ) -> None:
        if isinstance(target, ast.Name):
            self.env[target.id] = self._bound_value(target.id, value, line, in_comprehension)
        elif isinstance(target, (ast.Tuple, ast.List)):
            elts = target.elts
            starred = [i for i, e in enumerate(elts) if isinstance(e, ast.Starred)]
            if isinstance(value, _ListVal) and not starred and len(value.items) == len(elts):
                for sub, item in zip(elts, value.items, strict=True):
                    self._bind(sub, item, line, in_comprehension)
            elif isinstance(value, _Ref) and value.obj.anonymous:
                for sub in elts:
                    sub_t = sub.value if isinstance(sub, ast.Starred) else sub
                    kind = "list" if isinstance(sub, ast.Starred) else "single"
                    fresh = self._new_obj("?", kind, line, anonymous=True)
                    self._bind(sub_t, _Ref(fresh, None, None), line, in_comprehension)
            elif isinstance(value, _Ref) and value.key is None and not starred:
                for i, sub in enumerate(elts):
                    self._bind(sub, _Ref(value.obj, i, None), line, in_comprehension)
            elif isinstance(value, _EachOf):
                for sub in elts:
                    sub_t = sub.value if isinstance(sub, ast.Starred) else sub
                    self._bind(sub_t, _EachOf(_UNKNOWN, None), line, in_comprehension)
            else:
                fill = _NONSTREAM if value is _NONSTREAM else _UNKNOWN
                for sub in elts:
                    self._bind(
                        sub.value if isinstance(sub, ast.Starred) else sub,
                        fill,
                        line,
                        in_comprehension,
                    )
        elif isinstance(target, ast.Starred):
            self._bind(target.value, _UNKNOWN, line, in_comprehension)
        elif isinstance(target, ast.Subscript):
            # `outs[i] = ...` replaces an element: from here on the list holds other streams
            self.eval(target.slice)
            base = target.value
            if isinstance(base, ast.Name) and isinstance(self.env.get(base.id), _Ref):
                self.env[base.id] = _Ref(self._new_obj(base.id, "list", line), None, None)
            else:
                self.eval(base)
        else:  # attribute store: not STeP; evaluate, never repair
            self.unsafe = True
            for child in ast.iter_child_nodes(target):
                if isinstance(child, ast.expr):
                    self.eval(child)

    def _bound_value(self, name: str, value: object, line: int, in_comp: bool) -> object:
        if isinstance(value, _Ref):
            if value.obj.anonymous:
                value.obj.name, value.obj.anonymous = name, False
                value.obj.def_line = line
                return _Ref(value.obj, None, None)
            return _Ref(value.obj, value.key, value.node)
        if isinstance(value, _EachOf):
            if isinstance(value.src, _Opaque):
                return value.src
            obj = self._new_obj(name, "iter", line)
            obj.parent = value.src
            obj.in_comprehension = in_comp
            obj.loop_iter = self.loops[-1].iter if self.loops else None
            return _Ref(obj, None, None)
        return value

    # ----------------------------------------------------------------- statements
    def run(self) -> None:
        self._block(self.root)

    def _block(self, block: list[ast.stmt]) -> None:
        bid = id(block)
        for i, stmt in enumerate(block):
            self.path.append((bid, i))
            try:
                self._stmt(stmt)
            finally:
                self.path.pop()

    def _stmt(self, stmt: ast.stmt) -> None:
        if isinstance(stmt, ast.Assign):
            value = self.eval(stmt.value)
            for target in stmt.targets:
                self._bind(target, value, stmt.lineno)
        elif isinstance(stmt, ast.AnnAssign):
            if stmt.value is not None:
                self._bind(stmt.target, self.eval(stmt.value), stmt.lineno)
        elif isinstance(stmt, ast.AugAssign):
            self.eval(stmt.value)
            if isinstance(stmt.target, ast.Name):
                old = self.env.get(stmt.target.id, _NONSTREAM)
                self.env[stmt.target.id] = _NONSTREAM if old is _NONSTREAM else _UNKNOWN
        elif isinstance(stmt, ast.Return):
            value = self.eval(stmt.value)
            for item in value.items if isinstance(value, _ListVal) else [value]:
                if isinstance(item, _Ref):
                    self.returned.add(id(item.obj))
        elif isinstance(stmt, ast.Expr):
            self.eval(stmt.value)
        elif isinstance(stmt, ast.For):
            self._for(stmt)
        elif isinstance(stmt, ast.If):
            self._if(stmt)
        elif isinstance(stmt, (ast.Pass, ast.Break, ast.Continue)):
            pass
        else:
            self._other(stmt)

    def _for(self, stmt: ast.For) -> None:
        elem = self._elem_of(stmt.iter)
        assigned = _stored_names([stmt.target, *stmt.body])
        self.loops.append(
            _Loop(
                next(self._loop_ids),
                stmt.lineno,
                assigned,
                _iterations(elem),
                stmt.target,
                stmt.iter,
            )
        )
        body_id = self._register_block(stmt.body, stmt)
        self.path.append((body_id, -1))
        try:
            self._bind(stmt.target, elem, stmt.lineno)
        finally:
            self.path.pop()
        try:
            self._block(stmt.body)
        finally:
            self.loops.pop()
        if stmt.orelse:
            self._register_block(stmt.orelse, stmt)
            self._block(stmt.orelse)

    def _if(self, stmt: ast.If) -> None:
        self.eval(stmt.test)
        envs = []
        start = dict(self.env)
        for idx, block in enumerate((stmt.body, stmt.orelse)):
            self.env = dict(start)
            self._register_block(block, stmt)
            self.branches.append((id(stmt), idx))
            try:
                self._block(block)
            finally:
                self.branches.pop()
            envs.append(self.env)
        merged: dict[str, object] = {}
        for name in set(envs[0]) | set(envs[1]):
            a, b = envs[0].get(name, _UNKNOWN), envs[1].get(name, _UNKNOWN)
            same = a is b or (
                isinstance(a, _Ref) and isinstance(b, _Ref) and a.obj is b.obj and a.key == b.key
            )
            merged[name] = a if same else (_NONSTREAM if a is b is _NONSTREAM else _UNKNOWN)
        self.env = merged

    def _other(self, stmt: ast.stmt) -> None:
        """Statements STeP programs should not contain: analyse leniently, never repair."""
        self.unsafe = True
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            self.env[stmt.name] = _NONSTREAM
            return
        for name in ("test", "iter", "value", "exc", "msg"):
            child = getattr(stmt, name, None)
            if isinstance(child, ast.expr):
                self.eval(child)
        for item in getattr(stmt, "items", []) or []:
            self.eval(getattr(item, "context_expr", None))
        for name in ("body", "orelse", "finalbody"):
            block = getattr(stmt, name, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                self._register_block(block, stmt)
                self._block(block)
        for handler in getattr(stmt, "handlers", []) or []:
            self._register_block(handler.body, handler)
            self._block(handler.body)


def _static_slice(node: ast.Slice) -> slice:
    parts = [None if p is None else _const_int(p) for p in (node.lower, node.upper, node.step)]
    return slice(*parts)


def _range_len(node: ast.Call) -> int | None:
    args = [_const_int(a) for a in node.args]
    if node.keywords or not args or any(a is None for a in args) or len(args) > 3:
        return None
    try:
        return len(range(*args))  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return None


def _iterations(elem: object) -> int | None:
    if isinstance(elem, _EachOf):
        return elem.iterations
    if isinstance(elem, _ListVal):  # zip / enumerate: the shortest known iterable
        counts = [_iterations(item) for item in elem.items]
        known = [c for c in counts if c is not None]
        return min(known) if known else None
    return None


# --------------------------------------------------------------------------- counting


def _count(uses: list[_Use]) -> tuple[int, bool]:
    """Effective number of consumptions; uses in exclusive `if` branches don't add up."""
    exact = True
    plain: list[_Use] = []
    nested: dict[int, dict[int, list[_Use]]] = {}
    for use in uses:
        if use.branches:
            (if_id, branch), rest = use.branches[0], use.branches[1:]
            sub = _Use(**{**use.__dict__, "branches": rest})
            nested.setdefault(if_id, {}).setdefault(branch, []).append(sub)
        else:
            plain.append(use)
    total = 0
    for use in plain:
        if use.factor is None:
            total += 2
            exact = False
        else:
            total += use.factor
    for arms in nested.values():
        best, best_exact = 0, True
        for arm in arms.values():
            n, ex = _count(arm)
            if n > best:
                best, best_exact = n, ex
        total += best
        exact = exact and best_exact
    return total, exact


@dataclass
class _Group:
    obj: _Obj
    label: str
    key: object
    uses: list[_Use]
    count: int
    exact: bool


def _origin(group: _Group) -> str:
    """Extra words for loop variables, so the LLM knows which list the element comes from."""
    src = group.obj.parent
    if group.obj.kind == "iter" and isinstance(src, _Ref):
        return f" (each element of '{src.obj.name}')"
    return ""


def _violating_groups(objs: list[_Obj]) -> list[_Group]:
    out: list[_Group] = []
    for obj in objs:
        if not obj.uses:
            continue
        whole = [u for u in obj.uses if u.key is None or u.key == "each"]
        if whole:
            n, exact = _count(obj.uses)
            if n >= 2:
                out.append(_Group(obj, obj.name, None, list(obj.uses), n, exact))
            continue
        by_key: dict[object, list[_Use]] = {}
        for use in obj.uses:
            by_key.setdefault(use.key, []).append(use)
        for key, uses in by_key.items():
            n, exact = _count(uses)
            if n >= 2:
                label = f"{obj.name}[{key}]" if isinstance(key, int) else str(key[1])
                out.append(_Group(obj, label, key, uses, n, exact))
    out.sort(key=lambda g: (min(u.line for u in g.uses), g.label))
    return out


def _fmt_lines(lines: list[int]) -> str:
    uniq = sorted(set(lines))
    if len(uniq) == 1:
        return f"line {uniq[0]}"
    return "lines " + ", ".join(map(str, uniq[:-1])) + f" and {uniq[-1]}"


def _message(group: _Group) -> str:
    uses = sorted(group.uses, key=lambda u: (u.line, getattr(u.node, "col_offset", 0)))
    lines = [u.line for u in uses]
    consumers = ", ".join(u.consumer for u in uses)
    name = group.label
    times = f"{group.count} times" if group.exact else f"at least {group.count} times"
    loop_uses = [u for u in uses if u.factor != 1]
    if loop_uses:
        lp = loop_uses[0]
        where = (
            f"inside the loop at line {lp.loop_line}, once per iteration ({times} in total; "
            f"{_fmt_lines(lines)}: {consumers})"
        )
        return (
            f"stream '{name}'{_origin(group)} is consumed {where}; a stream can be consumed once — consume it "
            "once outside the loop, or make one Copy per consumer with "
            f"`a, b = step.Copy().apply({_plain(group)})`"
        )
    src = _plain(group)
    if group.count > 5:
        fix = (
            f"split it with {group.count - 1} chained Copies, starting with "
            f"`a, t1 = step.Copy().apply({src})` and continuing with "
            "`b, t2 = step.Copy().apply(t1)` and so on"
        )
    elif group.count == 2:
        fix = f"split it with `a, b = step.Copy().apply({src})`"
    else:
        fix = (
            f"split it with {group.count - 1} chained Copies: `a, t1 = step.Copy().apply({src})`"
            + "".join(
                f", `{chr(98 + i)}, t{i + 2} = step.Copy().apply(t{i + 1})`"
                for i in range(group.count - 3)
            )
            + f", then `{chr(96 + group.count - 1)}, {chr(96 + group.count)} = "
            f"step.Copy().apply(t{group.count - 2})`"
        )
    return (
        f"stream '{name}'{_origin(group)} is consumed {times} ({_fmt_lines(lines)}: {consumers}); "
        f"a stream can be consumed once — {fix}"
    )


def _plain(group: _Group) -> str:
    if isinstance(group.key, int):
        return f"{group.obj.name}[{group.key}]"
    return group.obj.name


def _analyze(src: str, params: list[str] | None) -> _Analyzer:
    try:
        parsed = parse_program(src)
        analyzer = _Analyzer(parsed, params)
        analyzer.run()
    except RecursionError:
        raise AffineParseError(
            "the program is nested too deeply to analyse; write it as a sequence of assignments"
        ) from None
    return analyzer


def infer_inputs(src: str) -> list[str]:
    """Input stream names of a program body: free names consumed or returned as streams.

    A wrapped `def impl(a, b):` gives its parameters. Names that are only passed as
    constructor arguments (`n=D`) or never used are not inputs.
    """
    analyzer = _analyze(src, None)
    if analyzer.parsed.params is not None:
        return list(analyzer.parsed.params)
    return [
        o.name
        for o in analyzer.objs
        if o.kind == "input" and (o.uses or id(o) in analyzer.returned)
    ]


def check_source(src: str, params: list[str] | None = None) -> list[AffineViolation]:
    """Static affine rule: every stream consumed by at most one primitive.

    `params` are the input stream names; when None, names read but never assigned (other than
    `step`, builtins, `fn_*` and `*_value`) are inputs. Raises `AffineParseError` when `src`
    is not Python.
    """
    analyzer = _analyze(src, params)
    out = []
    for group in _violating_groups(analyzer.objs):
        lines = sorted(u.line for u in group.uses)
        out.append(AffineViolation(group.label, group.count, lines, _message(group)))
    return out


# --------------------------------------------------------------------------- repair


def _split_lines(src: str) -> list[str]:
    return _LINE_RE.findall(src)


def _char_col(line: str, byte_col: int) -> int:
    return len(line.encode("utf-8")[:byte_col].decode("utf-8", errors="replace"))


def _leading_ws(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


@dataclass
class _Plan:
    insert_before: int  # 0-based index of the line the copies go before
    indent: str
    source_text: str
    base: str
    spans: list[tuple[int, int, int]]  # (line index, start char, end char), one per use
    loops: list[_LoopSlot | None]  # per use: None, or how to thread k copies into its loop

    def copies_needed(self) -> int:
        return sum(1 if slot is None else slot.k for slot in self.loops)


@dataclass
class _LoopSlot:
    """A use repeated by a loop of known trip count k: each iteration gets its own copy via
    `for T, v in zip(I, [c1, ..., ck])`."""

    k: int
    target: tuple[int, int, int]
    iter: tuple[int, int, int]
    loop_id: int
    target_is_name: bool


class _Repairer:
    def __init__(self, src: str, analyzer: _Analyzer) -> None:
        self.src = src
        self.lines = _split_lines(src)
        self.an = analyzer
        self.taken = {n.id for s in analyzer.root for n in ast.walk(s) if isinstance(n, ast.Name)}
        self.taken |= {a.arg for s in analyzer.root for a in ast.walk(s) if isinstance(a, ast.arg)}
        self.taken |= set(analyzer.params or [])

    def fresh(self, base: str) -> str:
        for i in itertools.count(1):
            name = base if i == 1 else f"{base}{i}"
            if name not in self.taken and name not in _NON_STREAM_NAMES:
                self.taken.add(name)
                return name
        raise AssertionError("unreachable")

    def plan(self, group: _Group) -> _Plan | None:
        obj = group.obj
        if obj.carried or obj.in_comprehension or self.an.unsafe:
            return None
        if obj.kind not in ("input", "single", "iter", "unknown") and not isinstance(
            group.key, int
        ):
            return None
        if obj.kind == "iter" and group.key is not None:
            return None
        canon = obj.name if group.key is None else f"{obj.name}[{group.key}]"
        if not canon.isidentifier() and group.key is None:
            return None
        spans = []
        slots: list[_LoopSlot | None] = []
        per_loop: dict[int, int] = {}
        for use in group.uses:
            if use.key == "each" or use.node is None or use.call is None:
                return None
            if use.factor == 1:
                slots.append(None)
            else:
                slot = self._loop_slot(use)
                if slot is None:
                    return None
                per_loop[slot.loop_id] = per_loop.get(slot.loop_id, 0) + 1
                slots.append(slot)
            node = use.node
            if node.lineno != node.end_lineno:
                return None
            if use.scope is None or not _within(node, use.scope):
                return None
            if group.key is None:
                if not (isinstance(node, ast.Name) and node.id == obj.name):
                    return None
            elif not (
                isinstance(node, ast.Subscript)
                and isinstance(node.value, ast.Name)
                and node.value.id == obj.name
                and _const_int(node.slice) == group.key
            ):
                return None
            row = node.lineno - 1
            if row >= len(self.lines):
                return None
            line = self.lines[row]
            start, end = _char_col(line, node.col_offset), _char_col(line, node.end_col_offset)
            if group.key is None and line[start:end] != obj.name:
                return None
            spans.append((row, start, end))
        if any(n > 1 for n in per_loop.values()):
            return None  # several uses per iteration: leave it to the LLM
        where = self._insertion(obj.anchor, [u.path for u in group.uses], group.uses)
        if where is None:
            return None
        before, indent = where
        base = canon.replace("[", "_").replace("]", "").replace("-", "m")
        return _Plan(before, indent, canon, base, spans, slots)

    def _loop_slot(self, use: _Use) -> _LoopSlot | None:
        """A use inside exactly one loop of known trip count (2..64) can get one copy per
        iteration by zipping a list of copies into the loop."""
        if len(use.loops) != 1 or use.factor is None or not 2 <= use.factor <= 64:
            return None
        lp = use.loops[0]
        if lp.target is None or lp.iter is None or not lp.single_generator:
            return None
        spans = []
        for node in (lp.target, lp.iter):
            if node.lineno != node.end_lineno or node.lineno - 1 >= len(self.lines):
                return None
            line = self.lines[node.lineno - 1]
            start, end = _char_col(line, node.col_offset), _char_col(line, node.end_col_offset)
            spans.append((node.lineno - 1, start, end))
        target, iterable = spans
        return _LoopSlot(use.factor, target, iterable, lp.id, isinstance(lp.target, ast.Name))

    def _insertion(
        self, anchor: tuple[tuple[int, int], ...], paths: list[tuple], uses: list[_Use]
    ) -> tuple[int, str] | None:
        """Where to insert the Copies: right after the def, in the block holding every use."""
        if not anchor:
            return None
        level = 0
        while True:
            block_id, def_idx = anchor[level]
            if any(len(p) <= level or p[level][0] != block_id for p in paths):
                return None
            if (
                len(anchor) > level + 1
                and all(len(p) > level + 1 and p[level][1] == def_idx for p in paths)
                and all(p[level + 1][0] == anchor[level + 1][0] for p in paths)
            ):
                level += 1
                continue
            break
        block = self.an.blocks[block_id]
        if any(p[level][1] <= def_idx for p in paths):
            return None
        if def_idx == -1:
            first = block[0]
            owner = self.an.block_owner.get(block_id)
            if owner is not None and first.lineno <= owner.lineno:  # type: ignore[attr-defined]
                return None
            if self.an.parsed.header_line and first.lineno <= self.an.parsed.header_line:
                return None
            row = first.lineno - 1
            if any(u.line - 1 < row for u in uses):
                return None
            indent = _leading_ws(self.lines[row])
            if len(indent) != first.col_offset:
                return None
            return row, indent
        stmt = block[def_idx]
        row = stmt.end_lineno or stmt.lineno  # insert before the line after the statement
        if any(u.line <= row for u in uses):
            return None
        indent = _leading_ws(self.lines[stmt.lineno - 1])
        if len(indent) != stmt.col_offset:
            return None
        return row, indent

    def copies(self, plan: _Plan, k: int) -> tuple[list[str], list[str]]:
        """k-1 chained Copy lines and the k names given to the uses, in order."""
        names = [self.fresh(f"{plan.base}_{_letters(i)}") for i in range(k)]
        lines = []
        src = plan.source_text
        for i in range(k - 1):
            rest = names[i + 1] if i == k - 2 else self.fresh(f"{plan.base}_t{i + 1}")
            lines.append(f"{plan.indent}{names[i]}, {rest} = step.Copy().apply({src})")
            src = rest
        return lines, names


def _letters(i: int) -> str:
    s = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        s = chr(97 + r) + s
    return s


def _within(node: ast.AST, outer: ast.AST) -> bool:
    a = (node.lineno, node.col_offset)  # type: ignore[attr-defined]
    b = (node.end_lineno, node.end_col_offset)  # type: ignore[attr-defined]
    return (outer.lineno, outer.col_offset) <= a and b <= (  # type: ignore[attr-defined]
        outer.end_lineno,  # type: ignore[attr-defined]
        outer.end_col_offset,  # type: ignore[attr-defined]
    )


def _newline_of(lines: list[str]) -> str:
    for line in lines:
        for nl in ("\r\n", "\n", "\r"):
            if line.endswith(nl):
                return nl
    return "\n"


def repair(src: str, params: list[str] | None = None) -> str:
    """Insert chained `Copy` calls so every stream is consumed at most once.

    Clean programs come back byte-identical; the pass is idempotent; untouched lines keep
    their text and comments. Anything that cannot be repaired safely is left as it is, and an
    input that is not a parsable program is returned unchanged (never raises).
    """
    try:
        return _repair(src, params)
    except Exception:  # noqa: BLE001 - a repair pass must never take the pipeline down
        return src


def _repair(src: str, params: list[str] | None) -> str:
    """Repeat single repair rounds until nothing changes (so the pass is idempotent)."""
    out = src
    for _ in range(4):
        new = _repair_round(out, params)
        if new == out:
            break
        out = new
    return out


def _repair_round(src: str, params: list[str] | None) -> str:
    try:
        analyzer = _analyze(src, params)
    except (AffineParseError, RecursionError, ValueError):
        return src
    groups = _violating_groups(analyzer.objs)
    if not groups:
        return src
    rep = _Repairer(src, analyzer)
    edits: list[tuple[int, int, int, str]] = []
    inserts: dict[int, list[str]] = {}
    used_spans: set[tuple[int, int, int]] = set()
    loop_adds: dict[int, tuple[_LoopSlot, list[tuple[str, str]]]] = {}
    repaired = 0
    for group in groups:
        plan = rep.plan(group)
        if plan is None or any(s in used_spans for s in plan.spans):
            continue
        new_lines, names = rep.copies(plan, plan.copies_needed())
        order = sorted(range(len(plan.spans)), key=lambda i: plan.spans[i])
        pos = 0
        for idx in order:
            slot = plan.loops[idx]
            row, start, end = plan.spans[idx]
            if slot is None:
                edits.append((row, start, end, names[pos]))
                pos += 1
            else:
                var = rep.fresh(f"{plan.base}_i")
                chunk = ", ".join(names[pos : pos + slot.k])
                pos += slot.k
                edits.append((row, start, end, var))
                loop_adds.setdefault(slot.loop_id, (slot, []))[1].append((var, f"[{chunk}]"))
            used_spans.add(plan.spans[idx])
        inserts.setdefault(plan.insert_before, []).extend(new_lines)
        repaired += 1
    if not repaired:
        return src
    for slot, adds in loop_adds.values():
        # insertions only, so renames inside the iterable (`[a, b]` -> `[a_x, b_x]`) survive
        (tr, ts, te), (ir, is_, ie) = slot.target, slot.iter
        names = ", ".join(var for var, _ in adds)
        if slot.target_is_name:
            edits.append((tr, te, te, f", {names}"))
        else:
            edits += [(tr, ts, ts, "("), (tr, te, te, f"), {names}")]
        edits += [(ir, is_, is_, "zip("), (ir, ie, ie, ", " + ", ".join(c for _, c in adds) + ")")]
    lines = list(rep.lines)
    for row, start, end, text in sorted(edits, reverse=True):
        lines[row] = lines[row][:start] + text + lines[row][end:]
    nl = _newline_of(lines)
    for before in sorted(inserts, reverse=True):
        block = [text + nl for text in inserts[before]]
        if before >= len(lines) and lines and not lines[-1].endswith(("\n", "\r")):
            lines[-1] += nl
        lines[before:before] = block
    out = "".join(lines)
    # Safety net: the result must parse and must not have gained violations.
    try:
        after = check_source(out, params)
    except AffineParseError:
        return src
    if len(after) > len(groups) - repaired:
        return src
    return out
