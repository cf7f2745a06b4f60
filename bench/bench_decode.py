"""Seconds per sample on the local model: typed decoding vs unconstrained, in one run.

For each task, the proposer prompt is sampled `-n` times in each mode (default: unconstrained,
then typed; same seeds, temperature, max tokens). A mode is `CONSTRAIN[+SEARCH][:REFERENCE]`,
so `--modes typed:full,typed:compact` compares the two system prompts under typed decoding and
`--modes typed+prefix,typed+deepen` the two searches (the simulator as judge). A `/noreuse`
suffix turns off the reuse of undone lines' KV cells (`--modes typed+deepen/noreuse,typed+deepen`
times that reuse: same seeds, evaluated tokens printed). Prints per-mode median and p90
seconds per sample, output tokens, how many samples verify and their failure kinds, the first
call of the process (prompt reading, served from the on-disk prefix state when present) and
the ratio of medians.

    python bench/bench_decode.py --model qwen2.5-coder-1.5b --tasks gemm_bias_relu,norm_rmsnorm_rows -n 2
    python bench/bench_decode.py --model qwen2.5-coder-0.5b --modes typed:full,typed:compact
    python bench/bench_decode.py --model qwen2.5-coder-0.5b --modes typed+prefix,typed+deepen \
        --tasks index_binary_predictor,index_softmax_top1,index_softmax_top2
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter

from stepsmith.agents.agent import has_return
from stepsmith.agents.decoding.judge import SEARCH_MODES, searched_constraint
from stepsmith.agents.extract import Unparsable, extract_impl
from stepsmith.agents.prompts import compose_messages
from stepsmith.llm import LLMClient
from stepsmith.llm.llama_decode import _Session
from stepsmith.llm.store import CallStore
from stepsmith.tasks.suite import get_task
from stepsmith.verify import default_pool, verify


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--tasks", default="gemm_bias_relu,norm_rmsnorm_rows,bmm_mnk_mkd")
    ap.add_argument("-n", type=int, default=2)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument("--modes", default="none,typed",
                    help="comma list of CONSTRAIN[+SEARCH][:REFERENCE]; the ratio is last / first")
    args = ap.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if len(modes) < 2:
        ap.error("--modes needs at least two modes to compare")

    # refresh: every mode calls the model (two modes may share a cache key, e.g. /noreuse)
    client = LLMClient(f"llamacpp:{args.model}", store=CallStore(":memory:"),
                       cache_mode="refresh")
    t0 = time.perf_counter()
    first = client.sample_sync([{"role": "user", "content": "Say OK."}], max_tokens=2)
    print(f"model load + first call: {time.perf_counter() - t0:.1f}s ({first.text!r})")
    rows: dict[str, list[tuple[float, int, str]]] = {m: [] for m in modes}
    first_call: dict[str, float] = {}
    for name in args.tasks.split(","):
        task = get_task(name.strip())
        for mode in modes:
            head, _, flag = mode.partition("/")
            if flag not in ("", "noreuse"):
                ap.error(f"mode {mode!r}: the only suffix is /noreuse")
            _Session.REUSE_UNDONE = flag != "noreuse"
            spec, _, reference = head.partition(":")
            constrain, _, search = spec.partition("+")
            if search not in ("", *SEARCH_MODES):
                ap.error(f"mode {mode!r}: search must be one of {', '.join(SEARCH_MODES)}")
            msgs = compose_messages(task, [], with_ir=True, reference=reference or "full")
            c, _ = searched_constraint(task, constrain, search or "none", default_pool())
            for i in range(args.n):
                t = time.perf_counter()
                comp = client.sample_sync(msgs, temperature=args.temperature, sample_index=i,
                                          max_tokens=args.max_tokens, constraint=c,
                                          task=task.name)
                dt = time.perf_counter() - t
                first_call.setdefault(mode, dt)
                try:
                    impl = extract_impl(comp.text)
                except Unparsable:
                    kind = "unparsable"
                else:
                    if c is not None and not has_return(impl):
                        kind = "incomplete"  # as the agent records a typed answer without return
                    else:
                        v = verify(task, impl)
                        kind = "PASS" if v.passed else (v.kind.value if v.kind else "fail")
                rows[mode].append((dt, comp.output_tokens, kind))
                evaluated = _evaluated(client, comp.call_id)
                print(f"{name:28s} {mode:13s} #{i} {dt:6.1f}s {comp.output_tokens:4d} tok "
                      f"{kind} {evaluated}", flush=True)
    med = {}
    for mode, rs in rows.items():
        secs = sorted(r[0] for r in rs)
        med[mode] = statistics.median(secs)
        p90 = secs[min(len(secs) - 1, int(0.9 * len(secs)))]
        kinds = Counter(r[2] for r in rs)
        print(f"{mode}: median {med[mode]:.1f}s/sample, p90 {p90:.1f}s, "
              f"mean output {statistics.mean(r[1] for r in rs):.0f} tok, "
              f"first call {first_call[mode]:.1f}s, kinds {dict(kinds)}")
    print(f"{modes[-1]} / {modes[0]} median seconds per sample: "
          f"{med[modes[-1]] / med[modes[0]]:.2f}x")


def _evaluated(client: LLMClient, call_id: int | None) -> str:
    """`N evaluated, M reused` from the call's decoding trace (typed answers only)."""
    call = client.store.get(call_id) if call_id is not None else None
    head = str((call or {}).get("trace") or "").split("\n", 1)[0]
    parts = [p.strip() for p in head.split(",") if "evaluated" in p or "reused" in p]
    return ", ".join(parts)


if __name__ == "__main__":
    main()
