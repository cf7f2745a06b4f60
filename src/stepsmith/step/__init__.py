"""The STeP language: element types, symbolic dims, streams, specialized fns, the primitive
registry with fast (batched) and oracle (per-element) executors, and the Session.

Programs see this module as `step` (`step.Accum(fn=fn_sum, b=1).apply(E3)`).
"""

# the primitives register themselves (`@primitive`); `step.<Name>` finds them in the registry
from stepsmith.step import primitives  # noqa: F401
from stepsmith.step.dims import Dim, dim, fresh_dim
from stepsmith.step.dtypes import Buffer, ElemType, Multihot, Scalar, TupleType, parse_dtype
from stepsmith.step.errors import (
    StepAffineError,
    StepArgumentError,
    StepDtypeError,
    StepError,
    StepFnKindError,
    StepRankError,
    StepRuntimeError,
    StepShapeError,
)
from stepsmith.step.fn import Fn
from stepsmith.step.registry import REGISTRY, Example, FnSpec, Primitive, PrimitiveDef
from stepsmith.step.session import Session, current_session
from stepsmith.step.stream import Stream, SType

__all__ = [
    "Dim", "dim", "fresh_dim",
    "Scalar", "Multihot", "Buffer", "TupleType", "ElemType", "parse_dtype",
    "StepError", "StepRankError", "StepShapeError", "StepDtypeError", "StepFnKindError",
    "StepArgumentError", "StepAffineError", "StepRuntimeError",
    "Fn", "Stream", "SType", "Session", "current_session",
    "REGISTRY", "PrimitiveDef", "Primitive", "Example", "FnSpec",
    *REGISTRY,  # the primitives, spelled as in programs: step.Map, step.Accum, ...
]

from stepsmith.step import docs, program  # noqa: E402  (step.docs.primitive_reference())

__all__ += ["docs", "program"]


def __getattr__(name: str) -> object:
    """`step.affine` (static affine analysis, written in its own module) is imported lazily;
    `step.<Name>` is the primitive registered under that name."""
    if name == "affine":
        import importlib

        return importlib.import_module("stepsmith.step.affine")
    if name in REGISTRY:
        return REGISTRY[name].cls
    raise AttributeError(f"module 'stepsmith.step' has no attribute {name!r}")
