"""Shared helpers for the STeP core tests (imported as `step_helpers`)."""

from __future__ import annotations

import torch

from stepsmith import step

BINDING = {"M": 3, "N": 4, "K": 5, "D": 6, "E": 3}


def fn(name: str, src: str, ind: object, outd: object, init: object = None) -> step.Fn:
    """An Fn from a YAML-style body, seeing the binding's `<SYM>_value` ints."""
    ns = {f"{k}_value": v for k, v in BINDING.items()}
    return step.Fn.from_source(name=name, apply_src=src, input_dtype=ind, output_dtype=outd,
                               init=init, func_name=name, namespace=ns)


def inp(name: str, dtype: str, dims: list[str], data: torch.Tensor) -> step.Stream:
    return step.Stream.input(name, dtype, dims, data)
