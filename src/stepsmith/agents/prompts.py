"""The proposer's prompt: STeP reference (system), then demonstrations, then the task (user).

Layout is chosen for prefix caching (provider prompt caching, llama.cpp prefix reuse): the
system message is the fixed reference generated from the primitive registry and the
demonstration set — identical for every task of a method —; the user message starts with the
self-improvement demonstrations (identical for every task of an iteration) and ends with the
task. Prompts are YAML-structured like the paper's.

Leakage: the reference's worked examples come only from `demo_tasks()`; a demonstration set
task that is also a benchmark task (same name or AST-isomorphic impl) is an error, and a task is
never shown its own solution (`LeakageError`).
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Sequence

from stepsmith.agents import reference
from stepsmith.agents.reference import IDIOMS, Example, LeakageError, reference_examples
from stepsmith.agents.render import compact_ir, ir_document, python_scaffold
from stepsmith.demos import Demonstration, isomorphic, leaks, task_ir
from stepsmith.step.docs import AFFINE_RULE, IDIOM_TITLES, primitive_reference
from stepsmith.step.docs import LANGUAGE as _LANGUAGE
from stepsmith.step.docs import yaml_block as _block
from stepsmith.step.docs import yaml_indent as _indent
from stepsmith.tasks.task import Task

__all__ = [
    "Demonstration",
    "LeakageError",
    "compose_messages",
    "base_prompt",
    "render_demonstrations",
    "render_task",
    "estimate_tokens",
    "reference_examples",
    "clear_caches",
    "REFERENCE_STYLES",
]

#: `full`: the paper's reference, a worked example for every primitive and idiom (~7k tokens).
#: `compact`: the same language notes, primitive descriptions, idioms and rule without the
#: worked examples (~2.9k tokens): faster on a small local model, but the 0.5B model solved
#: half as much with it (README, "--reference compact"), so `full` is the default.
REFERENCE_STYLES = ("full", "compact")


def estimate_tokens(text: str) -> int:
    """Rough token count (len/4), the same rule as the LLM layer's estimate."""
    return len(text) // 4


# --------------------------------------------------------------------------------------------
# Fixed reference text
# --------------------------------------------------------------------------------------------

_ROLE = """\
You are an expert programmer of reconfigurable dataflow accelerators. You write ML operators in
STeP (Streaming Tensor Programs), a language where a program is a graph of primitives connected
by streams; every primitive runs concurrently and every stream is a hardware FIFO. Your program
is checked by a simulator against a PyTorch reference at several sizes."""

_ANSWER_IR = """\
Reply with the program body (not the whole task) in one fenced YAML code block, one statement
per line, using the task's own input names and fns and ending with `return`:
```yaml
impl: |-
  ...
```"""

_ANSWER_PY = """\
Reply with the complete function `def impl(...)` (signature as in the scaffold, body written
with STeP primitives using the scaffold's fns, ending with `return`) in one fenced Python code
block:
```python
def impl(...):
    ...
```"""


def _example_yaml(example: Example, spaces: int, with_ir: bool) -> list[str]:
    pad = " " * spaces
    if example.ir is None:
        if not with_ir and example.fallback_py:
            return [_block("example", example.fallback_py, spaces)]
        if example.fallback:
            return [
                f"{pad}example:  # a small worked program",
                _indent(example.fallback, spaces + 2),
            ]
        return []
    if with_ir:
        return [
            f"{pad}example:  # a solved task using it",
            f"{pad}  task:",
            _indent(compact_ir(example.ir), spaces + 4),
            _block("impl", example.impl or "", spaces + 2),
        ]
    scaffold = python_scaffold(ir_document(example.ir), example.impl or "", compact=True)
    return [_block("example", scaffold, spaces)]


def _language_without_ir() -> str:
    """The language notes, worded for tasks given as Python scaffolds instead of YAML IR."""
    return (
        _LANGUAGE.replace("The task's `data_transform` computes", "The scaffold's test computes")
        .replace(
            "Specialized functions (`fns`) come with the task",
            "Specialized functions come with the task",
        )
        .replace("without `init` is stateless", "taking (input) is stateless")
        .replace("with `init` it is stateful", "taking (state, input) is stateful")
        .replace(
            "equal the fn's `input_dtype`; its output type is the fn's\n  `output_dtype`",
            "equal the fn's input type; its output type is the fn's\n  output type",
        )
    )


@functools.lru_cache(maxsize=32)
def base_prompt(
    with_ir: bool = True, exclude: tuple[str, ...] = (), style: str = "full"
) -> str:
    """The system message: role, language, each primitive (with a worked example unless
    `style` is compact), idioms, rule."""
    if style not in REFERENCE_STYLES:
        raise ValueError(f"reference style must be one of {', '.join(REFERENCE_STYLES)}; got {style!r}")
    examples = {e.topic: e for e in reference_examples(exclude)} if style == "full" else {}
    registry = reference._registry()
    parts = [
        "# STeP programming reference",
        _block("role", _ROLE, 0),
        _block("language", _LANGUAGE if with_ir else _language_without_ir(), 0),
        "primitives:",
    ]
    shown = {name: _example_yaml(e, 4, with_ir) for name, e in examples.items() if name in registry}
    parts.append(primitive_reference(list(registry), style="prompt", examples=shown))
    parts.append("idioms:")
    for idiom, text in IDIOMS.items():
        parts.append(f"  - name: {IDIOM_TITLES[idiom]}")
        parts.append(_block("description", text, 4))
        example = examples.get(idiom)
        if example is not None:
            parts += _example_yaml(example, 4, with_ir)
    parts.append(_block("affine_rule", AFFINE_RULE, 0))
    parts.append(_block("answer_format", _ANSWER_IR if with_ir else _ANSWER_PY, 0))
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------------------------
# Demonstrations and the task
# --------------------------------------------------------------------------------------------


def render_demonstrations(demonstrations: Sequence[Demonstration], with_ir: bool = True) -> str:
    """The self-improvement demonstrations, in the given order, without task names."""
    if not demonstrations:
        return ""
    if with_ir:
        lines = [
            "# Solved tasks: verified programs for other tasks. Learn from their style.",
            "demonstrations:",
        ]
        for demo in demonstrations:
            lines.append("  - task:")
            lines.append(_indent(demo.task_ir.strip(), 6))
            lines.append(_block("impl", demo.impl, 4))
        return "\n".join(lines) + "\n\n"
    lines = ["# Solved tasks: verified programs for other tasks. Learn from their style."]
    for number, demo in enumerate(demonstrations, start=1):
        lines += [
            f"## Solved task {number}",
            "```python",
            python_scaffold(ir_document(demo.task_ir), demo.impl),
            "```",
        ]
    return "\n".join(lines) + "\n"


def nearest_sibling(task: Task, demonstrations: Sequence[Demonstration]) -> Demonstration | None:
    """The demonstration of the task's own group whose task reads most like it (None when no
    sibling is solved): the one a small model should copy from."""
    siblings = [d for d in demonstrations if d.group == task.group and d.task_name != task.name]
    if not siblings:
        return None
    ir = task_ir(task)
    return max(siblings, key=lambda d: difflib.SequenceMatcher(None, d.task_ir, ir).ratio())


def render_sibling(demo: Demonstration, with_ir: bool = True) -> str:
    """The nearest sibling again, right before the task: with a dozen demonstrations (7k
    tokens) the relevant one can sit far from where a small model writes."""
    if with_ir:
        return ("# The solved task most like yours (shown above too):\n"
                "sibling:\n  task:\n" + _indent(demo.task_ir.strip(), 4) + "\n"
                + _block("impl", demo.impl, 2) + "\n\n")
    return ("# The solved task most like yours (shown above too):\n```python\n"
            + python_scaffold(ir_document(demo.task_ir), demo.impl) + "\n```\n\n")


def render_task(task: Task, with_ir: bool = True) -> str:
    """The task to solve, last in the prompt."""
    ir = task_ir(task)
    if with_ir:
        return (
            "# Your task: write `impl` for this task.\n"
            "task:\n" + _indent(ir, 2) + "\n\n"
            "Answer with `impl: |-` in a ```yaml code block (the body only; the input streams "
            f"{', '.join(task.input_names)} are the function's parameters)."
        )
    return (
        "# Your task: write the body of `impl` so that `test_impl` passes.\n"
        "```python\n" + python_scaffold(ir_document(ir), None) + "\n```\n\n"
        "Answer with the complete `def impl(...)` in a ```python code block."
    )


def _check_leakage(task: Task, demonstrations: Sequence[Demonstration]) -> None:
    """The library's leakage rule (`stepsmith.demos.leaks`), as an error naming the culprit."""
    for index, demo in enumerate(demonstrations):
        if not leaks(task, demo):
            continue
        if demo.task_name == task.name:
            raise LeakageError(
                f"demonstration {index} is task '{task.name}''s own solution; a task must never "
                "be shown its own solution (drop it from the demonstrations for this task)"
            )
        raise LeakageError(
            f"demonstration {index} (from task '{demo.task_name}') is AST-isomorphic to the "
            f"reference program of task '{task.name}'; showing it would leak the answer"
        )


@functools.lru_cache(maxsize=512)
def _self_exclusion(name: str, own_impl: str | None) -> tuple[str, ...]:
    """Demo-set tasks that must not appear in this task's reference (itself, or isomorphic)."""
    return tuple(
        sorted(d.name for d in reference._demo_tasks() if d.name == name or isomorphic(d.impl, own_impl))
    )


def clear_caches() -> None:
    """Forget cached reference prompts (after the demonstration set or registry changed)."""
    reference_examples.cache_clear()
    base_prompt.cache_clear()
    _self_exclusion.cache_clear()


def compose_messages(
    task: Task,
    demonstrations: Sequence[Demonstration],
    *,
    with_ir: bool = True,
    reference: str = "full",
    sibling: bool = False,
) -> list[dict]:
    """Chat messages for one proposer call: [system: reference, user: demonstrations (+ the
    nearest sibling again, with `sibling`) + task]."""
    _check_leakage(task, demonstrations)
    exclude = _self_exclusion(task.name, task.impl) if reference == "full" else ()
    system = base_prompt(with_ir, exclude, reference)
    near = nearest_sibling(task, demonstrations) if sibling else None
    user = (render_demonstrations(demonstrations, with_ir)
            + (render_sibling(near, with_ir) if near is not None else "")
            + render_task(task, with_ir))
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]
