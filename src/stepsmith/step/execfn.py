"""Running fn bodies: one element at a time (oracle) or batched with `torch.func.vmap` (fast).

The batched path must be semantically identical to the per-element one, so when vmap cannot
run a body (data-dependent Python control flow, `.item()`, randomness, ...) we fall back to a
per-element loop for that fn and remember it (`fn.vmap_ok = False`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from stepsmith.step.errors import StepDtypeError, StepError, StepRuntimeError
from stepsmith.step.fn import Fn

Shape = tuple[int | None, ...]

try:  # the internals of torch.func.vmap, minus its per-call pytree/validation overhead
    from torch._functorch.vmap import _add_batch_dim, _remove_batch_dim, vmap_increment_nesting
except ImportError:  # pragma: no cover - other torch versions: the public API
    vmap_increment_nesting = None  # type: ignore[assignment]  # checked before every use


def vmap_call(func: Any, args: Sequence[torch.Tensor], n: int) -> tuple[torch.Tensor, ...]:
    """`torch.func.vmap(func)(*args)` over dim 0 of every arg (batch size n), for a func that
    returns a tuple of tensors. Same semantics (randomness='error'); ~4x less overhead."""
    if vmap_increment_nesting is None:  # pragma: no cover
        return tuple(torch.func.vmap(func)(*args))
    with vmap_increment_nesting(n, "error") as level:
        outs = func(*(_add_batch_dim(a, 0, level) for a in args))
        return tuple(_remove_batch_dim(o, level, n, 0) for o in outs)


@dataclass(frozen=True)
class FnCtx:
    """Who is calling the fn, for error messages (the stream's display name is computed only
    when an error is reported: it searches the caller's frames for the variable name)."""

    primitive: str
    source: Any  # the stream being processed (a Stream/SType) or a preformatted name
    out_shapes: tuple[Shape, ...]  # expected per-field element shapes (None = unknown dim)
    dtype: torch.dtype

    @property
    def stream(self) -> str:
        if isinstance(self.source, str):
            return self.source
        from stepsmith.step.stream import display

        return display(self.source)


def _as_tensor(x: Any, fn: Fn, i: int, ctx: FnCtx) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        if x.dtype != ctx.dtype:
            x = x.to(ctx.dtype)
        return x
    if isinstance(x, bool | int | float) or (hasattr(x, "__float__") and not hasattr(x, "__len__")):
        return torch.tensor(float(x), dtype=ctx.dtype)
    raise StepRuntimeError(
        f"fn {fn.func_name!r} returned a {type(x).__name__} as output field {i}",
        primitive=ctx.primitive, stream=ctx.stream,
        expected="a torch.Tensor or a Python number per output field", found=repr(x)[:80],
    )


def normalize(fn: Fn, out: Any, ctx: FnCtx) -> tuple[torch.Tensor, ...]:
    """Body result -> one tensor per output field (bare tensor/number = one field)."""
    if isinstance(out, list | tuple):
        items = list(out)
    else:
        items = [out]
    if len(items) != fn.n_out:
        raise StepRuntimeError(
            f"fn {fn.func_name!r} returned {len(items)} value(s) but its output type "
            f"{fn.output_dtype} has {fn.n_out} field(s)",
            primitive=ctx.primitive, stream=ctx.stream,
            expected=f"a list of {fn.n_out} tensor(s)", found=f"{len(items)} value(s)",
        )
    return tuple(_as_tensor(x, fn, i, ctx) for i, x in enumerate(items))


def _check_shapes(fn: Fn, outs: Sequence[torch.Tensor], ctx: FnCtx, batch: int) -> None:
    for i, (t, want) in enumerate(zip(outs, ctx.out_shapes, strict=True)):
        got = tuple(t.shape[batch:])
        if len(got) != len(want) or any(w not in (None, g) for w, g in zip(want, got, strict=True)):
            wanted = "(" + ", ".join("?" if w is None else str(w) for w in want) + ")"
            field = fn.output_dtype if fn.n_out == 1 else f"field {i} of {fn.output_dtype}"
            raise StepDtypeError(
                f"fn {fn.func_name!r} returned an element of shape {got} for output {field}",
                primitive=ctx.primitive, stream=ctx.stream,
                expected=f"element shape {wanted} (Scalar = (), Buffer = reversed buffer shape)",
                found=f"shape {got}",
            )


def _is_resource_error(e: BaseException) -> bool:
    """Out-of-memory must surface as such (the verifier reports it), never as a fn error."""
    if isinstance(e, MemoryError):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and ("memory" in text or "allocate" in text)


def _try_vmap(fn: Fn, func: Any, args: Sequence[torch.Tensor], lead: tuple[int, ...],
              ctx: FnCtx) -> tuple[torch.Tensor, ...] | None:
    """`vmap_call` over a batch of lead[0] with outputs broadcast to the `lead` dims and
    checked, or None (and `fn.vmap_ok = False`) when vmap cannot run this body, so the caller
    falls back to per-element calls. Step errors and out-of-memory propagate."""
    try:
        outs = vmap_call(func, args, lead[0])
    except StepError:
        raise
    except Exception as e:  # noqa: BLE001 - vmap cannot run this body: per-element fallback
        if _is_resource_error(e):
            raise
        fn.vmap_ok = False
        return None
    outs = tuple(o if o.shape[: len(lead)] == lead else o.expand(*lead, *o.shape) for o in outs)
    _check_shapes(fn, outs, ctx, len(lead))
    return outs


def call_one(
    fn: Fn, inp: Sequence[torch.Tensor], state: Sequence[torch.Tensor] | None, ctx: FnCtx
) -> tuple[torch.Tensor, ...]:
    """Apply the body to ONE element (the oracle's, and the fallback's, unit of work)."""
    try:
        raw = fn.call(list(inp), None if state is None else list(state))
    except StepError:
        raise
    except Exception as e:  # noqa: BLE001 - user body failure becomes an LLM-readable error
        if _is_resource_error(e):
            raise
        raise StepRuntimeError(
            f"fn {fn.func_name!r} raised {type(e).__name__}: {e}",
            primitive=ctx.primitive, stream=ctx.stream,
            hint=f"inputs are {[tuple(t.shape) for t in inp]}"
            + ("" if state is None else f", state {[tuple(t.shape) for t in state]}")
            + f" for {fn.signature()}",
        ) from None
    outs = normalize(fn, raw, ctx)
    _check_shapes(fn, outs, ctx, 0)
    return outs


def known_shapes(ctx: FnCtx) -> tuple[tuple[int, ...], ...] | None:
    """The output element shapes when every dim is bound in the Session (None: some are not,
    and dropping them changed the shapes)."""
    shapes = tuple(tuple(d for d in s if d is not None) for s in ctx.out_shapes)
    return shapes if shapes == ctx.out_shapes else None


def empty_outputs(fn: Fn, inputs: Sequence[torch.Tensor], state: Sequence[torch.Tensor] | None,
           ctx: FnCtx) -> tuple[torch.Tensor, ...]:
    """Outputs for a batch of 0 elements (e.g. an expert that received no chunks)."""
    shapes = known_shapes(ctx)
    if shapes is not None:
        return tuple(torch.zeros((0, *s), dtype=ctx.dtype) for s in shapes)
    zero = [torch.zeros(x.shape[1:], dtype=x.dtype) for x in (*inputs, *(state or ()))]
    one = call_one(fn, zero[: len(inputs)], None if state is None else zero[len(inputs):], ctx)
    return tuple(torch.zeros((0, *o.shape), dtype=ctx.dtype) for o in one)


def call_each(fn: Fn, inputs: Sequence[torch.Tensor], state: Sequence[torch.Tensor] | None,
              ctx: FnCtx) -> tuple[torch.Tensor, ...]:
    """Apply the body to every element of a batch, one call per element: the oracle's way, and
    the fast path's when vmap cannot run the body."""
    n = inputs[0].shape[0]
    if n == 0:
        return empty_outputs(fn, inputs, state, ctx)
    rows = [call_one(fn, [x[b] for x in inputs], None if state is None else [s[b] for s in state],
                     ctx) for b in range(n)]
    try:
        return tuple(torch.stack([r[i] for r in rows]) for i in range(fn.n_out))
    except RuntimeError as e:
        raise StepDtypeError(
            f"fn {fn.func_name!r} returned elements of different shapes ({e})",
            primitive=ctx.primitive, stream=ctx.stream,
            expected=f"every element shaped like its declared type {fn.output_dtype}",
            found="varying shapes",
        ) from None


def call_batched(
    fn: Fn, inputs: Sequence[torch.Tensor], state: Sequence[torch.Tensor] | None, ctx: FnCtx
) -> tuple[torch.Tensor, ...]:
    """Apply the body to every element of a batch (leading dim of every input/state tensor)."""
    n = inputs[0].shape[0] if inputs else (state[0].shape[0] if state else 0)
    if n == 0:
        return empty_outputs(fn, inputs, state, ctx)
    if fn.vmap_ok:
        n_state = 0 if state is None else len(state)

        def per_elem(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
            st = None if state is None else list(args[:n_state])
            return normalize(fn, fn.call(list(args[n_state:]), st), ctx)

        outs = _try_vmap(fn, per_elem, [*(state or ()), *inputs], (n,), ctx)
        if outs is not None:
            return outs
    return call_each(fn, inputs, state, ctx)


def init_state(fn: Fn, ctx: FnCtx, batch: tuple[int, ...]) -> list[torch.Tensor]:
    """Init tensors (per output field) broadcast over `batch` — 0, 1, -1, +-inf, zeros/ones."""
    shapes = known_shapes(ctx)
    if shapes is None:
        raise StepRuntimeError(
            f"cannot build the init state of fn {fn.func_name!r}: its output type "
            f"{fn.output_dtype} has a buffer dim whose symbol is not bound in the Session",
            primitive=ctx.primitive, stream=ctx.stream,
            hint="run the program inside step.Session(binding={...}) with every size symbol",
        )
    assert fn.init is not None
    return [torch.full(batch + s, v if not math.isnan(v) else 0.0, dtype=ctx.dtype)
            for v, s in zip(fn.init, shapes, strict=True)]


def fold_batched(
    fn: Fn, xs: Sequence[torch.Tensor], state: Sequence[torch.Tensor], ctx: FnCtx,
    emit_all: bool,
) -> tuple[torch.Tensor, ...]:
    """Sequential fold over axis 1 of every `xs` tensor (B, K, *elem), batched over axis 0.

    The whole K-step loop for one outer position runs inside ONE vmap call (vmap's entry cost
    is paid once, not per step). Returns the final state (B, *out) or, with `emit_all`, every
    state (B, K, *out). Falls back to step-wise per-element calls when vmap cannot run the body.
    """
    b, k = xs[0].shape[0], xs[0].shape[1]
    if b > 0 and k > 0 and fn.vmap_ok:
        n_state = len(state)

        def one(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
            st = list(args[:n_state])
            steps = list(zip(*(x.unbind(0) for x in args[n_state:]), strict=True))
            hist: list[tuple[torch.Tensor, ...]] = []
            for elems in steps:
                st = list(normalize(fn, fn.call(list(elems), st), ctx))
                if emit_all:
                    hist.append(tuple(st))
            if emit_all:
                return tuple(torch.stack([h[f] for h in hist]) for f in range(len(st)))
            return tuple(st)

        outs = _try_vmap(fn, one, [*state, *xs], (b, k) if emit_all else (b,), ctx)
        if outs is not None:
            return outs
    cur = list(state)
    hist = []
    for i in range(k):
        cur = list(call_batched(fn, [x[:, i] for x in xs], cur, ctx))
        if emit_all:
            hist.append(cur)
    if not emit_all:
        return tuple(cur)
    if k == 0:
        return tuple(s.reshape(b, 0, *s.shape[1:]) for s in cur)
    return tuple(torch.stack([h[f] for h in hist], dim=1) for f in range(len(cur)))
