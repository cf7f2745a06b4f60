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

from stepsmith.step.affine.check import AffineViolation, check_source, infer_inputs
from stepsmith.step.affine.repair import repair
from stepsmith.step.affine.source import AffineParseError, ParsedProgram, parse_program

__all__ = [
    "AffineParseError",
    "AffineViolation",
    "ParsedProgram",
    "check_source",
    "infer_inputs",
    "parse_program",
    "repair",
]
