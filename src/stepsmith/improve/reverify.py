"""Re-verify a run's demonstration library when the verifier or the language changes.

A demonstration is only as good as the verdict that admitted it. After a verifier/language
version bump, every active demonstration is checked again: passing ones get the new verifier
version in their provenance, failing ones are marked ``stale`` (kept, with the reason, but no
longer shown to the model).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import yaml

from stepsmith.improve.store import DemoRecord, ExperienceStore

if TYPE_CHECKING:
    from stepsmith.tasks.task import Task
    from stepsmith.verify.verdict import Verdict


@dataclass
class ReverifyResult:
    task_name: str
    source: str
    passed: bool | None  # None: the task could not be loaded
    kind: str | None
    verifier_version: str | None
    message: str


def _task_for(demo: DemoRecord) -> Task:
    """The demo's task: the packaged one by name, else rebuilt from the stored IR."""
    from stepsmith.tasks import load_task
    from stepsmith.tasks.suite import get_task

    try:
        return get_task(demo.task_name)
    except KeyError:
        pass
    doc = yaml.safe_load(demo.task_ir) or {}
    doc = {"test_name": demo.task_name, **doc}
    return load_task(yaml.safe_dump(doc, sort_keys=False))


def reverify_run(
    store: ExperienceStore,
    run_id: str,
    verify: Callable[[Task, str], Verdict] | None = None,
) -> list[ReverifyResult]:
    """Verify every active demonstration of ``run_id`` again and update its status."""
    if verify is None:
        from stepsmith.verify import verify as default_verify

        verify = default_verify
    run_id = store.find_run(run_id).run_id
    out: list[ReverifyResult] = []
    for d in store.demos(run_id, active_only=True):
        try:
            task = _task_for(d)
        except Exception as exc:  # noqa: BLE001 — an unloadable task is reported, not fatal
            out.append(ReverifyResult(d.task_name, d.source, None, None, None,
                                      f"cannot load task {d.task_name!r}: {exc}"))
            continue
        verdict = verify(task, d.impl)
        kind = verdict.kind.value if verdict.kind is not None else None
        version = verdict.verifier_version
        prov = dict(d.provenance)
        history = list(prov.get("reverified", []))
        history.append({"from": d.verifier_version, "to": version, "passed": bool(verdict.passed)})
        prov["reverified"] = history
        if verdict.passed:
            d = dataclasses.replace(d, verifier_version=version, provenance=prov)
            store.add_demos(run_id, [d])
            msg = f"still correct under verifier {version}"
        else:
            prov["stale_reason"] = f"{kind}: {verdict.feedback[:500]}"
            store.set_demo_status(run_id, d.task_name, d.source, "stale", prov)
            msg = f"now fails ({kind}); marked stale"
        out.append(ReverifyResult(d.task_name, d.source, bool(verdict.passed), kind, version, msg))
    return out
