"""Typed STeP errors. Their messages are fed back to LLM agents, so each names the primitive,
the stream(s), what was expected and what was found (and, where useful, a hint)."""

from __future__ import annotations

from stepsmith.limits import clip


class StepError(Exception):
    """Base of every STeP language error."""

    def __init__(self, message: str, *, primitive: str | None = None, stream: str | None = None,
                 expected: str | None = None, found: str | None = None,
                 hint: str | None = None) -> None:
        self.primitive = primitive
        self.stream = stream
        self.expected = expected
        self.found = found
        self.hint = hint
        self.detail = message
        # messages carry program-controlled values (`b='x'*10**8`): bounded, see stepsmith.limits
        super().__init__(clip(self._compose()))

    def _compose(self) -> str:
        head = ""
        if self.primitive and self.stream:
            head = f"{self.primitive} on stream {self.stream}: "
        elif self.primitive:
            head = f"{self.primitive}: "
        elif self.stream:
            head = f"stream {self.stream}: "
        text = head + self.detail
        if self.expected is not None and self.found is not None and "expected" not in self.detail:
            text += f" (expected {self.expected}, found {self.found})"
        if self.hint:
            text += f". Hint: {self.hint}"
        return text


class StepRankError(StepError):
    """A rank bound of a primitive is violated (e.g. Accum b > rank)."""


class StepShapeError(StepError):
    """Shapes do not match or a dimension cannot be divided/evaluated."""


class StepDtypeError(StepError):
    """An element type differs from the one required (fn input type, Multihot selector...)."""


class StepFnKindError(StepError):
    """A stateful fn where a stateless one is needed, or the reverse."""


class StepArgumentError(StepError):
    """A primitive was called with missing/invalid parameters or a wrong argument structure."""


class StepAffineError(StepError):
    """A stream was consumed a second time (the affine, consume-once rule)."""


class StepRuntimeError(StepError):
    """A specialized function's body failed (or returned a malformed value) while running."""
