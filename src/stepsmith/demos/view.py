"""The task as a model may see it: its structural IR without its name, its answer or our bookkeeping.

The IR is the task file as its author wrote it (comments kept — they often explain the layout)
minus `test_name` (a task is shown without its name), `impl` (the answer) and our extensions
(`group`, `bindings`, `tolerance`). A demonstration stores exactly this text, so it lives here,
below both the prompt composer (`stepsmith.agents`) and the loop that earns demonstrations
(`stepsmith.improve`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from stepsmith.tasks.task import Task

__all__ = ["HIDDEN_FIELDS", "BlockDumper", "dump_yaml", "strip_fields", "task_ir", "task_text"]

HIDDEN_FIELDS = ("test_name", "impl", "group", "bindings", "tolerance")
_TOP_KEY = re.compile(r"^([A-Za-z_][\w-]*)[ \t]*:")


def task_text(task: Task) -> str | None:
    """The task's original YAML text: what the loader kept, else the file it came from."""
    if task.text.strip():
        return task.text
    if task.source_path is not None:
        try:
            return Path(task.source_path).read_text(encoding="utf-8")
        except OSError:
            return None
    return None


def strip_fields(text: str, hidden: tuple[str, ...] = HIDDEN_FIELDS) -> str:
    """Remove top-level keys (and their indented values) from YAML text, keeping everything else."""
    out: list[str] = []
    skipping = False
    for line in text.replace("\r\n", "\n").split("\n"):
        match = _TOP_KEY.match(line)
        if match is not None:
            skipping = match.group(1) in hidden
        elif line.strip() and not line[0].isspace() and not line.startswith(("#", "-")):
            skipping = False
        if not skipping:
            out.append(line.rstrip())
    while out and not out[-1].strip():
        out.pop()
    while out and (not out[0].strip() or out[0].strip() == "---"):
        out.pop(0)
    return "\n".join(out)


def task_ir(task: Task) -> str:
    """The task's structural IR as YAML, without its name, its impl and bookkeeping fields."""
    text = task_text(task)
    if text is not None:
        try:
            parsed = yaml.safe_load(text)
        except yaml.YAMLError:
            parsed = None
        if isinstance(parsed, dict):
            return strip_fields(text)
    document = _spec_document(task)
    return dump_yaml({k: v for k, v in document.items() if k not in HIDDEN_FIELDS})


def _spec_document(task: Task) -> dict[str, Any]:
    """Fallback when no text is available: rebuild the paper's format from the pydantic spec."""
    raw = task.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    for section in ("inputs", "parameters"):
        for entry in raw.get(section) or []:
            gen = entry.get("data_gen")
            if isinstance(gen, dict):
                kind = gen.get("kind")
                entry["data_gen"] = kind
                for key in ("min", "max", "scale"):
                    if gen.get(key) is not None:
                        entry[key] = gen[key]
    ordered: dict[str, Any] = {}
    for key in ("description", "global", "inputs", "parameters", "fns", "outputs"):
        value = raw.get(key)
        if value not in (None, "", []):
            ordered[key] = value
    return ordered


class BlockDumper(yaml.SafeDumper):
    """Dump multi-line strings as `|-` blocks, like the paper's task files."""


def _str_representer(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    if "\n" in data:
        data = "\n".join(line.rstrip() for line in data.split("\n"))
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


def _list_representer(dumper: yaml.SafeDumper, data: list) -> yaml.SequenceNode:
    """Short lists of scalars (dims, dtypes) in flow style: `dims: [N, M]`."""
    flow = all(
        isinstance(x, str | int | float) and len(str(x)) < 40 and not set(str(x)) & set("\n'\"")
        for x in data
    )
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


BlockDumper.add_representer(str, _str_representer)
BlockDumper.add_representer(list, _list_representer)


def dump_yaml(document: dict[str, Any]) -> str:
    """YAML in the task files' style: block strings, flow-style short lists, key order kept."""
    return yaml.dump(
        document, Dumper=BlockDumper, sort_keys=False, allow_unicode=True, width=100
    ).rstrip()
