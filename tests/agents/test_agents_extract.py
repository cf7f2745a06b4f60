"""Answer extraction on messy model output: every answer either yields the program or Unparsable."""

from __future__ import annotations

import pytest

from stepsmith.agents import Unparsable, extract_impl

PROGRAM = "E1 = step.Map(fn=fn_exp).apply(E0)\nE2 = step.Accum(fn=fn_sum, b=1).apply(E1)\nreturn E2"

GOOD_ANSWERS = {
    "yaml_block": "```yaml\nimpl: |-\n  E1 = step.Map(fn=fn_exp).apply(E0)\n  E2 = step.Accum(fn=fn_sum, b=1).apply(E1)\n  return E2\n```",
    "yaml_block_with_prose": (
        "Sure! Here is the program. We first exponentiate, then sum.\n\n"
        "```yaml\nimpl: |-\n  E1 = step.Map(fn=fn_exp).apply(E0)\n  E2 = step.Accum(fn=fn_sum, b=1).apply(E1)\n  return E2\n```\n"
        "This sums over the innermost dimension K. Let me know if you need more!"
    ),
    "python_block_bare": "```python\nE1 = step.Map(fn=fn_exp).apply(E0)\nE2 = step.Accum(fn=fn_sum, b=1).apply(E1)\nreturn E2\n```",
    "def_wrapper": (
        '```python\nfrom stepsmith import step\n\ndef impl(E0):\n    """Sum of exp."""\n'
        "    E1 = step.Map(fn=fn_exp).apply(E0)\n    E2 = step.Accum(fn=fn_sum, b=1).apply(E1)\n    return E2\n```"
    ),
    "def_wrapper_with_usage_line": (
        "```python\ndef impl(E0):\n    E1 = step.Map(fn=fn_exp).apply(E0)\n"
        "    E2 = step.Accum(fn=fn_sum, b=1).apply(E1)\n    return E2\n\nout = impl(E0)\n```"
    ),
    "last_block_wins": (
        "First attempt:\n```yaml\nimpl: |-\n  E1 = step.Map(fn=fn_wrong).apply(E0)\n  return E1\n```\n"
        "Wait, that is wrong. Corrected:\n```yaml\nimpl: |-\n  E1 = step.Map(fn=fn_exp).apply(E0)\n"
        "  E2 = step.Accum(fn=fn_sum, b=1).apply(E1)\n  return E2\n```"
    ),
    "trailing_explanation_block_skipped": (
        "```yaml\nimpl: |-\n  E1 = step.Map(fn=fn_exp).apply(E0)\n  E2 = step.Accum(fn=fn_sum, b=1).apply(E1)\n  return E2\n```\n"
        "Output shape:\n```\nStrm<fp32, rank 0, [M]>\n```"
    ),
    "unclosed_fence": "```yaml\nimpl: |-\n  E1 = step.Map(fn=fn_exp).apply(E0)\n  E2 = step.Accum(fn=fn_sum, b=1).apply(E1)\n  return E2\n",
    "no_fence_impl_field": "impl: |-\n  E1 = step.Map(fn=fn_exp).apply(E0)\n  E2 = step.Accum(fn=fn_sum, b=1).apply(E1)\n  return E2",
    "no_fence_bare_code_with_prose": (
        "Here is my solution:\nE1 = step.Map(fn=fn_exp).apply(E0)\nE2 = step.Accum(fn=fn_sum, b=1).apply(E1)\nreturn E2\n"
        "Hope this helps."
    ),
    "tabs": "```python\ndef impl(E0):\n\tE1 = step.Map(fn=fn_exp).apply(E0)\n\tE2 = step.Accum(fn=fn_sum, b=1).apply(E1)\n\treturn E2\n```",
    "crlf_line_endings": "```yaml\r\nimpl: |-\r\n  E1 = step.Map(fn=fn_exp).apply(E0)\r\n  E2 = step.Accum(fn=fn_sum, b=1).apply(E1)\r\n  return E2\r\n```",
    "impl_not_indented": "```yaml\nimpl: |-\nE1 = step.Map(fn=fn_exp).apply(E0)\nE2 = step.Accum(fn=fn_sum, b=1).apply(E1)\nreturn E2\n```",
    "full_task_echoed": (
        "```yaml\ninputs:\n  - name: E0\n    dtype: fp32\n    dims: [K, M]\nimpl: |-\n  E1 = step.Map(fn=fn_exp).apply(E0)\n"
        "  E2 = step.Accum(fn=fn_sum, b=1).apply(E1)\n  return E2\noutputs:\n  - name: O\n```"
    ),
    "impl_in_python_fence": "```python\nimpl: |-\n  E1 = step.Map(fn=fn_exp).apply(E0)\n  E2 = step.Accum(fn=fn_sum, b=1).apply(E1)\n  return E2\n```",
    "def_inside_impl_field": (
        "```yaml\nimpl: |-\n  def impl(E0):\n      E1 = step.Map(fn=fn_exp).apply(E0)\n"
        "      E2 = step.Accum(fn=fn_sum, b=1).apply(E1)\n      return E2\n```"
    ),
    "think_section": (
        "<think>maybe ```python\nreturn E0\n``` no</think>\n```yaml\nimpl: |-\n  E1 = step.Map(fn=fn_exp).apply(E0)\n"
        "  E2 = step.Accum(fn=fn_sum, b=1).apply(E1)\n  return E2\n```"
    ),
    "tilde_fence_and_import": (
        "~~~python\nimport step\nE1 = step.Map(fn=fn_exp).apply(E0)\nE2 = step.Accum(fn=fn_sum, b=1).apply(E1)\nreturn E2\n~~~"
    ),
    "indented_whole_block": (
        "Answer:\n    ```yaml\n    impl: |-\n      E1 = step.Map(fn=fn_exp).apply(E0)\n"
        "      E2 = step.Accum(fn=fn_sum, b=1).apply(E1)\n      return E2\n    ```"
    ),
    "trailing_whitespace_and_blank_lines": (
        "```yaml\nimpl: |-\n\n  E1 = step.Map(fn=fn_exp).apply(E0)   \n\n  E2 = step.Accum(fn=fn_sum, b=1).apply(E1)\n  return E2   \n\n```"
    ),
}


@pytest.mark.parametrize("name", sorted(GOOD_ANSWERS))
def test_extracts_the_program(name: str) -> None:
    body = extract_impl(GOOD_ANSWERS[name])
    lines = [line for line in body.split("\n") if line.strip()]
    assert lines == PROGRAM.split("\n"), body


def test_keeps_comments_and_inner_blank_lines() -> None:
    answer = (
        "```yaml\nimpl: |-\n  # exp first\n  E1 = step.Map(fn=fn_exp).apply(E0)\n\n  return E1\n```"
    )
    assert extract_impl(answer) == "# exp first\nE1 = step.Map(fn=fn_exp).apply(E0)\n\nreturn E1"


def test_inline_impl_scalar() -> None:
    answer = 'impl: "E1 = step.Map(fn=fn_exp).apply(E0)\\nreturn E1"'
    assert extract_impl(answer) == "E1 = step.Map(fn=fn_exp).apply(E0)\nreturn E1"


def test_multiline_call_inside_def() -> None:
    answer = (
        "```python\ndef impl(x, sel):\n    parts = step.Partition(N=E_value).apply(\n        (x, sel)\n    )\n"
        "    return parts[0]\n```"
    )
    assert (
        extract_impl(answer)
        == "parts = step.Partition(N=E_value).apply(\n    (x, sel)\n)\nreturn parts[0]"
    )


BAD_ANSWERS = {
    "empty": "",
    "whitespace": "   \n\n ",
    "prose_only": "I am not sure how to write this program in STeP. Could you clarify the shapes?",
    "syntax_error_in_block": "```yaml\nimpl: |-\n  E1 = step.Map(fn=fn_exp).apply(E0\n  return E1\n```",
    "empty_block": "```yaml\n```",
    "only_pass": "```python\ndef impl(E0):\n    pass\n```",
    "empty_impl_field": "```yaml\nimpl: |-\n```",
}


@pytest.mark.parametrize("name", sorted(BAD_ANSWERS))
def test_malformed_answers_raise_unparsable_with_a_reason(name: str) -> None:
    with pytest.raises(Unparsable) as info:
        extract_impl(BAD_ANSWERS[name])
    assert info.value.reason
    assert "impl: |-" in info.value.reason  # the fix is part of the message


def test_syntax_error_reason_names_the_line() -> None:
    with pytest.raises(Unparsable) as info:
        extract_impl(BAD_ANSWERS["syntax_error_in_block"])
    assert "syntax error" in info.value.reason


def test_non_string_is_unparsable_not_a_crash() -> None:
    with pytest.raises(Unparsable):
        extract_impl(None)  # type: ignore[arg-type]


def test_long_rambling_answer_still_yields_its_program() -> None:
    # (its speed is measured by bench/fuzz_answers.py, not asserted here)
    prose = "\n".join(f"Step {i}: consider the value x = {i} in the stream." for i in range(400))
    body = extract_impl(prose + "\n" + GOOD_ANSWERS["yaml_block"])
    assert body.endswith("return E2")
