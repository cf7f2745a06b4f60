"""stepsmith.improve — adaptive self-improvement (Algorithm 1) and the experience store.

`SelfImprover(store, run_id, agent, LoopConfig(...)).run(tasks)` runs Algorithm 1 (method.md §3):
σ filtering (`filtering`), β stratification (`stratify`), cumulative H → HM → HME selection,
restart after a solve, both termination conditions. Samples, demonstrations and iterations are
stored in SQLite (`ExperienceStore`) as they finish, so a killed run resumes without repeating
a request. Demonstration libraries: `export_library` / `load_library`; `reverify_run` re-checks
a library after a verifier/language change.
"""

from stepsmith.improve.demos import DemoLibraryError, export_library, load_library, visible_demos
from stepsmith.improve.filtering import (
    canonical_form,
    is_isomorphic,
    pure_code_lines,
    select_representative,
)
from stepsmith.improve.loop import LoopConfig, LoopResult, SelfImprover
from stepsmith.improve.reverify import reverify_run
from stepsmith.improve.store import DemoRecord, ExperienceStore, SampleRecord, default_db_path
from stepsmith.improve.stratify import cumulative, stratify

__all__ = [
    "DemoLibraryError",
    "DemoRecord",
    "ExperienceStore",
    "LoopConfig",
    "LoopResult",
    "SampleRecord",
    "SelfImprover",
    "canonical_form",
    "cumulative",
    "default_db_path",
    "export_library",
    "is_isomorphic",
    "load_library",
    "pure_code_lines",
    "reverify_run",
    "select_representative",
    "stratify",
    "visible_demos",
]
