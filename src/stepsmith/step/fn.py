"""Specialized functions (`Fn`): the hardware's per-element compute units.

Bodies are written for ONE element; executors batch them (see `stepsmith.step.execfn`).
"""

from __future__ import annotations

import ast
import math
import textwrap
from collections.abc import Callable, Mapping, Sequence
from inspect import Parameter, signature
from typing import Any

import torch

from stepsmith.step.dims import Dim
from stepsmith.step.dtypes import ElemType, fields_of, parse_dtype
from stepsmith.step.errors import StepArgumentError, StepDtypeError, StepError

InitValue = int | float | str
_INIT_WORDS = {"-inf": -math.inf, "inf": math.inf, "+inf": math.inf, "zeros": 0.0, "ones": 1.0,
               "zero": 0.0, "one": 1.0}


def _norm_init(name: str, init: object, n_out: int) -> tuple[float, ...] | None:
    if init is None:
        return None
    items = list(init) if isinstance(init, list | tuple) else [init]
    if len(items) != n_out:
        raise StepArgumentError(
            f"fn {name!r}: init has {len(items)} entries but the output type has {n_out} field(s)",
            expected=f"{n_out} init value(s), one per output field", found=repr(init),
        )
    out = []
    for v in items:
        if isinstance(v, str):
            key = v.strip().lower()
            if key in _INIT_WORDS:
                out.append(_INIT_WORDS[key])
                continue
            try:
                out.append(float(key))
                continue
            except ValueError:
                pass
            raise StepArgumentError(
                f"fn {name!r}: unknown init value {v!r}",
                expected="0, 1, -1, -inf, inf, 'zeros' or 'ones'", found=repr(v),
            )
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise StepArgumentError(
                f"fn {name!r}: init values must be numbers or 'zeros'/'ones'/'-inf'",
                expected="0, 1, -1, -inf, 'zeros' or 'ones'", found=repr(v),
            )
        out.append(float(v))
    return tuple(out)


class Fn:
    """A specialized function. `body(input, state)` works on one element and returns a list
    (one entry per output field) or a bare tensor; stateful iff `init` is given."""

    def __init__(self, name: str, input_dtype: ElemType | str | list,
                 output_dtype: ElemType | str | list, body: Callable[..., Any],
                 init: Sequence[InitValue] | InitValue | None = None,
                 func_name: str | None = None, symbols: Mapping[str, object] | None = None,
                 ) -> None:
        self.name = name
        self.func_name = func_name or name
        try:
            self.input_dtype = parse_dtype(input_dtype, symbols)
            self.output_dtype = parse_dtype(output_dtype, symbols)
        except StepDtypeError as e:
            raise StepDtypeError(f"fn {name!r}: {e}") from None
        if not callable(body):
            raise StepArgumentError(f"fn {name!r}: body must be callable, found {body!r}")
        self.body = body
        self.n_in = len(fields_of(self.input_dtype))
        self.n_out = len(fields_of(self.output_dtype))
        self.init = _norm_init(name, init, self.n_out)
        self.vmap_ok = True  # flipped after the first vmap failure (then per-element calls)
        self._one_arg = _takes_one_arg(body)
        self.source: str | None = None  # the YAML apply body, when built by from_source

    @property
    def stateful(self) -> bool:
        return self.init is not None

    def call(self, inp: list[torch.Tensor], state: list[torch.Tensor] | None) -> Any:
        """Invoke the body for one element (or one batched element under vmap)."""
        if self._one_arg:
            return self.body(inp)
        return self.body(inp, state)

    def signature(self) -> str:
        kind = f"stateful, init {list(self.init)}" if self.init is not None else "stateless"
        return f"fn {self.func_name!r}: {self.input_dtype} -> {self.output_dtype} ({kind})"

    def __repr__(self) -> str:
        return f"Fn({self.func_name!r}: {self.input_dtype} -> {self.output_dtype})"

    # ------------------------------------------------------------------------------------------
    @classmethod
    def from_source(cls, name: str, apply_src: str, input_dtype: ElemType | str | list,
                    output_dtype: ElemType | str | list,
                    init: Sequence[InitValue] | InitValue | None = None,
                    func_name: str | None = None, namespace: dict[str, Any] | None = None,
                    ) -> Fn:
        """Compile a YAML `apply` body (Python over `input` and `state`).

        A body without `return` whose last statement is an expression returns that value.
        The body runs with `namespace` as globals (plus `torch` and `math`).
        """
        fname = func_name or name
        src = textwrap.dedent(apply_src or "").strip("\n")
        if not src.strip():
            raise StepArgumentError(f"fn {name!r}: empty apply body",
                                    expected="a Python body that returns a list", found="''")
        try:
            tree = ast.parse(src, filename=f"<fn {name}>")
        except SyntaxError as e:
            raise StepArgumentError(
                f"fn {name!r}: apply body has a syntax error at line {e.lineno}: {e.msg}",
                found=(e.text or "").strip(),
            ) from None
        has_return = any(isinstance(n, ast.Return) for n in ast.walk(tree))
        if not has_return and tree.body and isinstance(tree.body[-1], ast.Expr):
            last = tree.body[-1]
            tree.body[-1] = ast.copy_location(ast.Return(value=last.value), last)
        module = ast.parse("def _body(input, state=None):\n    pass\n")
        func = module.body[0]
        assert isinstance(func, ast.FunctionDef)
        func.body = tree.body or func.body
        ast.fix_missing_locations(module)
        glb: dict[str, Any] = namespace if namespace is not None else {}
        glb.setdefault("torch", torch)
        glb.setdefault("math", math)
        try:
            code = compile(module, filename=f"<fn {name}>", mode="exec")
            loc: dict[str, Any] = {}
            exec(code, glb, loc)  # noqa: S102 - task-supplied fn bodies are trusted task data
        except StepError:
            raise
        except Exception as e:  # noqa: BLE001
            raise StepArgumentError(f"fn {name!r}: cannot compile apply body: {e}") from None
        dims = {k: v for k, v in glb.items() if isinstance(v, Dim)}  # only Dim-valued names
        fn = cls(name, input_dtype, output_dtype, loc["_body"], init=init, func_name=fname,
                 symbols=dims)
        fn.source = src
        return fn


def _takes_one_arg(body: Callable[..., Any]) -> bool:
    try:
        kinds = [p.kind for p in signature(body).parameters.values()]
    except (TypeError, ValueError):
        return False
    positional = [k for k in kinds if k in (Parameter.POSITIONAL_ONLY,
                                            Parameter.POSITIONAL_OR_KEYWORD)]
    return Parameter.VAR_POSITIONAL not in kinds and len(positional) == 1

