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


def format_path(path: Path) -> str:
    """Render ``("fns", 1, "init")`` as ``fns[1].init``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


@dataclass
class Locator:
    """Line numbers of every field of one YAML document."""

    source: str
    lines: dict[Path, int] = field(default_factory=dict)
    content_lines: dict[Path, int] = field(default_factory=dict)

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
        line = first + offset - 1 if offset is not None and first is not None else self.line(path)
        return cls(message, source=self.source, line=line, field=format_path(path) or None)


def _walk(node: yaml.Node, path: Path, loc: Locator) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise TaskFormatError(
                    f"duplicate key '{key}' (first defined on line {seen[key]})",
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
    elif isinstance(node, yaml.ScalarNode):
        first = node.start_mark.line + 1
        if node.style in ("|", ">"):
            first += 1  # content starts on the line after the block indicator
        loc.content_lines[path] = first


def parse_yaml(text: str, source: str = "<text>") -> tuple[Any, Locator]:
    """Parse one YAML document; syntax errors become ``TaskFormatError`` with their line."""
    loc = Locator(source=source)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise TaskFormatError("the file is empty; expected a task mapping with test_name, "
                                  "inputs, fns, outputs and impl", source=source, line=1)
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
