"""stepsmith.demos — demonstrations and program identity, below `agents` and `improve`.

One home for what both the prompt composer and the self-improvement loop must agree on:
`canonical_form` / `isomorphic` (when two programs are the same), `task_ir` (what of a task a
model may see), `Demonstration` / `DemoRecord`, the leakage rule (`leaks`, `visible_demos`) and
library files (`export_library`, `load_library`).
"""

from stepsmith.demos.identity import canonical_form, isomorphic, normalized_dump
from stepsmith.demos.library import (
    LIBRARY_FORMAT,
    DemoLibraryError,
    export_library,
    load_library,
)
from stepsmith.demos.records import Demonstration, DemoRecord, leaks, visible_demos
from stepsmith.demos.view import task_ir

__all__ = [
    "LIBRARY_FORMAT",
    "DemoLibraryError",
    "DemoRecord",
    "Demonstration",
    "canonical_form",
    "export_library",
    "isomorphic",
    "leaks",
    "load_library",
    "normalized_dump",
    "task_ir",
    "visible_demos",
]
