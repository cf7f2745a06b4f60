"""Pull the program (`impl` body) out of a model's free-form answer.

Models wrap code in many ways: a ```yaml block with `impl: |-`, a ```python block with bare
code or a whole `def impl(...)` function, stray prose around it, tabs, a fence cut off by the
token limit. A malformed answer must become a failed sample ("unparsable"), never a crash, so
every path ends in either a body that parses as a Python function body or `Unparsable(reason)`.
"""

from __future__ import annotations

import ast
import re
import textwrap
from typing import Any

import yaml

from stepsmith.limits import MAX_PROGRAM_CHARS, clip, nesting_depth, parse_untrusted

__all__ = ["MAX_ANSWER_CHARS", "Unparsable", "extract_impl"]

_FENCE = re.compile(r"^[ \t]*(```+|~~~+)[ \t]*([\w.+-]*)[^\n]*$", re.MULTILINE)
_IMPL_KEY = re.compile(r"^([ \t]*)impl[ \t]*:[ \t]*(.*)$")
_YAML_KEY = re.compile(r"^[A-Za-z_][\w-]*[ \t]*:([ \t]|$)")
_STEP_IMPORT = re.compile(
    r"^\s*(import\s+step\b.*|from\s+stepsmith(\.\w+)*\s+import\s+step\b.*"
    r"|import\s+stepsmith(\.\w+)*(\s+as\s+step)?\s*)$"
)
_MAX_SCAN_LINES = 120  # bound the prose-trimming search on very long answers
MAX_ANSWER_CHARS = 200_000  # ~50k tokens: far beyond any max_tokens we ask for
_MAX_CANDIDATES = 16  # fenced blocks tried (last first); more is an attack, not an answer
_MAX_YAML_NESTING = 50  # bracket depth above which a block is not read as YAML (recursive parser)
_ANSWER_HINT = (
    "Answer with the program body in one fenced block:\n"
    "```yaml\nimpl: |-\n  <the program body, ending with return>\n```"
)


class Unparsable(ValueError):
    """The answer contains no usable program; `reason` is fed back to the model."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def extract_impl(text: str) -> str:
    """Return the impl body (dedented, no trailing whitespace) found in a model answer.

    Total: any input either gives a body that parses (within `stepsmith.limits`) or raises
    `Unparsable` with a reason; no other exception escapes, so a hostile answer is one failed
    sample and never a crashed run (or a crash replayed from the cache on `--resume`).
    """
    if not isinstance(text, str) or not text.strip():
        raise Unparsable("the answer is empty. " + _ANSWER_HINT)
    if len(text) > MAX_ANSWER_CHARS:
        raise Unparsable(
            f"the answer is {len(text)} characters long; at most {MAX_ANSWER_CHARS} are read. "
            + _ANSWER_HINT
        )
    try:
        return _extract(text)
    except Unparsable:
        raise
    except (RecursionError, MemoryError) as exc:
        raise Unparsable(
            f"the answer is nested too deeply or too large to read ({type(exc).__name__}). "
            + _ANSWER_HINT
        ) from None
    except Exception as exc:  # noqa: BLE001 - extraction must be total; the reason is kept
        raise Unparsable(
            f"the answer could not be read ({type(exc).__name__}: {clip(exc, 200)}). "
            + _ANSWER_HINT
        ) from None


def _extract(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = re.sub(r"<think>.*?(</think>|$)", "", text, flags=re.DOTALL)
    problems: list[str] = []
    for candidate in _candidates(text):
        body = _interpret(candidate, problems)
        if body is not None:
            return body
    detail = f" (last problem: {clip(problems[-1], 300)})" if problems else ""
    raise Unparsable(
        "could not find a program in the answer: no fenced code block or `impl:` field "
        f"contains Python that parses as the body of `def impl(...)`{detail}. " + _ANSWER_HINT
    )


def _candidates(text: str) -> list[str]:
    """Fenced blocks, last first (the final answer usually comes last), then the whole text."""
    blocks: list[str] = []
    fences = list(_FENCE.finditer(text))
    i = 0
    while i < len(fences):
        opening = fences[i]
        close_index = next(
            (
                j
                for j in range(i + 1, len(fences))
                if fences[j].group(1)[0] == opening.group(1)[0]
                and len(fences[j].group(1)) >= len(opening.group(1))
                and not fences[j].group(2)
            ),
            None,
        )
        start = opening.end() + 1
        if close_index is None:  # unclosed fence: the answer was cut off or sloppy
            blocks.append(text[start:])
            break
        blocks.append(text[start : fences[close_index].start()])
        i = close_index + 1
    ordered = [b for b in reversed(blocks) if b.strip()][:_MAX_CANDIDATES]
    ordered.append(_FENCE.sub("", text))
    return ordered


def _interpret(block: str, problems: list[str]) -> str | None:
    """Turn one candidate block into an impl body, or None (recording why) if it is not one."""
    block = block.strip("\n")
    if not block.strip():
        return None
    for variant in _tab_variants(block):
        body = _from_impl_field(variant)
        if body is None:
            body = _from_function(variant)
        if body is None:
            body = _from_bare_code(variant)
        if body is None:
            continue
        body = _unwrap_function(body) or body
        cleaned = _finish(body)
        error = _body_error(cleaned)
        if error is None:
            return cleaned
        problems.append(error)
    return None


def _tab_variants(block: str) -> list[str]:
    """Tabs as the model meant them: try as-is, then expanded to 4 and to 8 columns."""
    if "\t" not in block:
        return [block]
    return [block, block.expandtabs(4), block.expandtabs(8)]


def _indent_of(line: str) -> int:
    expanded = line.expandtabs(4)
    return len(expanded) - len(expanded.lstrip())


def _from_impl_field(block: str) -> str | None:
    """`impl: |-` (or `impl: "..."`) YAML, possibly among other keys or with broken indentation."""
    document = _load_yaml(block)
    if isinstance(document, dict) and isinstance(document.get("impl"), str):
        return document["impl"]
    lines = block.split("\n")
    for index, line in enumerate(lines):
        match = _IMPL_KEY.match(line)
        if match is None:
            continue
        indent, rest = _indent_of(line), match.group(2).strip()
        if rest and not rest.startswith(("|", ">")):
            # inline scalar: impl: "E1 = ...\nreturn E1"
            value = _load_yaml("v: " + rest, default={"v": rest})
            inline = value.get("v") if isinstance(value, dict) else None
            return inline if isinstance(inline, str) else None
        following = lines[index + 1 :]
        first = next((f for f in following if f.strip()), None)
        if first is None:
            return None
        body_lines: list[str] = []
        if _indent_of(first) > indent:  # the normal, indented block scalar
            for f in following:
                if f.strip() and _indent_of(f) <= indent:
                    break
                body_lines.append(f)
        else:  # the model forgot to indent the block: read until the next YAML key
            for f in following:
                if _YAML_KEY.match(f):
                    break
                body_lines.append(f)
        body = textwrap.dedent("\n".join(body_lines))
        return body if body.strip() else None
    return None


def _load_yaml(text: str, default: Any = None) -> Any:
    """`yaml.safe_load` that never raises: deep nesting is refused before the recursive parser
    sees it, and any failure (syntax, recursion, memory) gives `default`."""
    if len(text) > MAX_PROGRAM_CHARS or nesting_depth(text) > _MAX_YAML_NESTING:
        return default
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError, MemoryError, ValueError, TypeError):
        return default


def _parse(source: str) -> ast.Module | None:
    """A bounded parse (`stepsmith.limits`); None when the text is not (safe) Python."""
    try:
        return parse_untrusted(source)
    except SyntaxError:
        return None


def _from_function(block: str) -> str | None:
    """The body of `def impl(...)` (or the only function) when the model wrote a whole function."""
    if "def " not in block:
        return None
    lines = textwrap.dedent(block).split("\n")[:_MAX_SCAN_LINES]
    for start, line in enumerate(lines):
        if not line.lstrip().startswith(("def ", "import ", "from ", "@")):
            continue
        for end in range(len(lines), start, -1):
            body = _unwrap_function("\n".join(lines[start:end]))
            if body is not None:
                return body
    return None


def _unwrap_function(source: str) -> str | None:
    """If `source` is only imports and function definitions, return the chosen function's body."""
    source = textwrap.dedent(source)
    tree = _parse(source)
    if tree is None:
        return None
    top = [n for n in tree.body if not isinstance(n, ast.Import | ast.ImportFrom)]
    functions = [n for n in top if isinstance(n, ast.FunctionDef)]
    others = [
        n
        for n in top
        if not isinstance(n, ast.FunctionDef)
        and not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))
    ]
    if not functions or any(not _is_usage_line(n, functions) for n in others):
        return None
    chosen = next((f for f in functions if f.name == "impl"), None)
    if chosen is None:
        with_step = [f for f in functions if "step." in (ast.get_source_segment(source, f) or "")]
        chosen = (with_step or functions)[-1]
    statements = chosen.body
    if (
        len(statements) > 1
        and isinstance(statements[0], ast.Expr)
        and isinstance(statements[0].value, ast.Constant)
        and isinstance(statements[0].value.value, str)
    ):
        statements = statements[1:]  # a docstring is not part of the program
    lines = source.split("\n")
    first, last = statements[0].lineno, statements[-1].end_lineno or statements[-1].lineno
    return textwrap.dedent("\n".join(lines[first - 1 : last]))


def _is_usage_line(node: ast.stmt, functions: list[ast.FunctionDef]) -> bool:
    """A usage line such as `out = impl(E0, E1)` or `print(...)` after the definition."""
    names = {f.name for f in functions} | {"print"}
    value = node.value if isinstance(node, ast.Expr | ast.Assign) else None
    return (
        isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id in names
    )


def _from_bare_code(block: str) -> str | None:
    """Bare statements, trimming prose lines before and after the code."""
    lines = block.split("\n")[:_MAX_SCAN_LINES]
    code_like = [i for i, line in enumerate(lines) if _maybe_code(line)]
    if not code_like:
        return None
    for start in code_like:
        for end in range(code_like[-1] + 1, start, -1):
            if not lines[end - 1].strip():
                continue
            chunk = textwrap.dedent("\n".join(lines[start:end]))
            if _body_error(chunk) is None and _is_program(chunk):
                return chunk
    return None


def _maybe_code(line: str) -> bool:
    """Cheap filter for lines where a program could start or end (saves parse attempts)."""
    s = line.strip()
    return bool(s) and bool(re.match(r"^(return\b|[A-Za-z_][\w, ()\[\]]*=|step\.|#|\w+\()", s))


def _finish(body: str) -> str:
    """Normalise whitespace and drop `import step` lines the program does not need."""
    lines = [line.rstrip() for line in textwrap.dedent(body).split("\n")]
    lines = [line for line in lines if not _STEP_IMPORT.match(line)]
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return textwrap.dedent("\n".join(lines))


def _body_error(body: str) -> str | None:
    """Why `body` is not a usable function body, or None if it is."""
    if not body.strip():
        return "the code block is empty"
    wrapped = "def impl():\n" + textwrap.indent(body, "    ", lambda _line: True)
    try:
        tree = parse_untrusted(wrapped)
    except SyntaxError as exc:
        if not exc.lineno:
            return clip(exc.msg, 300)
        line = max(exc.lineno - 1, 1)
        return f"syntax error at program line {line}: {clip(exc.msg, 300)}"
    function = tree.body[0]
    assert isinstance(function, ast.FunctionDef)
    meaningful = [
        s
        for s in function.body
        if not (
            isinstance(s, ast.Pass)
            or (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
        )
    ]
    if not meaningful:
        return "the code block contains no statements"
    return None


def _is_program(chunk: str) -> bool:
    """A bare chunk counts as a program only if it does something STeP-like or returns."""
    tree = _parse("def impl():\n" + textwrap.indent(chunk, "    ", lambda _line: True))
    if tree is None:
        return False
    return any(isinstance(n, ast.Return) for n in ast.walk(tree)) or "step." in chunk
