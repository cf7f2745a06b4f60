"""Test helpers: programs for the tasks in data/ (correct ones and ones that break the affine
rule), answer formatting for scripted models, and an in-process verifier double."""

from __future__ import annotations

from typing import Any

R0 = "E1 = step.Map(fn=fn_exp).apply(A)\nE2 = step.Accum(fn=fn_sum, b=1).apply(E1)\nreturn E2"
R0_WRONG = "E2 = step.Accum(fn=fn_sum, b=1).apply(A)\nreturn E2"  # forgot the exp

R1_BAD = "E1 = step.Map(fn=fn_exp).apply(A)\nE2 = step.Map(fn=fn_mul).apply((A, E1))\nreturn E2"
R1_FIX = (
    "A_a, A_b = step.Copy().apply(A)\nE1 = step.Map(fn=fn_exp).apply(A_a)\n"
    "E2 = step.Map(fn=fn_mul).apply((A_b, E1))\nreturn E2"
)

R2_BAD = (
    "P = step.Map(fn=fn_mul).apply((A, B))\nS = step.Map(fn=fn_add3).apply((P, A, B))\nreturn S"
)
R2_FIX = (
    "A_a, A_b = step.Copy().apply(A)\nB_a, B_b = step.Copy().apply(B)\n"
    "P = step.Map(fn=fn_mul).apply((A_a, B_a))\nS = step.Map(fn=fn_add3).apply((P, A_b, B_b))\nreturn S"
)

R3_BAD = "return step.Map(fn=fn_mul3).apply((A, A, A))"
R3_FIX = (
    "A_a, A_t = step.Copy().apply(A)\nA_b, A_c = step.Copy().apply(A_t)\n"
    "return step.Map(fn=fn_mul3).apply((A_a, A_b, A_c))"
)

# task file stem -> (program that reuses streams, the guardian's correct fix)
CASES = {
    "reuse0": (R0, R0),
    "reuse1": (R1_BAD, R1_FIX),
    "reuse2": (R2_BAD, R2_FIX),
    "reuse3": (R3_BAD, R3_FIX),
}


def yaml_answer(impl: str) -> str:
    """An answer the way the prompt asks for it."""
    body = "\n".join("  " + line for line in impl.strip().split("\n"))
    return f"Here is the program.\n```yaml\nimpl: |-\n{body}\n```\n"


def is_guardian_call(messages: list[dict]) -> bool:
    return messages[0]["content"].startswith("# STeP affine-rule guardian")


def program_in(message: str) -> str:
    """The impl shown in a guardian request (so a scripted guardian can echo or edit it)."""
    from stepsmith.agents import extract_impl

    return extract_impl(message)


class CountingVerifier:
    """The real verification logic, in-process (trusted test programs), counting calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def verify(self, task: Any, src: str) -> Any:
        from stepsmith.verify import verify_in_process

        self.calls.append(src)
        return verify_in_process(task, src)
