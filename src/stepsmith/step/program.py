"""Compiling and running STeP programs (an `impl` body): the language's own core under the
verifier's one executor (`stepsmith.verify.execute`, which adds the allow-list, the task's
instance and the sandbox); the registry examples' test runs them too."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping, Sequence
from types import CodeType
from typing import Any

from stepsmith.step.session import AffineMode, Executor, Session
from stepsmith.step.stream import Stream

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
