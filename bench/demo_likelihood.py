"""How much a prompt makes the right program likely: log p(reference | prompt), per arm.

Sampling measures a prompt change with a few noisy draws per task (minutes each on 2 CPU
cores). This measures it without sampling: the model reads each prompt once and scores the
task's reference program token by token (teacher forcing, the unconstrained distribution),
so two prompts are compared on the same program with no draw in between. Arms:

- `none`: no demonstration (iteration 0 of self-improvement, `single`);
- `demos`: the run's demonstrations (what its next iteration shows);
- `sibling`: the same, plus the nearest solved sibling repeated right before the task.

Prints per task the reference's log-probability under each arm and the mean change per
token against `none`; higher is better. By default the tasks are the ones the run left
unsolved (the ones a later iteration works on).

    python bench/demo_likelihood.py --run 20261203-081245-9f08 --model qwen2.5-coder-1.5b
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Sequence

import numpy as np

from stepsmith.agents.decoding.statements import INDENT, PREFIX, program_lines
from stepsmith.agents.prompts import compose_messages, nearest_sibling
from stepsmith.demos import DemoRecord, visible_demos
from stepsmith.improve.store import ExperienceStore
from stepsmith.llm import prefix_cache
from stepsmith.llm.backend_llamacpp import chat_prompt, load_llama, resolve_model
from stepsmith.llm.llama_decode import _Session, lltokenizer
from stepsmith.tasks.suite import get_task
from stepsmith.tasks.task import Task

ARMS = ("none", "demos", "sibling")


def score(llm, tok, path: str, messages: list[dict], target: str) -> tuple[float, int]:
    """log p(target | messages + the answer's opening), and the target's token count."""
    prompt = chat_prompt(llm, messages) + PREFIX
    tokens = llm.tokenize(prompt.encode(), add_bos=False, special=True)
    prefix_cache.prepare(llm, path, tokens,
                         prefix_cache.system_prefix_len(llm, messages, tokens, chat_prompt))
    session = _Session(llm, tok, 0.0, 0, 1 << 20, threading.Event())
    session.feed_prompt(tokens)
    full = llm.tokenize((prompt + target).encode(), add_bos=False, special=True)
    assert full[: len(tokens)] == tokens, "the target must not merge with the prompt's end"
    answer = full[len(tokens):]
    assert session.logits is not None and 0 < len(answer) <= llm.n_batch
    # one batch over the answer with logits at every position (llama.cpp keeps only the last
    # row through Llama.eval); the cells past the prompt are dropped by the next eval
    n_past = int(llm.n_tokens)
    llm._ctx.kv_cache_seq_rm(-1, n_past, -1)
    rows = [session.logits]
    if len(answer) > 1:
        llm._batch.set_batch(batch=answer[:-1], n_past=n_past, logits_all=True)
        llm._ctx.decode(llm._batch)
        rows += list(np.ctypeslib.as_array(llm._ctx.get_logits(),
                                           shape=(len(answer) - 1, llm.n_vocab())))
    total = 0.0
    for row, t in zip(rows, answer, strict=True):
        logits = row.astype(np.float64)
        top = logits.max()
        total += float(logits[t] - top - np.log(np.exp(logits - top).sum()))
    return total, len(answer)


def arm_messages(arm: str, task: Task, demos: Sequence[DemoRecord]) -> list[dict]:
    shown = [] if arm == "none" else visible_demos(task, demos)
    return compose_messages(task, shown, sibling=arm == "sibling")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="run whose demonstrations the arms show")
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--tasks", default="", help="comma-separated (default: the run's unsolved)")
    ap.add_argument("--arms", default=",".join(ARMS))
    args = ap.parse_args()
    store = ExperienceStore()
    demos = store.demos(args.run, active_only=True)
    if not demos:
        raise SystemExit(f"run {args.run} has no demonstrations")
    solved = {d.task_name for d in demos}
    names = ([n for n in args.tasks.split(",") if n] if args.tasks
             else [n for n in store.find_run(args.run).config.get("task_names", [])
                   if n not in solved])
    tasks = [get_task(n) for n in names]
    arms = [a for a in args.arms.split(",") if a]
    if bad := sorted(set(arms) - set(ARMS)):
        raise SystemExit(f"unknown arm(s) {bad}; arms are {', '.join(ARMS)}")
    path = resolve_model(args.model)
    llm, lock, _ = load_llama(path)
    tok = lltokenizer(llm, str(path))
    print(f"{len(demos)} demonstrations of run {args.run}; {len(tasks)} tasks; arms {arms}")
    results: dict[tuple[str, str], tuple[float, int]] = {}
    with lock:
        for arm in arms:  # arm by arm: tasks of one arm share the longest prompt prefix
            for task in tasks:
                if arm == "sibling" and nearest_sibling(task, visible_demos(task, demos)) is None:
                    continue
                target = "".join(f"{INDENT}{line}\n" for line in program_lines(task.impl or ""))
                t0 = time.perf_counter()
                results[(arm, task.name)] = score(llm, tok, str(path),
                                                  arm_messages(arm, task, demos), target)
                lp, n = results[(arm, task.name)]
                print(f"  {arm:8s} {task.name:26s} logp {lp:8.2f} ({n} tokens, "
                      f"{time.perf_counter() - t0:.0f} s)", flush=True)
    print(f"\n{'task':26s} " + " ".join(f"{a:>9s}" for a in arms) + "  sibling")
    for task in tasks:
        row = [results.get((a, task.name)) for a in arms]
        near = nearest_sibling(task, visible_demos(task, demos))
        print(f"{task.name:26s} " + " ".join(f"{r[0]:9.2f}" if r else f"{'-':>9s}" for r in row)
              + f"  {near.task_name if near else '-'}")
    if "none" in arms:
        for arm in arms:
            if arm == "none":
                continue
            deltas = [(results[(arm, t.name)][0] - results[("none", t.name)][0])
                      / results[("none", t.name)][1] for t in tasks if (arm, t.name) in results]
            if deltas:
                better = sum(d > 0 for d in deltas)
                print(f"{arm} vs none: mean {statistics.mean(deltas):+.3f} nats per token, "
                      f"higher on {better} of {len(deltas)} tasks")
    if "demos" in arms and "sibling" in arms:
        deltas = [(results[("sibling", t.name)][0] - results[("demos", t.name)][0])
                  / results[("demos", t.name)][1] for t in tasks if ("sibling", t.name) in results]
        if deltas:
            print(f"sibling vs demos: mean {statistics.mean(deltas):+.3f} nats per token, "
                  f"higher on {sum(d > 0 for d in deltas)} of {len(deltas)} tasks")


if __name__ == "__main__":
    main()
