"""Search `nearby`: the programs one statement away from a complete answer that failed.

Small models often write the right dataflow with one wrong choice in it: the 1.5B model's
first attempt at attn_scan_divsum zipped the scan's statistics before the scores
(`Zip((E2, E0, E1))` where the fn reads `(s, m, l, v)`) — every field fp32, so the types
cannot tell, and a restart threw the rest of the program away. Here each statement of the
failed program is replaced in turn by another statement the typed space offered at that same
point, and the return by another well-typed return; the simulator judges each. Replacements
with the same output types come first (every later line still types), closest spellings
first; then those with other output types (`Accum(b=2)` for `Accum(b=1)`: the later lines
may still type, and the verifier's static checks refuse them in ~10 ms when they do not). No
model time is spent, only verifier runs, bounded by a count (`MAX_NEARBY`) so a search is
the same on every machine.

The edit is one of the alternatives the decoder itself offered at that line, so the answer is
still a program the model could have written there; the verifier checks it whole, as every
answer.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from .space import ELEM, FNV, Candidate
from .statements import COMP_VARS, INDENT, LineOptions, canonical_rhs

# Neighbours judged per failed complete attempt. A static failure costs the verifier ~10 ms,
# a run 0.03-0.8 s (attn_scan_divsum, 2 cores), so 48 cost seconds where the model's restart
# costs a minute.
MAX_NEARBY = 48
# Part of the cache identity: bump when the neighbours offered change. 1: same output types
# only; 2: then the others.
NEARBY_VERSION = 2


@dataclass(frozen=True)
class Neighbour:
    """A program one statement away: its lines, and what was changed (for the trace)."""

    body: str
    edit: str
    closeness: float
    same_types: bool  # every later line still types


def _types(c: Candidate) -> tuple[object, ...]:
    return (c.is_list, c.fn_list is not None and len(c.fn_list),
            tuple((repr(t.dtype), repr(t.shape)) for t in c.outs))


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


def _alternatives(opts: LineOptions, line: str) -> Iterator[tuple[str, float, bool]]:
    """Other lines offered in place of `line`: each with how close it is to it (difflib ratio
    of the right-hand sides) and whether its outputs have the same types."""
    text = line.strip()
    if text.startswith("return "):
        old = text[len("return "):].strip()
        for alt in opts.returns:
            if alt != old:
                yield (f"{INDENT}return {alt}\n",
                       difflib.SequenceMatcher(None, old, alt).ratio(), True)
        return
    lhs, _, rhs = text.partition(" = ")
    try:
        key = canonical_rhs(rhs.strip())
    except Exception:  # noqa: BLE001 - a line the cursor accepted; skip it if it does not parse
        return
    arity = len(lhs.split(","))
    pools = [opts.assignments.get(arity, {})]
    if arity == 1:
        pools.append(opts.assignments.get(0, {}))
    orig = next((p[key] for p in pools if key in p), None)
    if orig is None:
        return
    want = _types(orig)
    for pool in pools:
        for alt, cand in pool.items():
            if alt == key or _kind(cand) != _kind(orig):
                continue
            spelled = _spelled(alt, rhs, opts.taken)
            yield (f"{INDENT}{lhs} = {spelled}\n",
                   difflib.SequenceMatcher(None, key, alt).ratio(), _types(cand) == want)


def _kind(c: Candidate) -> tuple[bool, bool]:
    """What a name bound to `c` is: a list of streams, a list of fns, or stream(s)."""
    return c.is_list, c.fn_list is not None


def neighbours(trail: Sequence[tuple[LineOptions, str]],
               limit: int = MAX_NEARBY) -> list[Neighbour]:
    """The programs that differ from `trail`'s lines (each with the options offered before
    it) in one line, at most `limit`: same output types first, then closest spellings, then
    the earlier line."""
    lines = [line for _, line in trail]
    found: list[tuple[bool, float, int, str, str]] = []
    for i, (opts, line) in enumerate(trail):
        for new, closeness, same in _alternatives(opts, line):
            found.append((not same, -closeness, i, new, line))
    found.sort(key=lambda x: x[:3])
    out: list[Neighbour] = []
    seen: set[str] = set()
    for other, negative, i, new, old in found:
        body = "".join(lines[:i]) + new + "".join(lines[i + 1:])
        if body in seen:
            continue
        seen.add(body)
        out.append(Neighbour(body, f"line {i + 1}: {old.strip()!r} -> {new.strip()!r}",
                             -negative, not other))
        if len(out) >= limit:
            break
    return out
