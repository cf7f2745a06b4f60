"""The packaged task collections: the benchmark (``bench/``) and the demonstrations (``demos/``).

Files live at ``stepsmith/benchmarks/{bench,demos}/<group>/<test_name>.yaml``. Loading is cached
per file (keyed by path and modification time), so repeated calls are cheap.
"""

from __future__ import annotations

import difflib
from functools import lru_cache
from pathlib import Path

import stepsmith.benchmarks as _bench_pkg

from .errors import TaskNotFoundError
from .loader import Task, load_task

ROOT = Path(_bench_pkg.__file__).resolve().parent
BENCH_DIR = ROOT / "bench"
DEMO_DIR = ROOT / "demos"
GROUP_ORDER = ("attn", "bmm", "gemm", "norm", "rope", "index", "expert", "etoe", "extra")


@lru_cache(maxsize=512)
def _load_cached(path: str, mtime: float) -> Task:
    return load_task(Path(path))


def _load(path: Path) -> Task:
    return _load_cached(str(path), path.stat().st_mtime)


def _files(root: Path) -> list[Path]:
    return sorted(root.glob("*/*.yaml")) if root.is_dir() else []


def task_files(*, demos: bool = False) -> list[Path]:
    """The packaged task files (benchmark, or demonstrations), without loading them: a checker
    reports a broken file as one failure instead of failing to list the rest."""
    return _files(DEMO_DIR if demos else BENCH_DIR)


def _group_key(group: str) -> tuple[int, str]:
    return (GROUP_ORDER.index(group) if group in GROUP_ORDER else len(GROUP_ORDER), group)


def benchmark_tasks(group: str | None = None) -> list[Task]:
    """All benchmark tasks (optionally one group), ordered by group then name."""
    tasks = sorted((_load(p) for p in _files(BENCH_DIR)),
                   key=lambda t: (*_group_key(t.group), t.name))
    return [t for t in tasks if group is None or t.group == group]


def demo_tasks() -> list[Task]:
    """The demonstration tasks that teach one primitive or idiom each (never benchmark tasks)."""
    return sorted((_load(p) for p in _files(DEMO_DIR)), key=lambda t: (t.group, t.name))


def groups() -> list[str]:
    """Benchmark group names in the paper's order (then any other groups alphabetically)."""
    return sorted({t.group for t in benchmark_tasks()}, key=_group_key)


def get_task(name_or_path: str | Path) -> Task:
    """A benchmark or demo task by ``test_name`` (or file stem), or any YAML file by path."""
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or text.endswith((".yaml", ".yml")) or Path(text).is_file():
        path = Path(text)
        if not path.is_file():
            raise TaskNotFoundError(f"task file {text!r} does not exist")
        return load_task(path)
    candidates = _files(BENCH_DIR) + _files(DEMO_DIR)
    for p in candidates:
        if p.stem == text:
            return _load(p)
    for p in candidates:
        task = _load(p)
        if task.name == text:
            return task
    close = difflib.get_close_matches(text, [p.stem for p in candidates], n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise TaskNotFoundError(f"no benchmark or demo task named {text!r}{hint}")
