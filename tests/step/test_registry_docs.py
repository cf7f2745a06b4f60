"""The registry's worked examples run (both executors) and match their references, so the
generated documentation cannot rot."""

from __future__ import annotations

import pytest
import torch

from stepsmith import step
from stepsmith.step.docs import (
    AFFINE_RULE,
    IDIOMS,
    LANGUAGE,
    primitive_entry,
    primitive_reference,
    primitives,
)
from stepsmith.step.dtypes import Multihot, elem_dims, fields_of
from stepsmith.step.program import call_impl, compile_body, define_impl
from stepsmith.step.session import Executor

PRIMITIVES = ["Map", "Zip", "Accum", "Scan", "Promote", "Flatten", "Reshape", "Bufferize",
              "Streamify", "Repeat", "RepeatRef", "Copy", "Identity", "Partition", "Merge"]


def run_example(ex: step.Example, executor: Executor = "fast",
                seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a registry example (trusted: the registry's own text) on random inputs of its
    documented layout: (the program's output data, its `reference` expression's value)."""
    gen = torch.Generator().manual_seed(seed)
    ns = {"step": step, "torch": torch, **{k: step.Dim.sym(k) for k in ex.binding},
          **{f"{k}_value": v for k, v in ex.binding.items()}}
    ns.update({s.func_name: step.Fn.from_source(s.func_name, s.apply, s.input_dtype,
                                                s.output_dtype, s.init, namespace=ns)
               for s in ex.fns})
    impl = define_impl(compile_body(ex.program, [n for n, _, _ in ex.inputs]), ns)
    data = {}
    for n, dt, dims in ex.inputs:
        outer = tuple(reversed([step.dim(d).evaluate(ex.binding) for d in dims]))
        fields = []
        for f in fields_of(step.parse_dtype(dt)):
            shape = outer + tuple(d.evaluate(ex.binding) for d in elem_dims(f))
            fields.append(torch.randint(0, 2, shape, generator=gen).float()
                          if isinstance(f, Multihot) else torch.randn(shape, generator=gen))
        data[n] = fields[0] if len(fields) == 1 else tuple(fields)
    out, _ = call_impl(impl, lambda: {n: step.Stream.input(n, dt, dims, data[n])
                                      for n, dt, dims in ex.inputs},
                       binding=ex.binding, executor=executor)
    assert isinstance(out, step.Stream), f"an example returns one stream, not {type(out)}"
    return out.data, eval(ex.reference, {"torch": torch, **data,  # noqa: S307 - registry text
                                         **{k: v for k, v in ns.items() if k.endswith("_value")}})


def test_registry_has_every_early_step_primitive() -> None:
    assert sorted(step.REGISTRY) == sorted(PRIMITIVES)
    assert [d.name for d in primitives()] == list(step.REGISTRY)  # one order, the registry's
    for name, d in step.REGISTRY.items():
        assert d.name == name and d.description and d.signature.count(name) >= 1
        assert getattr(step, name) is d.cls
        for rule in ("typing", "impl", "oracle"):  # each its own, not the base's
            assert getattr(d.cls, rule) is not getattr(step.Primitive, rule), (name, rule)


@pytest.mark.parametrize("executor", ["fast", "oracle"])
@pytest.mark.parametrize("name", PRIMITIVES)
def test_registry_example_runs_and_matches_reference(name: str, executor: str) -> None:
    ex = step.REGISTRY[name].example
    assert name in ex.program  # the example demonstrates its primitive
    for seed in (0, 1):
        out, ref = run_example(ex, executor=executor, seed=seed)
        assert out.shape == ref.shape
        torch.testing.assert_close(out, ref.to(out.dtype), atol=1e-5, rtol=1e-5)


def test_primitive_reference_markdown() -> None:
    md = primitive_reference()
    for name in PRIMITIVES:
        assert f"## {name}\n" in md
        assert step.REGISTRY[name].example.program.splitlines()[0] in md
    assert "Affine rule" in md and "innermost first" in md
    for prose in (LANGUAGE, AFFINE_RULE, *IDIOMS.values()):  # the language prose, kept once
        assert prose in md
    only = primitive_reference(["Accum"], preamble=False)
    assert only.startswith("## Accum") and "## Map" not in only


def test_reference_examples_are_valid_task_yaml() -> None:
    import re

    import yaml

    blocks = re.findall(r"```yaml\n(.*?)```", primitive_reference(), re.S)
    assert len(blocks) == len(PRIMITIVES)
    for blk in blocks:
        doc = yaml.safe_load(blk)
        assert doc["impl"] and doc["inputs"]
        for f in doc.get("fns", []):
            step.parse_dtype(f["input_dtype"])
            step.parse_dtype(f["output_dtype"])


def test_the_proposer_reference_is_rendered_here() -> None:
    """The README's claim: the prompt's language reference is `primitive_reference()`'s — its
    language notes, affine rule, idioms and each primitive's entry, in the registry's order."""
    import yaml

    from stepsmith.agents.prompts import base_prompt

    listing = primitive_reference(style="prompt")
    entries = yaml.safe_load("primitives:\n" + listing)["primitives"]
    assert [e["name"] for e in entries] == list(step.REGISTRY)
    assert all(e["usage"].split() == step.REGISTRY[e["name"]].signature.split() for e in entries)
    for with_ir in (True, False):
        prompt = base_prompt(with_ir)
        at = [prompt.index(primitive_entry(d)) for d in primitives()]
        assert at == sorted(at)  # every entry, in order
        for prose in (AFFINE_RULE, *IDIOMS.values()):
            assert all(line in prompt for line in prose.splitlines())
    assert all(line in base_prompt(True) for line in LANGUAGE.splitlines())
    with_example = primitive_reference(["Copy"], style="prompt", examples={"Copy": ["    x: 1"]})
    assert with_example == primitive_entry(step.REGISTRY["Copy"]) + "\n    x: 1"


@pytest.mark.parametrize("name", PRIMITIVES)
def test_constructor_takes_exactly_the_declared_parameters(name: str) -> None:
    """Constructor validation is generated from `params`: an undeclared keyword, or more
    positional arguments than declared parameters, is a StepArgumentError naming them."""
    d = step.REGISTRY[name]
    with pytest.raises(step.StepArgumentError) as info:
        d.cls(not_a_param=1)
    err = info.value
    assert "unknown parameter(s) not_a_param=" in str(err) and err.hint == d.usage
    assert all(p.name in (err.expected or "") for p in d.params)
    with pytest.raises(step.StepArgumentError, match="too many arguments"):
        d.cls(*range(len(d.params) + 1))
    with pytest.raises(TypeError):  # the keywords are the __init__'s own: no silent **kw
        d.cls.__init__.__wrapped__(object(), not_a_param=1)


def test_adding_a_primitive_is_one_class_and_one_decorator() -> None:
    """The block in docs/architecture.md, run as written, gives a primitive that every reader
    of the language knows at once: programs, constructor, allow-list, affine analysis, mutants,
    both references, the task grammar."""
    import re
    from pathlib import Path

    from stepsmith.agents.decoding.grammar import task_grammar
    from stepsmith.step.affine import check_source
    from stepsmith.tasks.suite import get_task
    from stepsmith.verify.allowlist import DisallowedConstruct, check_program
    from stepsmith.verify.mutants import mutants

    doc = (Path(__file__).parents[2] / "docs" / "architecture.md").read_text()
    (block,) = re.findall(r"### Adding a primitive\n.*?```python\n(.*?)```", doc, re.S)
    assert "Negate" not in step.REGISTRY
    try:
        exec(compile(block, "architecture.md", "exec"), {"__name__": "negate_doc"})  # noqa: S102
        d = step.REGISTRY["Negate"]
        assert step.Negate is d.cls and d.outputs == 1 and d.category == "elementwise"
        for executor in ("fast", "oracle"):
            out, ref = run_example(d.example, executor=executor, seed=0)
            torch.testing.assert_close(out, ref.to(out.dtype))
        with pytest.raises(step.StepArgumentError, match="unknown parameter"):
            step.Negate(k=1)
        program = "y = step.Negate().apply(x)\nreturn step.Negate().apply(y)\n"
        check_program(program)
        with pytest.raises(DisallowedConstruct, match="no parameter `k`"):
            check_program("return step.Negate(k=1).apply(x)\n")
        (v,) = check_source("a = step.Negate().apply(x)\nb = step.Negate().apply(x)\n", ["x"])
        assert v.name == "x" and v.count == 2
        drops = [m for m in mutants(program, ["x"]) if m.kind == "drop_primitive"]
        assert len(drops) == 2
        assert "## Negate\n" in primitive_reference()
        assert "  - name: Negate\n    usage: step.Negate().apply(s)" in primitive_reference(
            style="prompt")
        assert '"step.Negate(" ").apply(" argstream' in task_grammar(get_task("gemm_bias_relu"))
    finally:
        step.REGISTRY.pop("Negate", None)
    assert not hasattr(step, "Negate")
