"""Compiling and running STeP programs (an `impl` body): the one core under the verifier's
executor (`stepsmith.verify.execute`, which adds the allow-list, the task's instance and the
sandbox), the documentation examples, the demo, the bench and the tests."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import CodeType
from typing import Any

import torch

from stepsmith.step.dims import Dim, dim
from stepsmith.step.dtypes import Multihot, elem_dims, fields_of, parse_dtype
from stepsmith.step.errors import StepArgumentError
from stepsmith.step.fn import Fn
from stepsmith.step.registry import Example, FnSpec
from stepsmith.step.session import AffineMode, Executor, Session
from stepsmith.step.stream import Stream


def namespace_for(binding: Mapping[str, int]) -> dict[str, Any]:
    """`{"step": step, <SYM>: Dim, "<SYM>_value": int, "torch": torch}`."""
    from stepsmith import step

    ns: dict[str, Any] = {"step": step, "torch": torch}
    for k, v in binding.items():
        ns[k] = Dim.sym(k)
        ns[f"{k}_value"] = int(v)
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


def trusted_impl(program: str, inputs: Iterable[tuple[str, str, Sequence[str]]],
                 fns: Iterable[FnSpec], binding: Mapping[str, int],
                 extra: Mapping[str, Any] | None = None, filename: str = IMPL_FILENAME,
                 ) -> tuple[Callable[..., Any], dict[str, Any]]:
    """A trusted program (docs, examples) and its fns, compiled in the namespace of `binding`
    plus the `extra` names its fns read: (the impl, that namespace)."""
    ns = {**namespace_for(binding), **(extra or {})}
    ns.update({s.func_name: Fn.from_source(s.func_name, s.apply, s.input_dtype, s.output_dtype,
                                           s.init, namespace=ns) for s in fns})
    code = compile_body(textwrap.dedent(program), [n for n, _, _ in inputs], filename)
    return define_impl(code, ns), ns


def random_fields(dtype: str, dims: Sequence[str | int], binding: Mapping[str, int],
                  gen: torch.Generator, data_dtype: torch.dtype = torch.float32,
                  ) -> tuple[torch.Tensor, ...]:
    """Random data of the documented layout, one tensor per field (Multihot: 0/1 rows)."""
    outer = tuple(reversed([dim(d).evaluate(binding) for d in dims]))
    tensors = []
    for f in fields_of(parse_dtype(dtype)):
        sh = outer + tuple(d.evaluate(binding) for d in elem_dims(f))
        if isinstance(f, Multihot) or (hasattr(f, "elem") and isinstance(f.elem, Multihot)):
            tensors.append(torch.randint(0, 2, sh, generator=gen).to(data_dtype))
        else:
            tensors.append(torch.randn(sh, generator=gen, dtype=data_dtype))
    return tuple(tensors)


def run_example(ex: Example, executor: Executor = "fast", seed: int = 0,
                data_dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """Run a registry example; returns (program output data, reference value)."""
    gen = torch.Generator().manual_seed(seed)
    impl, ns = trusted_impl(ex.program, ex.inputs, ex.fns, ex.binding)
    inputs: dict[str, Stream] = {}

    def make_inputs() -> dict[str, Stream]:
        for n, dt, dims in ex.inputs:
            fields = random_fields(dt, dims, ex.binding, gen, data_dtype)
            inputs[n] = Stream.input(n, dt, dims, fields[0] if len(fields) == 1 else fields)
        return inputs

    out, _ = call_impl(impl, make_inputs, binding=ex.binding, executor=executor)
    tensors = {n: s.data for n, s in inputs.items()}
    if not isinstance(out, Stream):
        raise StepArgumentError(f"example must return one stream, returned {type(out).__name__}")
    ref_ns = {**{k: v for k, v in ns.items() if k.endswith("_value")}, "torch": torch, **tensors}
    reference = eval(ex.reference, ref_ns)  # noqa: S307 - registry-owned expression
    return out.data, reference
