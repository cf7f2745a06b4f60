"""How a task crosses the process boundary: its file text (+ path), keyed by content hash.

Workers re-load the task from its text once and cache it (and its instantiated data) under the
hash, so verifying many candidates for the same task costs one load. The text is the file the
`Task` was loaded from (`Task.text`), so the worker's errors name the same file and lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stepsmith.tasks import Task, load_task
from stepsmith.verify.execute import task_key


@dataclass(frozen=True)
class TaskPayload:
    """A task as picklable text. `key` is the sha256 of `text` (the cache key in workers)."""

    text: str
    path: str | None
    name: str
    key: str

    @classmethod
    def of(cls, task: Task) -> TaskPayload:
        """The payload of a loaded task (names and paths are resolved by the caller, once)."""
        path = str(task.source_path) if task.source_path else None
        return cls(text=task.text, path=path, name=task.name, key=task_key(task))


_TASKS: dict[str, Task] = {}


def load_payload(payload: TaskPayload) -> Task:
    """The `Task` for a payload, loaded once per process (loading runs none of its code)."""
    task = _TASKS.get(payload.key)
    if task is None:
        task = load_task(payload.text, source=payload.path)  # errors name the file
        if payload.path:
            task.source_path = Path(payload.path)  # the group falls back to the file's folder
        _TASKS[payload.key] = task
    return task
