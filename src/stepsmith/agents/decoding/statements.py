"""Statement-level constraint: the pattern of every well-typed next line, and advancing the
typing environment by the line the model wrote.

A program is decoded as the answer prefix (```` ```yaml\\nimpl: |-\\n ````) followed by lines
`  <statement>\\n`, the last being `  return ...\\n`, then the closing fence. Each line is
constrained by one regular expression, the union of every well-typed statement from the
current `ProgramState` (`names = rhs` for every arity and right-hand side, or a return). The
regex cannot check that new names are fresh or that comprehension loop variables are used
consistently; `advance` does, and rejects the line (the decoder then resamples it).
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass

from .space import ELEM, FNV, Candidate, ProgramState

PREFIX = "```yaml\nimpl: |-\n"
SUFFIX = "```"
INDENT = "  "
# New names are at most this long (the longest identifier of any reference program is 21
# characters); unbounded, a small model can spend its whole token budget on one name.
MAX_NAME = 24
NAME_RE = rf"[A-Za-z_][A-Za-z0-9_]{{0,{MAX_NAME - 1}}}"
COMP_VARS = re.compile(r" for (?:([A-Za-z_]\w*), )?([A-Za-z_]\w*) in ")


_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_0123456789"


# No new name may start with these: a model that writes `return` where no return is well
# typed yet was bent into names like `returnE11` (run 20261130-224254-26a7).
NO_NAME_PREFIX = ("return",)


def fresh_name_re(taken: set[str]) -> str:
    """A regex for identifiers of at most MAX_NAME characters that are not in `taken` (nor
    Python keywords, nor starting with NO_NAME_PREFIX), built from the trie of the taken
    words: the decoder cannot even start writing a name already in use."""
    words = {w for w in taken | set(keyword.kwlist) if w.isidentifier()}
    trie: dict = {}
    for w in words:
        node = trie
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = {}
    for w in NO_NAME_PREFIX:
        node = trie
        for ch in w[:-1]:
            node = node.setdefault(ch, {})
        node[w[-1]] = None  # this character may not come here

    def rest(node: dict, depth: int) -> str | None:
        # `depth` characters are written; at most MAX_NAME in all. None: nothing may follow
        # (a full-length taken name is a dead end, never a door to other characters).
        chars = _ID_CHARS[:53] if depth == 0 else _ID_CHARS
        alts = [] if (depth == 0 or "" in node) else [""]
        others = "".join(c for c in chars if c not in node)
        if others and depth < MAX_NAME:
            alts.append(f"[{others}][A-Za-z0-9_]{{0,{MAX_NAME - depth - 1}}}")
        for ch, child in sorted(node.items()):
            if ch and child is not None and depth < MAX_NAME:
                sub = rest(child, depth + 1)
                if sub is not None:
                    alts.append(re.escape(ch) + sub)
        return "(?:" + "|".join(alts) + ")" if alts else None

    root = rest(trie, 0)
    if root is None:  # every identifier is taken: cannot happen with 53 first characters
        raise ValueError("no fresh identifier is left")
    return root


def _rx(text: str) -> str:
    """A candidate text as a regex: literal, with loop-variable placeholders as identifiers
    (checked for freshness after the line, by `advance`)."""
    out = re.escape(text)
    for ph in (re.escape(ELEM), re.escape(FNV)):
        out = out.replace(ph, NAME_RE)
    return out


@dataclass(frozen=True)
class LineOptions:
    """What the next line may be: right-hand sides by left-hand arity, and returns."""

    assignments: dict[int, dict[str, Candidate]]
    returns: dict[str, Candidate]
    taken: frozenset[str] = frozenset()  # names a new binding may not use

    @classmethod
    def of(cls, state: ProgramState) -> LineOptions:
        by = {k: {c.text: c for c in cs} for k, cs in state.assignments().items()}
        rets = {c.text: c for c in state.returns()}
        return cls(by, rets, frozenset(state.bound()))

    @property
    def empty(self) -> bool:
        return not self.returns and not any(self.assignments.values())

    def candidate(self, names: int, rhs: str) -> Candidate | None:
        """The offered right-hand side `rhs` (canonical text) for `names` names on the left:
        one name may also bind a list."""
        cand = self.assignments.get(names, {}).get(rhs)
        if cand is None and names == 1:
            cand = self.assignments.get(0, {}).get(rhs)
        return cand

    def count(self) -> int:
        return len(self.returns) + sum(len(v) for v in self.assignments.values())

    def pattern(self) -> str:
        """One regex for the whole line, indentation and newline included."""
        alts = []
        fresh = fresh_name_re(set(self.taken))
        if self.returns:
            alts.append("return " + _union(self.returns))
        for arity, cands in sorted(self.assignments.items()):
            if not cands:
                continue
            lhs = fresh if arity <= 1 else ", ?".join([fresh] * arity)
            alts.append(f"{lhs} = " + _union(cands))
        return INDENT + "(?:" + "|".join(alts) + ")\n"


def _union(cands: dict[str, Candidate]) -> str:
    return "(?:" + "|".join(sorted({_rx(t) for t in cands})) + ")"


class Rejected(Exception):
    """The line matched the pattern but is not a legal statement (reason in the message)."""


def canonical_rhs(rhs: str) -> str:
    """The candidate text of a right-hand side: comprehension loop variables replaced by the
    placeholders, after checking each is used consistently."""
    if not rhs.startswith("["):
        return rhs
    m = COMP_VARS.search(rhs)
    if m is None:
        return rhs
    fvar, evar = m.group(1), m.group(2)
    names = [v for v in (fvar, evar) if v is not None]
    if len(set(names)) != len(names):
        raise Rejected(f"comprehension loop variables repeat: {', '.join(names)}")
    out = rhs
    for var, ph in ((fvar, FNV), (evar, ELEM)):
        if var is None:
            continue
        out = re.sub(rf"(?<![\w.]){re.escape(var)}(?!\w)", ph, out)
    return out


def advance(state: ProgramState, options: LineOptions, line: str) -> ProgramState:
    """The state after `line` (one statement, with or without indentation/newline)."""
    text = line.strip()
    if text.startswith("return "):
        cand = options.returns.get(text[len("return "):].strip())
        if cand is None:
            raise Rejected(f"not a well-typed return: {text!r}")
        return state.finish(cand)
    lhs, sep, rhs = text.partition(" = ")
    if not sep:
        raise Rejected(f"not an assignment: {text!r}")
    names = [n.strip() for n in lhs.split(",")]
    key = canonical_rhs(rhs.strip())
    arity = len(names)
    cand = options.candidate(arity, key)
    if cand is None:
        raise Rejected(f"not a well-typed statement for {arity} name(s): {text!r}")
    fresh: set[str] = set()
    for n in names:
        if not state.name_ok(n) or n in fresh:
            raise Rejected(f"name {n!r} is already bound or reserved; use a new name")
        fresh.add(n)
    m = COMP_VARS.search(rhs) if rhs.startswith("[") else None
    if m is not None:
        for v in (m.group(1), m.group(2)):
            if v is not None and (v in state.bound() or v in fresh):
                raise Rejected(f"loop variable {v!r} shadows a bound name")
    return state.bind(names, cand)


def program_lines(impl: str) -> list[str]:
    """The statements of a program body (blank lines and comments dropped)."""
    return [ln.strip() for ln in impl.splitlines() if ln.strip() and not ln.strip().startswith("#")]
