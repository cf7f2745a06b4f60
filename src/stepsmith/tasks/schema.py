"""Pydantic schema of a task file: the paper's public fields plus our optional extensions.

Only the *shape* of the document is checked here; cross-field rules (dtype grammar, fns used
by ``impl``, symbols with a value, one ``data_transform`` per tuple field) live in ``loader``.
Unknown keys are rejected so a typo such as ``dtpye`` is reported instead of silently ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DimValue = int | str
InitValue = int | float | str


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class DataGen(_Model):
    """Mapping form of ``data_gen`` (``{kind: multihot, min: 1, max: 2}``)."""

    kind: Literal["torch.rand", "torch.randn", "torch.ones", "torch.zeros", "binary", "multihot"]
    min: int | None = None
    max: int | None = None
    scale: float | None = None


class StreamSpec(_Model):
    """An entry of ``inputs`` or ``parameters``."""

    name: str
    dtype: str
    dims: list[DimValue] = Field(min_length=1)
    data_gen: DataGen
    description: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _fold_data_gen(cls, data: Any) -> Any:
        """Accept ``data_gen: multihot`` with sibling ``min``/``max`` keys (the paper's form)."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        gen = data.get("data_gen")
        extra = {k: data.pop(k) for k in ("min", "max", "scale") if k in data}
        if isinstance(gen, str):
            data["data_gen"] = {"kind": gen, **extra}
        elif isinstance(gen, dict):
            data["data_gen"] = {**extra, **gen}
        elif extra:
            data.update(extra)  # let "extra inputs are not permitted" report them
        return data


class FnSpec(_Model):
    """An entry of ``fns``: a specialized function the program refers to by ``func_name``."""

    name: str
    func_name: str
    apply: str
    input_dtype: str | list[str]
    output_dtype: str | list[str]
    init: list[InitValue] | None = None
    description: str | None = None

    @field_validator("init", mode="before")
    @classmethod
    def _wrap_init(cls, v: Any) -> Any:
        return [v] if isinstance(v, int | float | str) and not isinstance(v, bool) else v


class OutputSpec(_Model):
    """An entry of ``outputs``; ``data_transform`` has one PyTorch snippet per tuple field."""

    name: str
    dtype: str | list[str]
    dims: list[DimValue] = Field(min_length=1)
    data_transform: list[str] = Field(min_length=1)

    @field_validator("data_transform", mode="before")
    @classmethod
    def _wrap_snippet(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


# The verifier's default tolerance (rationale in `stepsmith.verify.tolerance`); defined here, at
# the lower layer, so the task schema and the verifier cannot disagree.
DEFAULT_RTOL = 1e-8
DEFAULT_ATOL = 1e-10


class Tolerance(_Model):
    """Comparison tolerance, the verifier's policy: element i passes iff
    ``|out_i - ref_i| <= atol + rtol * max(1, max_j |ref_j|)`` (one magnitude per output field).
    Values written in the file override the defaults."""

    rtol: float = Field(DEFAULT_RTOL, ge=0)
    atol: float = Field(DEFAULT_ATOL, ge=0)


class TaskSpec(_Model):
    """A whole task document."""

    test_name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    global_: str | None = Field(None, alias="global")
    inputs: list[StreamSpec] = Field(min_length=1)
    parameters: list[StreamSpec] = []
    fns: list[FnSpec] = []
    outputs: list[OutputSpec] = Field(min_length=1)
    impl: str | None = None
    description: str = ""
    group: str | None = None
    bindings: list[dict[str, int | str]] | dict[str, int] | None = None
    tolerance: Tolerance = Tolerance()

    @field_validator("global_", mode="before")
    @classmethod
    def _join_global(cls, v: Any) -> Any:
        return "\n".join(v) if isinstance(v, list) and all(isinstance(x, str) for x in v) else v
