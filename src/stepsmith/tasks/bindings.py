"""Shape bindings: which integer each size symbol takes in one verification run.

The rules — a task's symbols, the three default bindings, what ``global`` and ``ctx`` bind, the
precedence per symbol, the ``bindings`` field — are specified in ``docs/task-format.md``; this
module implements them. Two choices behind them: within each default binding M, N, K and D are
distinct, so a program that swaps two dims fails (and D stays even for half-split tasks); list
entries of ``bindings`` are addressed by ``label``, never by position (positional merging once
silently relabelled and dropped bindings), and an entry without a label, or a label used twice,
is a ``TaskFormatError`` at its line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stepsmith.step.dims import Dim
from stepsmith.step.session import PAPER_BINDING

if TYPE_CHECKING:
    from .yamlsrc import Locator

DEFAULT_BINDINGS: tuple[tuple[str, dict[str, int], int], ...] = (
    ("paper", dict(PAPER_BINDING), 42),
    ("small", {"M": 3, "N": 4, "K": 6, "D": 8}, 7),
    ("large", {"M": 8, "N": 12, "K": 10, "D": 32}, 2024),
)
ALWAYS_BOUND = ("M", "N", "K", "D")
DEFAULT_LABELS = tuple(label for label, _, _ in DEFAULT_BINDINGS)


@dataclass(frozen=True)
class Binding:
    """One run's sizes: ``values`` maps every task symbol to an int; ``seed`` drives data_gen."""

    label: str
    values: dict[str, int] = field(hash=False)
    seed: int

    def __str__(self) -> str:
        sizes = ", ".join(f"{k}={v}" for k, v in self.values.items())
        return f"{self.label} ({sizes}; seed {self.seed})"


class Ctx(dict):
    """The ``ctx`` dict of task globals; keys are normalised to symbol names (a ``Dim`` or a
    ``str``, both ``str()`` to the name)."""

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(str(key), value)

    def __getitem__(self, key: Any) -> Any:
        return super().__getitem__(str(key))

    def __contains__(self, key: object) -> bool:
        return super().__contains__(str(key))

    def get(self, key: Any, default: Any = None) -> Any:
        return super().get(str(key), default)


def symbol_objects(names: list[str]) -> dict[str, Dim]:
    """``step.Dim`` per symbol name."""
    return {n: Dim.sym(n) for n in names}


def check_binding_labels(entries: list[dict[str, Any]] | dict[str, Any] | None,
                         loc: Locator) -> None:
    """Every list entry names a label, once; raises ``TaskFormatError`` at the entry's line."""
    if not isinstance(entries, list):
        return
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        label = entry.get("label")
        if label is None:
            raise loc.error(("bindings", i), (
                f"bindings entry {i} has no label; write `label: paper`, `small` or `large` to "
                f"override that default binding, or a new label to add one (defaults are always "
                f"kept; use a mapping such as `bindings: {{D: 4}}` to change every binding)"))
        label = str(label)
        if label in seen:
            raise loc.error(("bindings", i, "label"),
                            f"binding label {label!r} is already used by bindings entry {seen[label]}")
        seen[label] = i


def requested_bindings(spec_bindings: list[dict[str, Any]] | dict[str, Any] | None,
                       ) -> list[tuple[str, dict[str, int], int, dict[str, int]]]:
    """(label, base values, seed, explicit overrides) per binding, before ``global`` runs."""
    if spec_bindings is None:
        return [(lbl, dict(v), s, {}) for lbl, v, s in DEFAULT_BINDINGS]
    if isinstance(spec_bindings, Mapping):
        over = {k: int(v) for k, v in spec_bindings.items()}
        return [(lbl, {**v, **over}, s, over) for lbl, v, s in DEFAULT_BINDINGS]
    by_label: dict[str, dict[str, Any]] = {}
    for i, entry in enumerate(spec_bindings):
        if "label" not in entry:  # the loader reports this with a line; keep callers honest
            raise ValueError(f"bindings entry {i} has no label")
        by_label[str(entry["label"])] = {k: v for k, v in entry.items() if k != "label"}
    paper_values, paper_seed = DEFAULT_BINDINGS[0][1], DEFAULT_BINDINGS[0][2]
    added = [(label, paper_values, paper_seed + len(DEFAULT_BINDINGS) + i)
             for i, label in enumerate(k for k in by_label if k not in DEFAULT_LABELS)]
    out = []
    for label, base, seed in [*DEFAULT_BINDINGS, *added]:
        entry = dict(by_label.get(label, {}))
        seed = int(entry.pop("seed", seed))
        over = {k: int(v) for k, v in entry.items()}
        out.append((label, {**base, **over}, seed, over))
    return out


def resolve_values(symbols: list[str], base: dict[str, int], overrides: dict[str, int],
                   env: Mapping[str, Any]) -> tuple[dict[str, int], list[str]]:
    """Final symbol values after ``global`` ran in ``env``; also the names left without a value."""
    ctx = env.get("ctx", {})
    values: dict[str, int] = {}
    missing: list[str] = []
    for name in dict.fromkeys([*ALWAYS_BOUND, *base, *symbols, *ctx.keys()]):
        if name in overrides:
            values[name] = overrides[name]
        elif name in ctx:
            v = ctx[name]
            values[name] = int(v) if isinstance(v, int | float) and float(v).is_integer() else v
        elif isinstance(env.get(f"{name}_value"), int) and not isinstance(env.get(f"{name}_value"), bool):
            values[name] = env[f"{name}_value"]
        elif name in base:
            values[name] = base[name]
        else:
            missing.append(name)
    return values, missing
