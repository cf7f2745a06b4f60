"""Compiling and running STeP programs (an `impl` body): the one core under the verifier's
executor (`stepsmith.verify.execute`, which adds the allow-list, the task's instance and the
sandbox), the documentation examples, the demo, the bench and the tests."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import CodeType
from typing import Any

import torch

from stepsmith.step.dims import Dim
from stepsmith.step.dtypes import Multihot, elem_dims, fields_of, parse_dtype
from stepsmith.step.errors import StepArgumentError
from stepsmith.step.fn import Fn
from stepsmith.step.registry import Example, FnSpec
from stepsmith.step.session import AffineMode, Executor, Session
from stepsmith.step.stream import Stream


def namespace_for(binding: Mapping[str, int], fns: Iterable[Fn] = ()) -> dict[str, Any]:
    """`{"step": step, <SYM>: Dim, "<SYM>_value": int, <func_name>: Fn, "torch": torch}`."""
    from stepsmith import step

    ns: dict[str, Any] = {"step": step, "torch": torch}
    for k, v in binding.items():
        ns[k] = Dim.sym(k)
        ns[f"{k}_value"] = int(v)
    for fn in fns:
        ns[fn.func_name] = fn
    return ns


IMPL_FILENAME = "<stepsmith-impl>"


def compile_body(body: str, params: Sequence[str], filename: str = IMPL_FILENAME) -> CodeType:
    """`def impl(<params>):` + the body, every line indented (program line n is code line
    n + 1, which tracebacks map back). Raises what `compile` raises; the verifier words it."""
    header = f"def impl({', '.join(params)}):\n"
    return compile(header + textwrap.indent(body, "    ", lambda _line: True), filename, "exec",
                   dont_inherit=True)


def define_impl(code: CodeType, namespace: dict[str, Any]) -> Callable[..., Any]:
    """Execute the compiled definition in `namespace` (the program's globals) and return it."""
    exec(code, namespace)  # noqa: S102 - defines `impl`; untrusted code only runs in a worker
    impl: Callable[..., Any] = namespace["impl"]
    return impl


def call_impl(impl: Callable[..., Any], inputs: Callable[[], Mapping[str, Stream]], *,
              binding: Mapping[str, int], executor: Executor = "fast",
              affine: AffineMode = "strict") -> tuple[Any, list[str]]:
    """Call `impl` on the streams `inputs()` builds, both inside one `Session`: (its return
    value, the affine warnings). Raises whatever the program raises."""
    with Session(binding=dict(binding), executor=executor, affine=affine) as sess:
        result = impl(**inputs())
        warnings = [str(w) for w in sess.warnings]
    return result, warnings


def compile_impl(body: str, params: Sequence[str], namespace: dict[str, Any],
                 filename: str = IMPL_FILENAME) -> Callable[..., Any]:
    """A trusted program (docs, examples) compiled and defined in `namespace`."""
    return define_impl(compile_body(textwrap.dedent(body), params, filename), namespace)


def fns_from_specs(specs: Iterable[FnSpec], namespace: dict[str, Any]) -> list[Fn]:
    return [Fn.from_source(name=s.func_name, apply_src=s.apply, input_dtype=s.input_dtype,
                           output_dtype=s.output_dtype, init=s.init, func_name=s.func_name,
                           namespace=namespace) for s in specs]


def random_input(
    name: str, dtype: str, dims: Sequence[str | int], binding: Mapping[str, int],
    gen: torch.Generator, data_dtype: torch.dtype = torch.float32,
) -> Stream:
    """A program input with random data of the documented layout (Multihot: random 0/1 rows)."""
    from stepsmith.step.dims import dim

    dt = parse_dtype(dtype)
    shape = tuple(dim(d) for d in dims)
    outer = tuple(reversed([d.evaluate(binding) for d in shape]))
    tensors = []
    for f in fields_of(dt):
        sh = outer + tuple(d.evaluate(binding) for d in elem_dims(f))
        if isinstance(f, Multihot) or (hasattr(f, "elem") and isinstance(f.elem, Multihot)):
            tensors.append(torch.randint(0, 2, sh, generator=gen).to(data_dtype))
        else:
            tensors.append(torch.randn(sh, generator=gen, dtype=data_dtype))
    data = tensors[0] if len(tensors) == 1 else tuple(tensors)
    return Stream.input(name, dt, shape, data)


def run_example(ex: Example, executor: Executor = "fast", seed: int = 0,
                data_dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """Run a registry example; returns (program output data, reference value)."""
    gen = torch.Generator().manual_seed(seed)
    ns = namespace_for(ex.binding)
    fns = fns_from_specs(ex.fns, ns)
    for fn in fns:
        ns[fn.func_name] = fn
    impl = compile_impl(ex.program, [n for n, _, _ in ex.inputs], ns)
    inputs: dict[str, Stream] = {}

    def make_inputs() -> dict[str, Stream]:
        inputs.update({n: random_input(n, dt, dims, ex.binding, gen, data_dtype)
                       for n, dt, dims in ex.inputs})
        return inputs

    out, _ = call_impl(impl, make_inputs, binding=ex.binding, executor=executor)
    tensors = {n: s.data for n, s in inputs.items()}
    if not isinstance(out, Stream):
        raise StepArgumentError(f"example must return one stream, returned {type(out).__name__}")
    ref_ns = {**{k: v for k, v in ns.items() if k.endswith("_value")}, "torch": torch, **tensors}
    reference = eval(ex.reference, ref_ns)  # noqa: S307 - registry-owned expression
    return out.data, reference
