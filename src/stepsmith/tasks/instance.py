"""Instantiating a task at one binding: input data per seed, reference outputs, program namespace.

Data is always drawn in float64 from one ``torch.Generator`` seeded with ``binding.seed`` (inputs
in file order, then parameters) and only then cast, so float32 and float64 instances hold the
same values up to rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from . import dtypes as dt
from .bindings import Binding
from .errors import TaskReferenceError
from .snippets import eval_snippet

if TYPE_CHECKING:
    from .task import StreamInfo, Task


@dataclass
class ExpectedOutput:
    """Reference value of one task output; ``values`` has one tensor per tuple field."""

    name: str
    dtype: Any  # a stepsmith.step element type
    shape: tuple[Any, ...]  # step.Dim per stream dim, innermost first
    values: tuple[torch.Tensor, ...]
    concrete_shape: tuple[int, ...] = ()


@dataclass
class Instance:
    """Everything needed to run and check one program at one binding."""

    task_name: str
    binding: Binding
    namespace: dict[str, Any]
    inputs: dict[str, Any]  # name -> step.Stream (fresh tensors per instance)
    expected: list[ExpectedOutput]
    input_data: dict[str, torch.Tensor]

    def fresh_inputs(self) -> dict[str, Any]:
        """New input streams over cloned data: a stream's consumed-once state lives on the
        ``Stream`` object, so running a second program on the same instance needs new ones."""
        from stepsmith import step

        with step.Session(binding=dict(self.binding.values)):
            return {name: step.Stream.input(name, s.dtype, tuple(s.shape), s.data.clone())
                    for name, s in self.inputs.items()}


def generate(info: StreamInfo, gen: Any, values: dict[str, int], g: torch.Generator) -> torch.Tensor:
    """Draw the tensor of one input/parameter in its stream layout (float64)."""
    shape = dt.data_shape(info.dtype, info.dims, values)
    kind = gen.kind
    f64 = torch.float64
    if kind == "torch.rand":
        out = torch.rand(shape, generator=g, dtype=f64)
    elif kind == "torch.randn":
        out = torch.randn(shape, generator=g, dtype=f64)
    elif kind == "torch.ones":
        out = torch.ones(shape, dtype=f64)
    elif kind == "torch.zeros":
        out = torch.zeros(shape, dtype=f64)
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
        f = dt.fields(info.dtype)[field]
        dims = ", ".join(str(d) for d in info.dims)
        raise task.locator.error(
            path, f"output {info.name!r} field {field} ({f} on dims [{dims}]) must be laid out as "
                  f"{expected_shape} (outermost dim first, then the reversed buffer shape), but the "
                  f"snippet produced shape {tuple(value.shape)}", cls=TaskReferenceError)
    return value.to(dtype)


def build_instance(task: Task, binding: Binding, dtype: torch.dtype) -> Instance:
    """See ``Task.instantiate``."""
    from stepsmith import step

    base = dict(binding.values)
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
    for info, out_spec in zip(task.output_infos, task.spec.outputs, strict=True):
        vals = []
        for j, (snippet, f) in enumerate(zip(out_spec.data_transform, dt.fields(info.dtype),
                                             strict=True)):
            ns = dict(env)
            ns["input_data"] = {k: v.clone() for k, v in input_data.items()}
            value = eval_snippet(snippet, ns, (*info.path, "data_transform", j), task.locator)
            vals.append(_check_layout(value, info, j, dt.data_shape(f, info.dims, values), task, dtype))
        expected.append(ExpectedOutput(
            name=info.name, dtype=dt.to_step(info.dtype, symbols),
            shape=tuple(d.to_step(symbols) for d in info.dims), values=tuple(vals),
            concrete_shape=tuple(d.evaluate(values) for d in info.dims)))

    fn_env = dict(env)
    fn_env["input_data"] = input_data
    namespace: dict[str, Any] = {"step": step, **symbols, **{f"{k}_value": v for k, v in values.items()}}
    for f, info in zip(task.spec.fns, task.fn_infos, strict=True):
        try:
            namespace[f.func_name] = step.Fn.from_source(
                name=f.name, apply_src=f.apply, input_dtype=dt.to_step(info.input_dtype, symbols),
                output_dtype=dt.to_step(info.output_dtype, symbols), init=f.init,
                func_name=f.func_name, namespace=fn_env)
        except step.StepError as exc:
            raise task.locator.error(info.path, f"cannot build fn {f.name!r}: {exc}",
                                     cls=TaskReferenceError) from exc
    for k, v in env.items():  # plain-int globals such as E_value stay visible to programs
        if k.endswith("_value") and isinstance(v, int) and k not in namespace:
            namespace[k] = v

    inputs: dict[str, Any] = {}
    with step.Session(binding=dict(values)):
        for info in task.input_infos:
            inputs[info.name] = step.Stream.input(
                info.name, dt.to_step(info.dtype, symbols),
                tuple(d.to_step(symbols) for d in info.dims), input_data[info.name].clone())
    return Instance(task.name, binding, namespace, inputs, expected, input_data)
