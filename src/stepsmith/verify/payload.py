"""How a task crosses the process boundary: as its YAML text (+ path), keyed by content hash.

Workers re-load the task from text once and cache it (and its instantiated data) under the hash,
so verifying many candidates for the same task costs one load.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class TaskPayload:
    """A task as picklable text. `key` is the sha256 of `text` (the cache key in workers)."""

    text: str
    path: str | None
    name: str
    key: str


def _text_of(task: Any) -> tuple[str, str | None]:
    """YAML text + path of a `Task`, a path, or YAML text."""
    if isinstance(task, Path) or (isinstance(task, str) and "\n" not in task):
        p = Path(task)
        if p.is_file():
            return p.read_text(encoding="utf-8"), str(p)
        from stepsmith.tasks.suite import get_task  # a benchmark/demo name

        task = get_task(str(task))
    if isinstance(task, str):
        return task, None
    path = getattr(task, "source_path", None)
    for attr in ("source_text", "text", "yaml_text", "raw"):
        text = getattr(task, attr, None)
        if isinstance(text, str) and text.strip():
            return text, str(path) if path else None
    if path and Path(path).is_file():
        return Path(path).read_text(encoding="utf-8"), str(path)
    spec = getattr(task, "spec", None)
    if spec is not None and hasattr(spec, "model_dump"):
        data = spec.model_dump(mode="json", exclude_none=True, by_alias=True)
        return yaml.safe_dump(data, sort_keys=False), str(path) if path else None
    raise TypeError(
        f"verify: cannot turn {type(task).__name__!r} into a task; pass a stepsmith.tasks.Task, "
        "a path to a task YAML file, a benchmark task name, or YAML text"
    )


def task_payload(task: Any) -> TaskPayload:
    """Build the picklable form of `task` (Task object, path, benchmark name or YAML text)."""
    if isinstance(task, TaskPayload):
        return task
    text, path = _text_of(task)
    name = getattr(task, "name", None) if not isinstance(task, str | Path) else None
    if not name:
        try:
            doc = yaml.safe_load(text)
            name = doc.get("test_name", "") if isinstance(doc, dict) else ""
        except yaml.YAMLError:
            name = ""
    key = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return TaskPayload(text=text, path=path, name=str(name or ""), key=key)


_TASKS: dict[str, Any] = {}


def load_payload(payload: TaskPayload) -> Any:
    """The `Task` for a payload, loaded once per process."""
    task = _TASKS.get(payload.key)
    if task is None:
        from stepsmith.tasks import load_task

        task = load_task(payload.text, source=payload.path)  # errors name the file
        if payload.path and getattr(task, "source_path", None) in (None, ""):
            try:
                task.source_path = Path(payload.path)
            except (AttributeError, TypeError, ValueError):
                pass  # frozen/validated model: the path is informational only
        _TASKS[payload.key] = task
    return task
