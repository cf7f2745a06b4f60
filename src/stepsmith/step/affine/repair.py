"""Deterministic `Copy` repair: chained copies so every stream is consumed at most once.

Edits are line-wise text edits; clean programs come back byte-identical and the pass is
idempotent (see `stepsmith.step.affine` for what is and is not repaired).
"""

from __future__ import annotations

import ast
import itertools
import re
from dataclasses import dataclass

from stepsmith.step.affine.check import (
    _NON_STREAM_NAMES,
    _analyze,
    _Analyzer,
    _const_int,
    _Group,
    _Use,
    _violating_groups,
    check_source,
)
from stepsmith.step.affine.source import AffineParseError, char_col, split_lines

__all__ = ["repair"]


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
        self.lines = split_lines(src)
        self.an = analyzer
        self.taken = {n.id for s in analyzer.root for n in ast.walk(s) if isinstance(n, ast.Name)}
        self.taken |= {a.arg for s in analyzer.root for a in ast.walk(s) if isinstance(a, ast.arg)}
        self.taken |= set(analyzer.params or [])

    def fresh(self, base: str) -> str:
        # `x_` + `_a` would be `x__a`, and the allow-list refuses double-underscore names
        base = re.sub(r"_{2,}", "_", base)
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
        plain_stream = obj.kind in ("input", "single", "iter", "unknown")
        if not plain_stream and not isinstance(group.key, int):
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
            span = self._text_span(node)
            if span is None or use.scope is None or not _within(node, use.scope):
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
            row, start, end = span
            if group.key is None and self.lines[row][start:end] != obj.name:
                return None
            spans.append(span)
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
        target, iterable = self._text_span(lp.target), self._text_span(lp.iter)
        if target is None or iterable is None:
            return None
        return _LoopSlot(use.factor, target, iterable, lp.id, isinstance(lp.target, ast.Name))

    def _text_span(self, node: ast.expr) -> tuple[int, int, int] | None:
        """(line index, start char, end char) of a node on one line of the text, else None."""
        row = node.lineno - 1
        if node.end_lineno != node.lineno or row >= len(self.lines):
            return None
        line = self.lines[row]
        return row, char_col(line, node.col_offset), char_col(line, node.end_col_offset or 0)

    def _insertion(self, anchor: tuple[tuple[int, int], ...], paths: list[tuple],
                   uses: list[_Use]) -> tuple[int, str] | None:
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
            if isinstance(owner, ast.stmt) and first.lineno <= owner.lineno:
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


def _span(node: ast.AST) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """(start, end) of a node that has a position in the source (expressions, statements)."""
    if not isinstance(node, ast.expr | ast.stmt):
        return None
    end = (node.end_lineno or node.lineno, node.end_col_offset or node.col_offset)
    return (node.lineno, node.col_offset), end


def _within(node: ast.AST, outer: ast.AST) -> bool:
    inner, around = _span(node), _span(outer)
    if inner is None or around is None:
        return False
    return around[0] <= inner[0] and inner[1] <= around[1]


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
        joined = ", ".join(var for var, _ in adds)
        if slot.target_is_name:
            edits.append((tr, te, te, f", {joined}"))
        else:
            edits += [(tr, ts, ts, "("), (tr, te, te, f"), {joined}")]
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
