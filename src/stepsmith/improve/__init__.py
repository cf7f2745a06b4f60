"""stepsmith.improve — adaptive self-improvement (Algorithm 1) and the experience store.

`SelfImprover(store, run_id, agent, LoopConfig(...)).run(tasks)` runs Algorithm 1 (method.md §3):
σ filtering (`filtering`), β stratification (`stratify`), cumulative H → HM → HME selection,
restart after a solve, both termination conditions. Samples, demonstrations and iterations are
stored in SQLite (`ExperienceStore`) as they finish, so a killed run resumes without repeating
a request; `reverify_run` re-checks a library after a verifier/language change. Demonstrations,
program identity and library files live below, in `stepsmith.demos`.
"""

from stepsmith.improve.filtering import pure_code_lines, select_representative
from stepsmith.improve.loop import LoopConfig, LoopResult, SelfImprover
from stepsmith.improve.reverify import reverify_run
from stepsmith.improve.store import ExperienceStore, SampleRecord, default_db_path
from stepsmith.improve.stratify import cumulative, stratify

__all__ = [
    "ExperienceStore",
    "LoopConfig",
    "LoopResult",
    "SampleRecord",
    "SelfImprover",
    "cumulative",
    "default_db_path",
    "pure_code_lines",
    "reverify_run",
    "select_representative",
    "stratify",
]
