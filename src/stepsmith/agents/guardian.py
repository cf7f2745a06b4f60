"""The guardian: enforce the affine (consume-once) rule on a proposed program.

Modes: `llm` (the paper's: one call with the affine-rule prompt and three examples), `rule`
(the deterministic Copy repair of `stepsmith.step.affine`, which never corrupts a correct
program), `llm+rule` (the LLM first, then the rule on its output), `none`.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stepsmith.agents.extract import Unparsable, extract_impl
from stepsmith.step.docs import AFFINE_RULE

if TYPE_CHECKING:
    from stepsmith.llm.client import LLMClient

__all__ = [
    "GUARDIAN_MODES",
    "LLM_GUARDIAN_MODES",
    "GuardianResult",
    "guardian_messages",
    "rule_repair",
    "same_program",
    "run_guardian",
]

GUARDIAN_MODES = ("llm", "rule", "llm+rule", "none")
LLM_GUARDIAN_MODES = ("llm", "llm+rule")  # the modes that call the model (and cost tokens)

# The rule in the words the proposer reads too (`step.docs`), indented as a YAML block.
_RULE = textwrap.indent(AFFINE_RULE, "  ")
_SYSTEM = f"""\
# STeP affine-rule guardian
role: |-
  You check programs written in STeP (Streaming Tensor Programs) for the affine rule and fix
  violations. You change nothing else: keep every primitive, fn and argument as it is.
affine_rule: |-
{_RULE}
where_to_copy: |-
  Insert the Copies right after the stream is created (at the top for an input stream).
examples:
  - case: a stream used twice gets one Copy
    program: |-
      E1 = step.Map(fn=fn_square).apply(E0)
      E2 = step.Map(fn=fn_mul).apply((E0, E1))
      return E2
    corrected: |-
      E0_a, E0_b = step.Copy().apply(E0)
      E1 = step.Map(fn=fn_square).apply(E0_a)
      E2 = step.Map(fn=fn_mul).apply((E0_b, E1))
      return E2
  - case: a stream used three times gets two chained Copies
    program: |-
      E1 = step.Accum(fn=fn_max, b=1).apply(E0)
      E2 = step.RepeatRef().apply((E1, E0))
      E3 = step.Map(fn=fn_sub).apply((E0, E2))
      return E3
    corrected: |-
      E0_a, E0_t = step.Copy().apply(E0)
      E0_b, E0_c = step.Copy().apply(E0_t)
      E1 = step.Accum(fn=fn_max, b=1).apply(E0_a)
      E2 = step.RepeatRef().apply((E1, E0_b))
      E3 = step.Map(fn=fn_sub).apply((E0_c, E2))
      return E3
  - case: no stream is reused, so the program is returned unchanged
    program: |-
      E1 = step.Map(fn=fn_exp).apply(E0)
      E2 = step.Accum(fn=fn_sum, b=1).apply(E1)
      return E2
    corrected: |-
      E1 = step.Map(fn=fn_exp).apply(E0)
      E2 = step.Accum(fn=fn_sum, b=1).apply(E1)
      return E2
answer_format: |-
  Reply with the corrected program body in one fenced YAML code block:
  ```yaml
  impl: |-
    ...
  ```
"""


def guardian_messages(impl: str, params: list[str]) -> list[dict]:
    """The guardian's chat: the fixed affine prompt, then the program to check."""
    body = textwrap.indent(impl.rstrip(), "  ", lambda _line: True)
    user = (
        f"Check this program (the body of `def impl({', '.join(params)}):`) and fix every "
        "stream that is consumed more than once. If no stream is reused, return it unchanged.\n"
        f"```yaml\nimpl: |-\n{body}\n```"
    )
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": user}]


def rule_repair(impl: str, params: list[str] | None) -> str:
    """The deterministic Copy insertion of the STeP core; the input on any internal failure."""
    from stepsmith.step import affine

    try:
        repaired = affine.repair(impl, params=params)
    except Exception:  # noqa: BLE001 - repair must never turn a sample into a crash
        return impl
    return repaired if repaired.strip() else impl


def same_program(a: str, b: str) -> bool:
    """Equal syntax trees (comments and layout ignored); text equality if either fails to parse."""
    try:
        da = ast.dump(ast.parse(textwrap.dedent(a)), include_attributes=False)
        db = ast.dump(ast.parse(textwrap.dedent(b)), include_attributes=False)
    except (SyntaxError, ValueError):
        return a.strip() == b.strip()
    return da == db


@dataclass
class GuardianResult:
    """The guarded program and what producing it cost."""

    impl: str
    changed: bool
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    note: str = ""  # why the LLM guardian's answer was not used, if it was not


async def run_guardian(
    mode: str,
    impl: str,
    params: list[str],
    *,
    client: LLMClient | None = None,
    temperature: float | None = None,
    max_tokens: int = 1024,
    sample_index: int = 0,
    task_name: str = "",
    tag: str = "guardian",
) -> GuardianResult:
    """Apply guardian `mode` to `impl`. LLM failures keep the unguarded program (with a note)."""
    if mode not in GUARDIAN_MODES:
        raise ValueError(f"guardian mode must be one of {', '.join(GUARDIAN_MODES)}; got {mode!r}")
    result = GuardianResult(impl=impl, changed=False)
    if mode in LLM_GUARDIAN_MODES:
        from stepsmith.llm import InfrastructureError, LLMError

        if client is None:
            raise ValueError(f"guardian mode {mode!r} asks the model: pass client=")

        try:
            completion = await client.sample(
                guardian_messages(impl, params),
                temperature=temperature,
                max_tokens=max_tokens,
                sample_index=sample_index,
                task=task_name,
                tag=tag,
            )
        except InfrastructureError:
            raise  # the model could not be asked: the run stops (see stepsmith.llm.errors)
        except LLMError as exc:
            result.note = f"guardian call failed ({exc}); kept the proposer's program"
        else:
            result.calls += 1
            result.input_tokens += completion.input_tokens
            result.output_tokens += completion.output_tokens
            result.cost_usd += completion.cost_usd
            try:
                result.impl = extract_impl(completion.text)
            except Unparsable as exc:
                result.note = (
                    f"guardian answer unparsable ({exc.reason}); kept the proposer's program"
                )
    if mode in ("rule", "llm+rule"):
        result.impl = rule_repair(result.impl, params)
    result.changed = not same_program(impl, result.impl)
    if not result.changed:
        result.impl = impl  # cosmetic rewrites do not count: verify what the proposer wrote
    return result
