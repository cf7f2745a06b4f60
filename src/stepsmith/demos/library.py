"""Demonstration library files: export and import, JSON or YAML, with provenance.

A library earned by a strong model can lift a cheap one; every problem in a file is a
`DemoLibraryError` naming the entry and field, never a crash half-way through a run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import yaml

from stepsmith.demos.records import DemoRecord

__all__ = ["LIBRARY_FORMAT", "DemoLibraryError", "export_library", "load_library"]

LIBRARY_FORMAT = "stepsmith-demos/1"
_REQUIRED = ("task_name", "group", "task_ir", "impl", "model", "iteration", "verifier_version")


class DemoLibraryError(ValueError):
    """A demonstration library file that cannot be used; the message says which entry and field."""


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (programs, task IRs) as `|` block scalars: readable and diffable,
    not one escaped line. PyYAML falls back to quoting when a block cannot represent one."""


def _str_block(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str_block)


def export_library(demos: Iterable[DemoRecord], path: str | Path, *, run_id: str = "") -> Path:
    """Write demonstrations with provenance; ``.yaml``/``.yml`` gives YAML, anything else JSON."""
    path = Path(path)
    entries = []
    for d in demos:
        entries.append(
            {
                "task_name": d.task_name,
                "group": d.group,
                "task_ir": d.task_ir,
                "impl": d.impl,
                "model": d.model,
                "iteration": d.iteration,
                "temperature": d.temperature,
                "verifier_version": d.verifier_version,
                "success_count": d.success_count,
                "n": d.n,
                "source_run": d.provenance.get("source_run", run_id),
                "status": d.status,
            }
        )
    doc = {"format": LIBRARY_FORMAT, "run_id": run_id, "demos": entries}
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".yaml", ".yml"):
        path.write_text(yaml.dump(doc, Dumper=_BlockDumper, sort_keys=False, allow_unicode=True))
    else:
        path.write_text(json.dumps(doc, indent=2))
    return path


def load_library(path: str | Path) -> list[DemoRecord]:
    """Read a library file; every problem is a ``DemoLibraryError`` naming the entry and field."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise DemoLibraryError(f"cannot read demonstration library {path}: {exc}") from exc
    try:
        doc = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise DemoLibraryError(f"demonstration library {path} is not valid JSON/YAML: {exc}") from exc
    if isinstance(doc, list):
        entries = doc
    elif isinstance(doc, dict) and isinstance(doc.get("demos"), list):
        fmt = doc.get("format", LIBRARY_FORMAT)
        if fmt != LIBRARY_FORMAT:
            raise DemoLibraryError(f"{path}: format {fmt!r} is not supported; expected {LIBRARY_FORMAT!r}")
        entries = doc["demos"]
    else:
        raise DemoLibraryError(
            f"{path}: expected a mapping with a 'demos' list (format {LIBRARY_FORMAT}) or a list of demos"
        )
    out: list[DemoRecord] = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise DemoLibraryError(f"{path}: demos[{i}] must be a mapping, found {type(e).__name__}")
        missing = [k for k in _REQUIRED if k not in e]
        if missing:
            raise DemoLibraryError(
                f"{path}: demos[{i}] ({e.get('task_name', '?')}) is missing field(s) {', '.join(missing)}"
            )
        for k in ("task_name", "group", "task_ir", "impl", "model", "verifier_version"):
            if not isinstance(e[k], str):
                raise DemoLibraryError(
                    f"{path}: demos[{i}].{k} must be a string, found {type(e[k]).__name__}"
                )
        n = int(e.get("n", 1) or 1)
        out.append(
            DemoRecord(
                task_name=e["task_name"],
                group=e["group"],
                task_ir=e["task_ir"],
                impl=e["impl"],
                model=e["model"],
                iteration=int(e["iteration"]),
                temperature=None if e.get("temperature") is None else float(e["temperature"]),
                verifier_version=e["verifier_version"],
                success_count=int(e.get("success_count", 1)),
                n=n,
                source="import",
                status=str(e.get("status", "active")),
                provenance={"source_run": e.get("source_run", ""), "library": str(path)},
            )
        )
    return out
