"""What a backend needs to constrain an answer, without knowing the language.

`Constraint` is passed with a request (`LLMClient.sample(..., constraint=c)`). Its `mode` and
`identity` are part of the call-cache key, so an answer decoded under one constraint is never
replayed for another. Backends use what they can:
- a local model decodes under `lines()` (mode "typed": every line is one well-typed statement,
  advanced by the typing environment) or under the whole-answer `grammar()` (mode "grammar");
- an OpenAI-compatible server receives `grammar()` in the request field its engine understands.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

CONSTRAIN_MODES = ("none", "grammar", "typed")
SERVER_KINDS = ("vllm", "sglang", "llamacpp")


class LineRejected(Exception):
    """A line matched its pattern but is not legal in context (the decoder resamples it)."""


class LineCursor(Protocol):
    """Where a line-by-line decoding stands: what the next line may be, and what follows."""

    def pattern(self) -> str | None:
        """A regex (Rust `regex` syntax) for the whole next line, newline included; None when
        nothing may follow (the program is complete, or the branch is a dead end)."""
        ...

    @property
    def complete(self) -> bool:
        """The answer is finished (its closing text is `Constraint.suffix`)."""
        ...

    def feed(self, line: str) -> LineCursor:
        """The cursor after `line`; raises `LineRejected` with a reason."""
        ...

    def ban(self, line: str, *, dead_end: bool = False) -> LineCursor:
        """The same position without `line` among the options. `dead_end`: nothing could
        follow `line` (the decoder backed up from it), so the cursor may look further ahead."""
        ...

    def shortcut(self) -> str | None:
        """A final line that completes the answer here and is known to be right (a judge
        verified it), or None: the decoder then writes it instead of sampling on."""
        ...


class Constraint(Protocol):
    """A constraint on one answer (see the module docstring)."""

    # read-only members (a frozen dataclass or a property satisfies them)
    @property
    def mode(self) -> str:
        """"grammar" or "typed"."""
        ...

    @property
    def identity(self) -> str:
        """Stable text identifying the constraint (part of the cache key)."""
        ...

    @property
    def prefix(self) -> str:
        """Text the answer starts with (decoded as forced text)."""
        ...

    @property
    def suffix(self) -> str:
        """Text appended after the last line."""
        ...

    def grammar(self) -> str:
        """A GBNF grammar of the whole answer (prefix included)."""
        ...

    def lark(self) -> str:
        """The same grammar in llguidance's Lark dialect (local `grammar` decoding)."""
        ...

    def lines(self, attempt: int = 0) -> LineCursor | None:
        """A cursor at the first line of attempt `attempt` (mode "typed"), or None when the
        constraint makes no such attempt. Attempt 0 always exists; later ones are restarts
        from the prompt's end (search `deepen`: growing statement budgets)."""
        ...

    def answer(self, body: str, complete: bool) -> str:
        """The answer handed on for the decoded lines `body`: prefix, lines, and the suffix
        when complete (a typed constraint may make what the lines imply explicit, e.g. the
        `Copy` of a stream they use twice)."""
        ...

    def verified(self, answer: str) -> bool:
        """Whether a complete answer is known to be right (a judge ran it); False when the
        constraint has no judge. The decoder asks before it spends tokens on a restart."""
        ...

    def repaired(self, trail: Sequence[tuple[LineCursor, str]]) -> tuple[str, str, int] | None:
        """An answer near a complete attempt that failed — its lines `trail`, each with the
        cursor it was written at — that a judge verified, as (answer, what was changed, how
        many candidates were judged); None when the constraint searches no such thing."""
        ...
