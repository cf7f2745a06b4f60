"""Search `nearby`: the programs one statement away from a complete answer that failed.

Small models often write the right dataflow with one wrong choice in it: the 1.5B model's
first attempt at attn_scan_divsum zipped the scan's statistics before the scores
(`Zip((E2, E0, E1))` where the fn reads `(s, m, l, v)`) — every field fp32, so the types
cannot tell, and a restart threw the rest of the program away. Here lines of the failed
program are replaced by others the typed space offered at that same point, and the simulator
judges each result:

1. replacements with the same output types, and other well-typed returns: every later line
   still types as written;
2. replacements with other output types of a line only the return reads (`Repeat(n=D)` of
   the rms where the model divided by it early), each followed by every return well typed
   after it; the states are rebuilt with `bind` from the candidates the cursors typed. The
   1.5B model's rmsnorm answers were this far from right.

Tiny edits of tier 1 go first, then tier 2 naming the model's own calls, then the rest. No
model time is spent, only verifier runs and typing, both bounded by counts (`MAX_NEARBY`
judged programs, `REWIRED_STATES` tier-2 states) so a search is the same on every machine.
Every replacement is a line the decoder offered at that point, so the answer is a program the
model could have written; the verifier checks it whole, as every answer.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .space import ELEM, FNV, IDENT, Candidate
from .statements import COMP_VARS, INDENT, LineOptions, canonical_rhs

if TYPE_CHECKING:
    from .constraint import TypedCursor

# Neighbours judged per failed complete attempt. A static failure costs the verifier ~10 ms,
# a run 0.03-0.8 s (attn_scan_divsum, 2 cores), so 48 cost seconds where the model's restart
# costs a minute.
MAX_NEARBY = 48
# Tier-2 replacements whose returns are listed, per failed attempt (a count: the same search
# on every machine).
REWIRED_STATES = 32
# A same-typed edit spelled at least this close to the line is judged before the model's calls
# rewired (an argument order, a parameter value).
TINY = 0.9
# Part of the cache identity: bump when the neighbours offered change. 1: same output types
# only; 2: then the others, unchecked; 3: the others re-typed, with any return; 4: at most
# REWIRED_STATES of those.
NEARBY_VERSION = 4


@dataclass(frozen=True)
class Neighbour:
    """A program one statement away: its lines, and what was changed (for the trace)."""

    body: str
    edit: str
    closeness: float
    same_types: bool  # every later line types as written


def _types(c: Candidate) -> tuple[object, ...]:
    return (c.is_list, c.fn_list is not None and len(c.fn_list),
            tuple((repr(t.dtype), repr(t.shape)) for t in c.outs))


def _kind(c: Candidate) -> tuple[bool, bool]:
    """What a name bound to `c` is: a list of streams, a list of fns, or stream(s)."""
    return c.is_list, c.fn_list is not None


def _spelled(text: str, line: str, taken: frozenset[str]) -> str:
    """A candidate text with its loop-variable placeholders given names: the original line's
    loop variables where it had them, else fresh ones."""
    m = COMP_VARS.search(line) if "[" in line else None
    fvar = m.group(1) if m and m.group(1) else _fresh("f", taken)
    evar = m.group(2) if m else _fresh("e", taken | {fvar})
    return text.replace(FNV, fvar).replace(ELEM, evar)


def _fresh(base: str, taken: frozenset[str]) -> str:
    name, i = base, 0
    while name in taken:
        i += 1
        name = f"{base}{i}"
    return name


def _close(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b).ratio()


def _alternatives(opts: LineOptions, line: str
                  ) -> Iterator[tuple[str, float, bool, Candidate | None]]:
    """Other lines offered in place of `line`: each with how close it is to it (difflib ratio
    of the right-hand sides), whether its outputs have the same types, and its candidate
    (None for a return)."""
    text = line.strip()
    if text.startswith("return "):
        old = text[len("return "):].strip()
        for alt in opts.returns:
            if alt != old:
                yield f"{INDENT}return {alt}\n", _close(old, alt), True, None
        return
    lhs, _, rhs = text.partition(" = ")
    orig = _candidate(opts, line)
    if orig is None:
        return
    want = _types(orig)
    arity = len(_names(line))
    for pool in (opts.assignments.get(arity, {}), opts.assignments.get(0, {}) if arity == 1
                 else {}):
        for alt, cand in pool.items():
            if alt == orig.text or _kind(cand) != _kind(orig):
                continue
            spelled = _spelled(alt, rhs, opts.taken)
            yield (f"{INDENT}{lhs} = {spelled}\n", _close(orig.text, alt),
                   _types(cand) == want, cand)


def _candidate(opts: LineOptions, line: str) -> Candidate | None:
    """The candidate an assignment line was accepted as."""
    try:
        key = canonical_rhs(line.strip().partition(" = ")[2].strip())
    except Exception:  # noqa: BLE001 - a line the cursor accepted; skip it if it does not parse
        return None
    return opts.candidate(len(_names(line)), key)


def _names(line: str) -> list[str]:
    return [n.strip() for n in line.strip().partition(" = ")[0].split(",")]


def _calls(text: str) -> list[str]:
    """The calls and fns a piece of program names, in a canonical order (what it computes,
    whatever the streams are called)."""
    return sorted(CALL.findall(text))


CALL = re.compile(r"step\.\w+\([^)]*\)|\bfn_\w+")


def neighbours(trail: Sequence[tuple[TypedCursor, str]], limit: int = MAX_NEARBY
               ) -> list[Neighbour]:
    """The programs one line away from `trail` (each line with the cursor it was written
    at), at most `limit`, in the order they are judged: tiny edits of one line (same output
    types, spelled within 10 % of it: an argument order, a parameter), then the model's own
    calls rewired (tier 2 with the same calls), then the other same-typed edits, closest
    first, then the rest of tier 2."""
    lines = [line for _, line in trail]
    ranked: list[tuple[tuple[int, float, float], Neighbour]] = []
    for i, (cursor, line) in enumerate(trail):
        for new, closeness, alike, _ in _alternatives(cursor.options(), line):
            if alike:
                body = "".join(lines[:i]) + new + "".join(lines[i + 1:])
                edit = f"line {i + 1}: {line.strip()!r} -> {new.strip()!r}"
                ranked.append(((0 if closeness >= TINY else 2, -closeness, 0.0),
                               Neighbour(body, edit, closeness, True)))
    for calls, closeness, i, new, body in _rewired(trail):
        edit = (f"line {i + 1}: {lines[i].strip()!r} -> {new.strip()!r}, "
                f"{lines[-1].strip()!r} -> {body.splitlines()[-1].strip()!r}")
        ranked.append(((1 if calls == 1.0 else 3, -calls, -closeness),
                       Neighbour(body, edit, closeness, False)))
    ranked.sort(key=lambda x: x[0])
    out: list[Neighbour] = []
    seen: set[str] = set()
    for _, nb in ranked:
        if nb.body not in seen:
            seen.add(nb.body)
            out.append(nb)
            if len(out) >= limit:
                break
    return out


def _rewired(trail: Sequence[tuple[TypedCursor, str]]
             ) -> Iterator[tuple[float, float, int, str, str]]:
    """Tier 2: a line whose outputs only the return reads, replaced by one with other output
    types, and the return replaced by each one well typed after it; scored by how alike the
    two lines compute to the model's two (the same calls rewired first), then by closeness.
    The states are built with `bind` from the candidates the cursors already typed, so no
    line is typed again. Listing a state's returns can cost 0.1 s (rope's 4-stream calls), so
    returns are listed after at most `REWIRED_STATES` replacements: those naming only calls the
    model's two lines name (they can be the same calls rewired), then the closest others."""
    if len(trail) < 2 or not trail[-1][1].strip().startswith("return "):
        return
    lines = [line for _, line in trail]
    old_ret = lines[-1].strip()[len("return "):]
    cands = [_candidate(c.options(), line) for c, line in trail[:-1]]
    edits: list[tuple[bool, float, int, str, Candidate, list[str]]] = []
    for i, (cursor, line) in enumerate(trail[:-1]):
        names = set(_names(line))
        if any(names & set(IDENT.findall(later)) for later in lines[i + 1:-1]):
            continue
        before = _calls(line.partition(" = ")[2] + " " + old_ret)
        for new, closeness, alike, cand in _alternatives(cursor.options(), line):
            if not alike and cand is not None:
                within = not Counter(_calls(cand.text)) - Counter(before)
                edits.append((not within, -closeness, i, new, cand, before))
    edits.sort(key=lambda e: e[:3])
    for _, negative, i, new, cand, before in edits[:REWIRED_STATES]:
        cursor, line = trail[i]
        state = cursor.state.bind(_names(line), cand)
        for j in range(i + 1, len(trail) - 1):
            cj = cands[j]
            if cj is None:
                break
            state = state.bind(_names(lines[j]), cj)
        else:
            for ret in state.returns():
                after = _calls(cand.text + " " + ret.text)
                alike_calls = difflib.SequenceMatcher(None, before, after).ratio()
                yield (alike_calls, -negative, i, new,
                       "".join(lines[:i]) + new + "".join(lines[i + 1:-1])
                       + f"{INDENT}return {ret.text}\n")
