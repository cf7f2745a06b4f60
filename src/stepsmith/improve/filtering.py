"""σ — pick one demonstration per newly solved task (method.md §3).

Correct answers are grouped by AST isomorphism with the program's own variable names normalised
(names the program binds become ``v0, v1, ...`` in order of first appearance; free names — input
streams, fns, size symbols, ``step`` — keep their identity because they carry meaning), one
representative is taken per class, and the representative with the fewest lines of pure code
(comments and blank lines removed) wins. The canonical form is `stepsmith.demos.identity`'s, the
leakage guard's, so a demonstration that survives σ never trips the prompt composer's guard.
"""

from __future__ import annotations

import io
import tokenize
from collections.abc import Sequence
from dataclasses import dataclass

from stepsmith.demos.identity import canonical_form

_NON_CODE_TOKENS = {
    tokenize.COMMENT,
    tokenize.NL,
    tokenize.NEWLINE,
    tokenize.INDENT,
    tokenize.DEDENT,
    tokenize.ENCODING,
    tokenize.ENDMARKER,
}


def pure_code_lines(impl: str) -> int:
    """Lines that carry code: comments, blank lines and bare string statements do not count."""
    lines: set[int] = set()
    try:
        for tok in tokenize.generate_tokens(io.StringIO(impl).readline):
            if tok.type in _NON_CODE_TOKENS:
                continue
            if tok.type == tokenize.STRING and _is_docstring_line(impl, tok):
                continue
            lines.update(range(tok.start[0], tok.end[0] + 1))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return sum(
            1 for ln in impl.splitlines() if ln.strip() and not ln.strip().startswith("#")
        )
    return len(lines)


def _is_docstring_line(src: str, tok: tokenize.TokenInfo) -> bool:
    """A string token that is the whole statement on its line(s) (a comment in disguise)."""
    lines = src.splitlines()
    first = lines[tok.start[0] - 1][: tok.start[1]].strip()
    last = lines[tok.end[0] - 1][tok.end[1] :].strip()
    return first == "" and (last == "" or last.startswith("#"))


@dataclass(frozen=True)
class Representative:
    """The chosen answer of one task and how many isomorphism classes it was chosen among."""

    impl: str
    index: int  # position in the input list (provenance: which sample)
    lines: int
    classes: int
    class_size: int


def select_representative(answers: Sequence[str]) -> Representative:
    """σ for one task: one representative per isomorphism class, fewest pure-code lines wins.

    Ties break towards the larger class (the answer the model converges on), then towards the
    earliest sample, so the choice is deterministic and reproducible on resume.
    """
    if not answers:
        raise ValueError("select_representative: a solved task must have at least one correct answer")
    classes: dict[str, list[int]] = {}
    for i, impl in enumerate(answers):
        classes.setdefault(canonical_form(impl), []).append(i)
    candidates = []
    for members in classes.values():
        rep = min(members, key=lambda i: (pure_code_lines(answers[i]), i))
        candidates.append((pure_code_lines(answers[rep]), -len(members), rep, len(members)))
    lines, _, index, size = min(candidates)
    return Representative(
        impl=answers[index], index=index, lines=lines, classes=len(classes), class_size=size
    )
