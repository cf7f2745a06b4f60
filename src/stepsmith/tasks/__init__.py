"""stepsmith.tasks — the structural IR: load, validate and instantiate task YAML files.

Entry points: ``load_task(path_or_text) -> Task``; ``task.bindings()``; ``task.instantiate(b)``;
``stepsmith.tasks.suite`` for the packaged benchmark and demos; ``run_program`` /
``check_reference`` for in-process runs. Symbol discovery and binding rules are documented in
``stepsmith.tasks.bindings``.
"""

from .bindings import DEFAULT_BINDINGS, Binding
from .errors import TaskFormatError, TaskNotFoundError, TaskReferenceError
from .instance import ExpectedOutput, Instance
from .loader import Task, load_task
from .run import ReferenceCheck, check_reference, compare_outputs, run_program
from .schema import TaskSpec, Tolerance

__all__ = [
    "DEFAULT_BINDINGS",
    "Binding",
    "ExpectedOutput",
    "Instance",
    "ReferenceCheck",
    "Task",
    "TaskFormatError",
    "TaskNotFoundError",
    "TaskReferenceError",
    "TaskSpec",
    "Tolerance",
    "check_reference",
    "compare_outputs",
    "load_task",
    "run_program",
]
