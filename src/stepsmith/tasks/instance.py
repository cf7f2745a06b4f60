"""Instantiating a task at one binding: input data per seed, reference outputs, program namespace.

Data is always drawn in float64 from one ``torch.Generator`` seeded with ``binding.seed`` (inputs
in file order, then parameters) and only then cast, so float32 and float64 instances hold the
same values up to rounding.

Two facts about the references follow the paper's public task format:

* **One scope.** All ``data_transform`` snippets of an instance run in one namespace, in output
  order (then field order): a later snippet may use a name an earlier one defined
  (``affinity = torch.sigmoid(x @ Wg)`` in output 0, just ``affinity`` in output 1).
* **Precision.** ``Instance.precision`` is the lowest floating precision the task's own code
  actually computed in: every tensor produced while running ``global``, the snippets and one
  probe call of each fn is recorded (a ``TorchFunctionMode``), so a task that forces float32
  (``torch.arange(..., dtype=torch.float)``) is known to compute in float32 even when the
  result is promoted back to float64. The verifier picks its tolerance from it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch.overrides import TorchFunctionMode

from stepsmith.step.dtypes import fields_of

from . import dtypes as dt
from .bindings import Binding
from .errors import TaskReferenceError
from .schema import DEFAULT_ATOL, DEFAULT_RTOL, Tolerance
from .snippets import eval_snippet

if TYPE_CHECKING:
    from stepsmith.step.dims import Dim
    from stepsmith.step.dtypes import ElemType
    from stepsmith.step.fn import Fn

    from .task import FnInfo, StreamInfo, Task


#: Default (rtol, atol) by the precision a task's own code computes in; the rationale is in
#: `stepsmith.verify.tolerance`. float32: a correct program that orders float32 ops differently
#: from the reference differs by ~1e-7 of the output magnitude at our bindings (RoPE-like
#: angle tables, measured), 1e-5 leaves two orders of margin and stays below every planted
#: mutant of the self-audit. Half types follow the same factor over their epsilon, capped.
PRECISION_TOLERANCE: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (DEFAULT_RTOL, DEFAULT_ATOL),
    torch.float32: (1e-5, 1e-7),
    torch.float16: (5e-3, 1e-5),
    torch.bfloat16: (4e-2, 1e-5),
}


def tolerance_for(declared: Tolerance, precision: torch.dtype) -> Tolerance:
    """The instance's tolerance: fields the task's YAML sets (pydantic ``model_fields_set``)
    win; the others come from ``PRECISION_TOLERANCE`` for the precision it computed in."""
    rtol, atol = PRECISION_TOLERANCE.get(precision, PRECISION_TOLERANCE[torch.float32])
    explicit = {k: getattr(declared, k) for k in declared.model_fields_set}
    return Tolerance(**{"rtol": rtol, "atol": atol, **explicit})


@dataclass
class ExpectedOutput:
    """Reference value of one task output; ``values`` has one tensor per tuple field."""

    name: str
    dtype: ElemType
    shape: tuple[Dim, ...]  # per stream dim, innermost first
    values: tuple[torch.Tensor, ...]


@dataclass
class Instance:
    """Everything needed to run and check one program at one binding."""

    task_name: str
    binding: Binding
    namespace: dict[str, Any]
    inputs: dict[str, Any]  # name -> step.Stream (fresh tensors per instance)
    expected: list[ExpectedOutput]
    input_data: dict[str, torch.Tensor]
    precision: torch.dtype = torch.float64  # lowest precision the task's code computed in
    tolerance: Tolerance = Tolerance()  # the task's declared fields over the precision's defaults

    def fresh_inputs(self) -> dict[str, Any]:
        """New input streams over cloned data: a stream's consumed-once state lives on the
        ``Stream`` object, so running a second program on the same instance needs new ones."""
        return _streams([(n, s.dtype, s.shape, s.data) for n, s in self.inputs.items()],
                        self.binding.values)


def _streams(specs: list[tuple[str, ElemType, tuple[Dim, ...], torch.Tensor]],
             values: dict[str, int]) -> dict[str, Any]:
    """Program input streams (name, element type, dims, data), each over a copy of its data."""
    from stepsmith import step

    with step.Session(binding=dict(values)):
        return {n: step.Stream.input(n, t, tuple(dims), data.clone()) for n, t, dims, data in specs}


class PrecisionProbe(TorchFunctionMode):
    """Records the floating dtypes of every tensor a torch call produces inside the mode."""

    def __init__(self) -> None:
        super().__init__()
        self.dtypes: set[torch.dtype] = set()

    def __torch_function__(self, func: Any, types: Any, args: Any = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        self._record(out)
        return out

    def _record(self, x: Any) -> None:
        if isinstance(x, torch.Tensor):
            if x.is_floating_point() or x.is_complex():
                self.dtypes.add(x.dtype.to_real() if x.is_complex() else x.dtype)
        elif isinstance(x, tuple | list):
            for item in x:
                self._record(item)

    def lowest(self, start: torch.dtype) -> torch.dtype:
        """``start`` or the recorded dtype with the largest machine epsilon."""
        return max([start, *self.dtypes], key=lambda d: torch.finfo(d).eps)


def _probe_fn(fn: Fn, info: FnInfo, values: dict[str, int], dtype: torch.dtype,
              probe: PrecisionProbe) -> None:
    """Call ``fn`` once on one random element (and its init state) so ``probe`` sees the
    precision its body computes in. A body that cannot run on random data is skipped: the
    program run will still exercise it, only its precision goes unrecorded."""
    g = torch.Generator().manual_seed(0)
    inputs = []
    for f in fields_of(info.input_dtype):
        x = torch.randn(dt.data_shape(f, (), values), generator=g, dtype=torch.float64)
        inputs.append((x > 0).to(dtype) if dt.is_multihot(f) else x.to(dtype))
    state = None
    if fn.init is not None:
        state = [torch.full(dt.data_shape(f, (), values), v, dtype=dtype)
                 for f, v in zip(fields_of(info.output_dtype), fn.init, strict=True)]
    with contextlib.suppress(Exception), probe:  # see the docstring
        fn.call(inputs, state)


def generate(info: StreamInfo, gen: Any, values: dict[str, int], g: torch.Generator) -> torch.Tensor:
    """Draw the tensor of one input/parameter in its stream layout (float64)."""
    (field,) = fields_of(info.dtype)  # an input/parameter is never a tuple (checked at load)
    shape = dt.data_shape(field, info.dims, values)
    kind = gen.kind
    f64 = torch.float64
    if kind in ("torch.rand", "torch.randn"):
        out = (torch.rand if kind == "torch.rand" else torch.randn)(shape, generator=g, dtype=f64)
    elif kind in ("torch.ones", "torch.zeros"):
        out = torch.full(shape, 1.0 if kind == "torch.ones" else 0.0, dtype=f64)
    elif kind == "binary":
        out = torch.randint(0, 2, shape, generator=g).to(f64)
    else:  # multihot: each row (last dim E) gets between min and max ones, uniformly placed
        n = shape[-1]
        lo = gen.min if gen.min is not None else 1
        hi = gen.max if gen.max is not None else 1
        if hi > n:
            raise ValueError(f"multihot max={hi} exceeds the number of experts {n}")
        rows = int(torch.tensor(shape[:-1]).prod().item()) if len(shape) > 1 else 1
        ranks = torch.rand((rows, n), generator=g, dtype=f64).argsort(-1).argsort(-1)
        counts = torch.randint(lo, hi + 1, (rows, 1), generator=g)
        out = (ranks < counts).to(f64).reshape(shape)
    if gen.scale is not None:
        out = out * gen.scale
    return out


def _check_layout(value: Any, info: StreamInfo, field: int, expected_shape: tuple[int, ...],
                  task: Task, dtype: torch.dtype) -> torch.Tensor:
    path = (*info.path, "data_transform", field)
    if not isinstance(value, torch.Tensor):
        try:
            value = torch.as_tensor(value)
        except Exception:
            raise task.locator.error(path, f"data_transform must produce a tensor, found "
                                           f"{type(value).__name__}", cls=TaskReferenceError) from None
    if tuple(value.shape) != expected_shape:
        f = fields_of(info.dtype)[field]
        dims = ", ".join(str(d) for d in info.dims)
        raise task.locator.error(path, f"output {info.name!r} field {field} ({f} on dims "
                                       f"[{dims}]) must be laid out as {expected_shape} (outermost "
                                       "dim first, then the reversed buffer shape), but the "
                                       f"snippet produced shape {tuple(value.shape)}",
                                 cls=TaskReferenceError)
    return value.to(dtype)


def build_instance(task: Task, binding: Binding, dtype: torch.dtype) -> Instance:
    """See ``Task.instantiate``."""
    from stepsmith import step

    base = dict(binding.values)
    probe = PrecisionProbe()
    with probe:
        env, values = task._env_for(base, base)  # the binding's values are final: they win
    g = torch.Generator().manual_seed(int(binding.seed))
    input_data: dict[str, torch.Tensor] = {}
    specs = [*zip(task.input_infos, task.spec.inputs, strict=True),
             *zip(task.parameter_infos, task.spec.parameters, strict=True)]
    for info, spec in specs:
        try:
            input_data[info.name] = generate(info, spec.data_gen, values, g).to(dtype)
        except ValueError as exc:
            raise task.locator.error((*info.path, "data_gen"), f"{exc} at binding {binding}",
                                     cls=TaskReferenceError) from None
    symbols = {k: step.Dim.sym(k) for k in values}
    env.update(symbols)

    expected: list[ExpectedOutput] = []
    ns = dict(env)  # one scope for every snippet of the instance, in output order
    ns["input_data"] = {k: v.clone() for k, v in input_data.items()}
    for info, out_spec in zip(task.output_infos, task.spec.outputs, strict=True):
        vals = []
        for j, (snippet, f) in enumerate(zip(out_spec.data_transform, fields_of(info.dtype),
                                             strict=True)):
            with probe:
                value = eval_snippet(snippet, ns, (*info.path, "data_transform", j), task.locator)
            shape = dt.data_shape(f, info.dims, values)
            vals.append(_check_layout(value, info, j, shape, task, dtype))
        expected.append(ExpectedOutput(info.name, info.dtype, info.dims, tuple(vals)))

    fn_env = dict(env)
    fn_env["input_data"] = input_data
    namespace: dict[str, Any] = {"step": step, **symbols,
                                 **{f"{k}_value": v for k, v in values.items()}}
    for fn_spec, fn_info in zip(task.spec.fns, task.fn_infos, strict=True):
        try:
            namespace[fn_spec.func_name] = step.Fn.from_source(
                name=fn_spec.name, apply_src=fn_spec.apply, input_dtype=fn_info.input_dtype,
                output_dtype=fn_info.output_dtype, init=fn_spec.init,
                func_name=fn_spec.func_name, namespace=fn_env)
        except step.StepError as exc:
            raise task.locator.error(fn_info.path, f"cannot build fn {fn_spec.name!r}: {exc}",
                                     cls=TaskReferenceError) from exc
        _probe_fn(namespace[fn_spec.func_name], fn_info, values, dtype, probe)
    for k, v in env.items():  # plain-int globals such as E_value stay visible to programs
        if k.endswith("_value") and isinstance(v, int) and k not in namespace:
            namespace[k] = v

    inputs = _streams([(i.name, i.dtype, i.dims, input_data[i.name]) for i in task.input_infos],
                      values)
    precision = probe.lowest(dtype)
    return Instance(task.name, binding, namespace, inputs, expected, input_data,
                    precision=precision, tolerance=tolerance_for(task.spec.tolerance, precision))
