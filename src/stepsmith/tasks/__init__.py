"""stepsmith.tasks — the structural IR: load, validate and instantiate task YAML files.

Entry points: ``load_task(path_or_text) -> Task`` (reads and validates; runs none of the file's
code); ``task.bindings()`` and ``task.instantiate(b)`` (run ``global`` and the references: task
files are code, so the verifier does this in its sandboxed workers); ``stepsmith.tasks.suite``
for the packaged benchmark and demos. Running a program on a task is
``stepsmith.verify.run_program``. Symbol discovery and binding rules: ``docs/task-format.md``.
"""

from .bindings import DEFAULT_BINDINGS, Binding
from .errors import TaskFormatError, TaskNotFoundError, TaskReferenceError
from .instance import ExpectedOutput, Instance
from .loader import Task, load_task
from .schema import TaskSpec, Tolerance

__all__ = ["DEFAULT_BINDINGS", "Binding", "ExpectedOutput", "Instance", "Task", "TaskFormatError",
           "TaskNotFoundError", "TaskReferenceError", "TaskSpec", "Tolerance", "load_task"]
