"""YAML reading that keeps line numbers: PyYAML's composed node tree gives every field its line.

``parse_yaml(text, source)`` returns the plain Python document plus a ``Locator`` that maps a
field path (``("fns", 1, "init")``) to its 1-based line; block scalars (``impl: |-``) also know
the line of their first content line so errors inside code can point at the file line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from .errors import TaskFormatError

Path = tuple[str | int, ...]

#: A task file is code written by people (see README, "Trust model"), but a careless or hostile
#: one must still fail with a message, not eat the machine: a 1.3 KB alias bomb expands to
#: billions of values, and 600 nested brackets overflow PyYAML's recursive composer.
MAX_TASK_CHARS = 1_000_000
MAX_YAML_VALUES = 100_000  # values after expanding aliases (real task files have < 1,000)
MAX_YAML_DEPTH = 64


def format_path(path: Path) -> str:
    """Render ``("fns", 1, "init")`` as ``fns[1].init``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


@dataclass
class Locator:
    """Line numbers of every field of one YAML document."""

    source: str
    lines: dict[Path, int] = field(default_factory=dict)
    content_lines: dict[Path, int] = field(default_factory=dict)
    #: a list of strings joined into one snippet (``global: [..., ...]``): file line per line
    joined_lines: dict[Path, list[int]] = field(default_factory=dict)

    def line(self, path: Path) -> int | None:
        """Line of ``path`` or of its closest existing parent (a missing field points at its parent)."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())

    def content_line(self, path: Path) -> int | None:
        """File line of the first line of a string value (the line after ``|-`` for block scalars)."""
        return self.content_lines.get(tuple(path), self.line(path))

    def error(self, path: Path, message: str, *, offset: int | None = None,
              cls: type[TaskFormatError] = TaskFormatError) -> TaskFormatError:
        """Build an error at ``path``; ``offset`` (1-based) is a line inside the field's string value."""
        first = self.content_line(path)
        joined = self.joined_lines.get(tuple(path))
        line: int | None
        if offset is not None and joined and 1 <= offset <= len(joined):
            line = joined[offset - 1]  # a list of strings joined into one snippet
        elif offset is not None and first is not None:
            line = first + offset - 1
        else:
            line = self.line(path)
        return cls(message, source=self.source, line=line, field=format_path(path) or None)


def _walk(node: yaml.Node, path: Path, loc: Locator) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise TaskFormatError(f"duplicate key '{key}' (first defined on line {seen[key]})",
                                      source=loc.source, line=line, field=format_path((*path, key)))
            seen[key] = line
            child = (*path, key)
            loc.lines[child] = line
            _walk(value_node, child, loc)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            child = (*path, i)
            loc.lines[child] = item.start_mark.line + 1
            _walk(item, child, loc)
        if node.value and all(isinstance(item, yaml.ScalarNode) for item in node.value):
            joined: list[int] = []
            for i, item in enumerate(node.value):
                first = loc.content_lines[(*path, i)]
                joined.extend(first + k for k in range(str(item.value).count("\n") + 1))
            loc.joined_lines[path] = joined
    elif isinstance(node, yaml.ScalarNode):
        first = node.start_mark.line + 1
        if node.style in ("|", ">"):
            first += 1  # content starts on the line after the block indicator
        loc.content_lines[path] = first


def check_expansion(node: yaml.Node, source: str, *, max_values: int = MAX_YAML_VALUES,
                    max_depth: int = MAX_YAML_DEPTH) -> int:
    """Number of values the composed tree expands to (aliases counted at every use), checked
    against ``max_values`` and ``max_depth`` without expanding anything (an alias bomb is
    rejected in time linear in the file). Raises ``TaskFormatError``; returns the count."""
    sizes: dict[int, int] = {}
    depths: dict[int, int] = {}
    on_path: set[int] = set()
    # iterative post-order walk over the DAG of distinct nodes: (node, children done?)
    stack: list[tuple[yaml.Node, bool]] = [(node, False)]
    while stack:
        current, expanded = stack.pop()
        key = id(current)
        children = _children(current)
        if not expanded:
            if key in sizes:
                continue
            if key in on_path:
                raise TaskFormatError("the YAML refers to itself (a recursive alias); task files "
                                      "cannot contain cycles", source=source,
                                      line=current.start_mark.line + 1)
            on_path.add(key)
            stack.append((current, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
            continue
        on_path.discard(key)
        sizes[key] = min(1 + sum(sizes[id(c)] for c in children), max_values + 1)
        depths[key] = 1 + max((depths[id(c)] for c in children), default=0)
        line = current.start_mark.line + 1
        if depths[key] > max_depth:
            raise TaskFormatError(f"the YAML is nested more than {max_depth} levels deep",
                                  source=source, line=line)
        if sizes[key] > max_values:
            raise TaskFormatError(f"the YAML expands to more than {max_values} values once its "
                                  "aliases (*name) are substituted (an alias bomb); write the "
                                  "values out or use fewer aliases", source=source, line=line)
    return sizes[id(node)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def parse_yaml(text: str, source: str = "<text>") -> tuple[Any, Locator]:
    """Parse one YAML document; syntax errors become ``TaskFormatError`` with their line.

    Bounded: size, nesting and alias expansion are checked before anything walks or
    constructs the document (``MAX_TASK_CHARS``, ``MAX_YAML_DEPTH``, ``MAX_YAML_VALUES``).
    """
    loc = Locator(source=source)
    if len(text) > MAX_TASK_CHARS:
        raise TaskFormatError(f"the file is {len(text)} characters long; a task file may have "
                              f"at most {MAX_TASK_CHARS}", source=source)
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise TaskFormatError(f"the YAML is nested too deeply to read (more than "
                                  f"{MAX_YAML_DEPTH} levels are refused)", source=source) from None
        if node is None:
            raise TaskFormatError("the file is empty; expected a task mapping with test_name, "
                                  "inputs, fns, outputs and impl", source=source, line=1)
        check_expansion(node, source)
        loc.lines[()] = node.start_mark.line + 1
        _walk(node, (), loc)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        if exc.context_mark is not None and mark is not None and mark is not exc.context_mark \
                and exc.context_mark.line != mark.line:
            problem += f" (the construct started on line {exc.context_mark.line + 1})"
        raise TaskFormatError(f"invalid YAML syntax: {problem}", source=source, line=line) from None
    except yaml.YAMLError as exc:
        raise TaskFormatError(f"invalid YAML: {exc}", source=source) from None
    finally:
        loader.dispose()
    return data, loc
