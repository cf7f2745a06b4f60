"""The ``Task`` object: a validated task file with its parsed types, bindings and instances."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import TYPE_CHECKING, Any

import torch

from stepsmith.step.dims import Dim
from stepsmith.step.dtypes import ElemType

from . import dtypes as dt
from .bindings import (
    ALWAYS_BOUND,
    Binding,
    Ctx,
    requested_bindings,
    resolve_values,
    symbol_objects,
)
from .errors import TaskFormatError
from .schema import TaskSpec
from .snippets import assigned_names, exec_code, parse_code
from .yamlsrc import Locator, Path

if TYPE_CHECKING:
    from .instance import Instance

RESERVED = {"step", "torch", "ctx", "input_data", "input", "state"}
#: Names through which `global` can bind sizes in ways a reading of the file cannot follow.
_DYNAMIC_NAMES = frozenset({"globals", "locals", "vars", "exec", "eval", "setattr", "__dict__"})


@dataclass(frozen=True)
class StreamInfo:
    """Parsed dtype/dims of an input, parameter or output."""

    name: str
    dtype: ElemType
    dims: tuple[Dim, ...]
    path: Path


@dataclass(frozen=True)
class FnInfo:
    """Parsed dtypes of one fn."""

    func_name: str
    input_dtype: ElemType
    output_dtype: ElemType
    path: Path


class Task:
    """A validated task: the spec plus parsed types, line locator and bindings."""

    def __init__(self, spec: TaskSpec, loc: Locator, text: str, source_path: FsPath | None,
                 inputs: list[StreamInfo], parameters: list[StreamInfo], fns: list[FnInfo],
                 outputs: list[StreamInfo], symbols: list[str]) -> None:
        self.spec = spec
        self.locator = loc
        self.text = text
        self.source_path = source_path
        self.input_infos = inputs
        self.parameter_infos = parameters
        self.fn_infos = fns
        self.output_infos = outputs
        self.symbols = symbols
        self._bindings: list[Binding] | None = None

    # -- identity -----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.spec.test_name

    @property
    def group(self) -> str:
        """The ``group`` field, else the folder the file is in, else ``"misc"``."""
        if self.spec.group:
            return self.spec.group
        return self.source_path.parent.name if self.source_path else "misc"

    @property
    def description(self) -> str:
        return self.spec.description

    @property
    def impl(self) -> str | None:
        return self.spec.impl

    @property
    def input_names(self) -> list[str]:
        """Parameter names of the program function, in order."""
        return [s.name for s in self.input_infos]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self.output_infos]

    def __repr__(self) -> str:
        return f"Task({self.name!r}, group={self.group!r})"

    def line_of(self, field: str | Path) -> int | None:
        """1-based line of a field given as a path tuple or a dotted string (``fns[0].apply``)."""
        if isinstance(field, str):
            parts = field.replace("]", "").replace("[", ".").split(".")
            field = tuple(int(p) if p.isdigit() else p for p in parts if p)
        return self.locator.line(field)

    # -- bindings and instances ------------------------------------------------------------------
    def global_env(self, values: dict[str, int]) -> dict[str, Any]:
        """Namespace after running ``global`` with ``values`` pre-seeded (see ``bindings``)."""
        from stepsmith import step  # lazily: `import stepsmith.tasks` stays light

        env: dict[str, Any] = {"torch": torch, "step": step, "ctx": Ctx()}
        env.update(symbol_objects(list(dict.fromkeys([*self.symbols, *values]))))
        env.update({f"{k}_value": v for k, v in values.items()})
        if self.spec.global_:
            exec_code(self.spec.global_, env, ("global",), self.locator, "global")
        return env

    def _env_for(self, base: dict[str, int],
                 over: dict[str, int]) -> tuple[dict[str, Any], dict[str, int]]:
        env = self.global_env(base)
        values, missing = resolve_values(self.symbols, base, over, env)
        if missing:
            raise self._unbound(missing[0])
        for k, v in values.items():
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise self._not_positive(("bindings",) if k in over else ("global",), k, v)
        for k, v in values.items():  # make the namespace agree with the final values
            env[f"{k}_value"] = v
            env["ctx"][k] = v
        env.update(symbol_objects(list(values)))
        return env, values

    def _unbound(self, name: str) -> TaskFormatError:
        return self.locator.error(
            self._symbol_uses(name), f"size symbol '{name}' has no value: set it in `global` "
            f"(`{name}_value = 3` and `ctx[{name}] = {name}_value`) or in `bindings`")

    def _not_positive(self, where: Path, name: str, value: object) -> TaskFormatError:
        return self.locator.error(where, f"size symbol '{name}' must be a positive integer, "
                                         f"found {value!r}")

    def _symbol_uses(self, name: str) -> Path:
        for info in [*self.input_infos, *self.parameter_infos, *self.output_infos]:
            if any(name in d.symbols for d in info.dims):
                return (*info.path, "dims")
            if name in dt.dtype_symbols(info.dtype):
                return (*info.path, "dtype")
        for f in self.fn_infos:
            if name in dt.dtype_symbols(f.input_dtype) + dt.dtype_symbols(f.output_dtype):
                return f.path
        return ()

    def check_sizes(self) -> None:
        """Every size symbol has a value in every binding, and explicit values are positive —
        read from the file without running it (``global`` is code: it runs only when the task
        is instantiated, in the verifier's sandbox). A symbol counts as provided when ``global``
        assigns ``ctx[X]`` or ``X_value``; what those values are is checked when it runs."""
        provided = set(ALWAYS_BOUND)
        if self.spec.global_:
            tree = parse_code(self.spec.global_, ("global",), self.locator, what="global")
            provided |= {n[: -len("_value")] for n in assigned_names(tree) if n.endswith("_value")}
            subscripted: set[int] = set()
            for n in ast.walk(tree):
                if (isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name)
                        and n.value.id == "ctx"):
                    subscripted.add(id(n.value))
                    key = n.slice
                    if isinstance(n.ctx, ast.Store) and isinstance(key, ast.Name):
                        provided.add(key.id)
                    elif isinstance(n.ctx, ast.Store) and isinstance(key, ast.Constant):
                        provided.add(str(key.value))
            if any(isinstance(n, ast.Name) and (n.id in _DYNAMIC_NAMES or n.id == "ctx")
                   and id(n) not in subscripted for n in ast.walk(tree)):
                return  # `ctx.update(...)`, `globals()[...]`: only running `global` can tell
        for _label, base, _seed, over in requested_bindings(self.spec.bindings):
            for k, v in over.items():
                if v < 1:
                    raise self._not_positive(("bindings",), k, v)
            for name in self.symbols:
                if name not in provided and name not in base:
                    raise self._unbound(name)

    def bindings(self) -> list[Binding]:
        """Bindings to verify at; the first is the paper's (M=5, N=7, K=9, D=16, seed 42)."""
        if self._bindings is None:
            self._bindings = [Binding(label=label, values=self._env_for(base, over)[1], seed=seed)
                              for label, base, seed, over in requested_bindings(self.spec.bindings)]
        return list(self._bindings)

    def instantiate(self, binding: Binding | None = None,
                    dtype: torch.dtype = torch.float64) -> Instance:
        """Data, reference outputs and program namespace for one binding (default: the paper's).

        float64 is the default because the verifier compares in float64; data is drawn in
        float64 either way, so a float32 instance holds the same values rounded."""
        from .instance import build_instance

        return build_instance(self, binding or self.bindings()[0], dtype)


