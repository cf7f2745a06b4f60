"""The static affine check: every stream consumed by at most one primitive.

See `stepsmith.step.affine` for the model (SSA streams, what counts as a use, loops, lists).
"""

from __future__ import annotations

import ast
import builtins
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from stepsmith.step.affine.source import (
    AffineParseError,
    ParsedProgram,
    apply_receiver,
    parse_program,
    primitive_of,
)
from stepsmith.step.registry import REGISTRY

__all__ = ["AffineViolation", "check_source", "infer_inputs"]

# Names that are never streams when the caller does not say which names are inputs.
_NON_STREAM_NAMES = frozenset(dir(builtins)) | {"step", "torch", "ctx", "input_data", "self"}


@dataclass
class AffineViolation:
    """One stream consumed more than once; `message` is written for an LLM to act on."""

    name: str
    count: int
    lines: list[int]
    message: str


# --------------------------------------------------------------------------- abstract values


@dataclass(eq=False)
class _Obj:
    """One stream (or list of streams) produced by one definition."""

    name: str
    kind: str  # "input" | "single" | "list" | "tuple" | "iter" | "unknown"
    anchor: tuple[tuple[int, int], ...]  # block path of the defining statement (-1 = block top)
    loop_ids: tuple[int, ...]
    anonymous: bool = False
    parent: object = None  # for "iter": the value iterated over
    in_comprehension: bool = False
    carried: bool = False
    uses: list[_Use] = field(default_factory=list)
    propagated: bool = False
    loop_iter: ast.expr | None = None  # for "iter": the iterable expression of its loop
    arity: int | None = None  # for "tuple": how many streams (Copy(n=3) -> 3)


@dataclass(eq=False)
class _Use:
    obj: _Obj
    key: object  # None (whole) | int | "each" | ("dyn", text) | ("slice", text)
    node: ast.expr | None
    line: int
    consumer: str
    call: ast.Call | None
    path: tuple[tuple[int, int], ...]
    factor: int | None  # 1 normally; k (>= 2) or None (unknown) when consumed in a loop
    branches: tuple[tuple[int, int], ...]
    loops: tuple[_Loop, ...] = ()  # the loops that repeat this use (stream defined outside)
    scope: ast.AST | None = None  # the node `node` must lie in for a rename (call or loop iter)


@dataclass(eq=False)
class _Ref:
    obj: _Obj
    key: object
    node: ast.expr | None


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
_NEVER_STREAMS = (ast.Constant, ast.Attribute, ast.BinOp, ast.UnaryOp)


@dataclass(eq=False)
class _Loop:
    id: int
    line: int
    assigned: frozenset[str]
    iterations: int | None
    target: ast.expr | None = None  # the loop's target and iterable, for the repair rewrite
    iter: ast.expr | None = None
    single_generator: bool = True


def _stored_names(nodes: Sequence[ast.AST]) -> frozenset[str]:
    out: set[str] = set()
    for node in nodes:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                out.add(sub.id)
    return frozenset(out)


def _const_int(node: ast.AST) -> int | None:
    """An int literal, or a negated one (`-1`)."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = node.operand
        if isinstance(inner, ast.Constant) and type(inner.value) is int:
            return -inner.value
    return None


def _output_kind(ctor: ast.expr) -> tuple[str, int | None]:
    """What `ctor.apply(...)` returns, from the registry's output arity: one stream
    ("single"), a known number of streams ("tuple", with the count) or a list whose length
    is not a constant ("list", Partition(N=E_value)); "unknown" when ctor is no primitive."""
    name = primitive_of(ctor)
    if name is None or not isinstance(ctor, ast.Call):
        return "unknown", None
    pdef = REGISTRY.get(name)
    if pdef is None:  # not a primitive: the allow-list rejects it, count it as one stream
        return "single", None
    positional = zip(pdef.param_names, ctor.args, strict=False)
    given = [*positional, *((kw.arg, kw.value) for kw in ctor.keywords)]
    values = {key: _const_int(node) for key, node in given if key is not None}
    n = pdef.output_count(values)
    if n == 1:
        return "single", None
    return ("list", None) if n is None else ("tuple", n)


def _describe_consumer(call: ast.Call) -> str:
    recv = apply_receiver(call)
    prim = primitive_of(recv)
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
        return self._new_obj(name, "input", anchor=((id(self.root), -1),))

    def _new_obj(self, name: str, kind: str, anonymous: bool = False,
                 anchor: tuple[tuple[int, int], ...] | None = None) -> _Obj:
        """A stream defined here (an input: at the top of the body, in no loop)."""
        loops = () if anchor else tuple(lp.id for lp in self.loops)
        obj = _Obj(name, kind, anchor or tuple(self.path), loops, anonymous)
        self.objs.append(obj)
        return obj

    def _use(self, ref: _Ref, call: ast.Call, via_name: str | None,
             scope: ast.AST | None = None) -> None:
        obj = ref.obj
        factor: int | None = 1
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
            repeating.append(lp)
            if factor is not None:
                factor = None if lp.iterations is None else factor * lp.iterations
        if factor is not None and factor <= 1:
            factor, repeating = 1, []
        line = getattr(ref.node, "lineno", None) or call.lineno
        obj.uses.append(_Use(obj, ref.key, ref.node, line, _describe_consumer(call), call,
                             tuple(self.path), factor, tuple(self.branches),
                             tuple(repeating), scope if scope is not None else call))
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
        if self.params is None and not (name in _NON_STREAM_NAMES or name.startswith("fn_")
                                        or name.endswith("_value")):
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
        # a constant, an attribute (`x.shape`) or arithmetic is never a stream
        stream_like = isinstance(node, ast.expr) and not isinstance(node, _NEVER_STREAMS)
        return _UNKNOWN if stream_like else _NONSTREAM

    def _eval_Name(self, node: ast.Name) -> object:
        return self._lookup(node)

    def _eval_Starred(self, node: ast.Starred) -> object:
        return self.eval(node.value)

    def _eval_Tuple(self, node: ast.Tuple) -> object:
        return _ListVal([self.eval(e) for e in node.elts])

    _eval_List = _eval_Tuple

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
        recv = apply_receiver(node)
        if recv is not None:
            self.eval(recv)
            for arg in node.args:
                self._consume(self.eval(arg), node)
            for kw in node.keywords:
                self._consume(self.eval(kw.value), node)
            kind, arity = _output_kind(recv)
            obj = self._new_obj(f"step.{primitive_of(recv)}(...)", kind, True)
            obj.arity = arity
            return _Ref(obj, None, None)
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
                elem = self._enter_loop(gen.target, gen.iter, gen.iter.lineno,
                                        [node.elt, *gen.ifs], len(node.generators) == 1)
                pushed += 1
                self._bind(gen.target, elem, in_comp=True)
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
            return _Ref(self._new_obj("[...]", "list", True), None, None)
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
            whole = value.obj.kind == "tuple" and value.key is None
            return _EachOf(value, value.obj.arity if whole else None)
        return _UNKNOWN

    # ----------------------------------------------------------------- binding
    def _bind(self, target: ast.AST, value: object, in_comp: bool = False) -> None:
        if isinstance(target, ast.Name):
            self.env[target.id] = self._bound_value(target.id, value, in_comp)
        elif isinstance(target, ast.Tuple | ast.List):
            starred = [isinstance(e, ast.Starred) for e in target.elts]
            plain = [e.value if isinstance(e, ast.Starred) else e for e in target.elts]
            items: Iterable[object]
            if isinstance(value, _ListVal) and not any(starred) and len(value.items) == len(plain):
                items = value.items
            elif isinstance(value, _Ref) and value.obj.anonymous:  # fresh streams, in order
                items = (_Ref(self._new_obj("?", "list" if st else "single", True), None, None)
                         for st in starred)
            elif isinstance(value, _Ref) and value.key is None and not any(starred):
                items = [_Ref(value.obj, i, None) for i in range(len(plain))]
            elif isinstance(value, _EachOf):
                items = [_EachOf(_UNKNOWN, None) for _ in plain]
            else:
                items = [_NONSTREAM if value is _NONSTREAM else _UNKNOWN for _ in plain]
            for sub, item in zip(plain, items, strict=True):
                self._bind(sub, item, in_comp)
        elif isinstance(target, ast.Starred):
            self._bind(target.value, _UNKNOWN, in_comp)
        elif isinstance(target, ast.Subscript):
            # `outs[i] = ...` replaces an element: from here on the list holds other streams
            self.eval(target.slice)
            base = target.value
            if isinstance(base, ast.Name) and isinstance(self.env.get(base.id), _Ref):
                self.env[base.id] = _Ref(self._new_obj(base.id, "list"), None, None)
            else:
                self.eval(base)
        else:  # attribute store: not STeP; evaluate, never repair
            self.unsafe = True
            for child in ast.iter_child_nodes(target):
                if isinstance(child, ast.expr):
                    self.eval(child)

    def _bound_value(self, name: str, value: object, in_comp: bool) -> object:
        if isinstance(value, _Ref):
            if value.obj.anonymous:
                value.obj.name, value.obj.anonymous = name, False
                return _Ref(value.obj, None, None)
            return _Ref(value.obj, value.key, value.node)
        if isinstance(value, _EachOf):
            if isinstance(value.src, _Opaque):
                return value.src
            obj = self._new_obj(name, "iter")
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
                self._bind(target, value)
        elif isinstance(stmt, ast.AnnAssign):
            if stmt.value is not None:
                self._bind(stmt.target, self.eval(stmt.value))
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

    def _enter_loop(self, target: ast.expr, iterable: ast.expr, line: int,
                    body: Sequence[ast.AST], single_generator: bool = True) -> object:
        """Push the loop of `target` over `iterable` (`body`: where it assigns names); returns
        the abstract value of one element."""
        elem = self._elem_of(iterable)
        self.loops.append(_Loop(next(self._loop_ids), line, _stored_names([target, *body]),
                                _iterations(elem), target, iterable, single_generator))
        return elem

    def _for(self, stmt: ast.For) -> None:
        elem = self._enter_loop(stmt.target, stmt.iter, stmt.lineno, stmt.body)
        body_id = self._register_block(stmt.body, stmt)
        self.path.append((body_id, -1))
        try:
            self._bind(stmt.target, elem)
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
            same = a is b or (isinstance(a, _Ref) and isinstance(b, _Ref) and a.obj is b.obj
                              and a.key == b.key)
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
    args = [v for a in node.args if (v := _const_int(a)) is not None]
    if node.keywords or not args or len(args) != len(node.args) or len(args) > 3:
        return None
    try:
        return len(range(*args))
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
            sub = replace(use, branches=rest)
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
                label = f"{obj.name}[{key}]" if isinstance(key, int) else (
                    str(key[1]) if isinstance(key, tuple) else str(key))
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
        where = (f"inside the loop at line {loop_uses[0].loops[0].line}, once per iteration "
                 f"({times} in total; {_fmt_lines(lines)}: {consumers})")
        return (
            f"stream '{name}'{_origin(group)} is consumed {where}; a stream can be consumed once "
            "— consume it once outside the loop, or make one Copy per consumer with "
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

