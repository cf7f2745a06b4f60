"""Fuzz the answer -> program -> verdict pipeline with hostile, mutated model answers.

No LLM: a scripted backend plays the model and answers with mutations of correct answers
(nesting bombs, 200 MB literals, C-level spin loops, alias bombs, truncation, NUL bytes, ...).
Every answer goes through the real pipeline a run uses: `LLMClient` (SQLite call log),
`Agent.attempt` (extraction, rule guardian, one repair turn with the verifier's feedback) and
a sandboxed `VerifierPool`. Prints crashes (exceptions escaping a sample; target 0), peak
memory of the main process and of the workers, and the largest message stored or fed back.

    python bench/fuzz_answers.py                 # 1,000 answers
    python bench/fuzz_answers.py -n 200 --seed 7
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import resource
import sqlite3
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

TASKS = (
    "demo_idiom_placeholder_colsum",
    "demo_map_silu",
    "demo_accum_block_sumsq",
    "demo_partition_expert_sums",
)

Mutation = Callable[[str, random.Random], str]
MAX_FUZZ_CHARS = 1_000_000  # larger than any answer extraction reads (so the cap is exercised)


def yaml_answer(impl: str) -> str:
    body = "\n".join("  " + line for line in impl.splitlines())
    return f"Here is the program.\n```yaml\nimpl: |-\n{body}\n```\n"


def seed_answers(impl: str) -> list[str]:
    """Correct answers in the shapes models use."""
    indented = "\n".join("    " + line for line in impl.splitlines())
    return [
        yaml_answer(impl),
        f"```python\n{impl}\n```",
        f"Sure! The idea is to stream rows.\n\n```python\ndef impl(E0):\n{indented}\n```\nDone.",
        "<think>plan</think>\n```yaml\nimpl: |-\n" + "\n".join(
            "  " + line for line in impl.splitlines()) + "\n```",
    ]


# --------------------------------------------------------------------------------- mutations


def _lines(text: str) -> list[str]:
    return text.split("\n")


def _insert_line(text: str, rng: random.Random, line: str) -> str:
    lines = _lines(text)
    at = rng.randrange(len(lines) + 1)
    indent = re.match(r"[ \t]*", lines[min(at, len(lines) - 1)]).group(0) if lines else ""
    lines.insert(at, indent + line)
    return "\n".join(lines)


def nest_brackets(text: str, rng: random.Random) -> str:
    k = rng.choice([60, 300, 600, 3000])
    at = rng.randrange(len(text) + 1)
    return text[:at] + "[" * k + "]" * k + text[at:]


def minus_chain(text: str, rng: random.Random) -> str:
    return _insert_line(text, rng, "x = " + "-" * rng.choice([200, 3000, 20000]) + "1")


def binop_chain(text: str, rng: random.Random) -> str:
    return _insert_line(text, rng, "x = " + "+".join(["1"] * rng.choice([150, 2000, 30000])))


def call_chain(text: str, rng: random.Random) -> str:
    k = rng.choice([100, 1000, 10000])
    return _insert_line(text, rng, rng.choice(["x = f" + "()" * k, "x = a" + ".b" * k,
                                               "x = " + "not " * k + "1"]))


def huge_value(text: str, rng: random.Random) -> str:
    """`b=1` -> `b='x'*10**8`: a 100 MB value that ends up in an error message."""
    big = rng.choice(["'x'*10**8", "'y'*10**7", "[0]*10**7", "10**18"])
    out, n = re.subn(r"\b(b|n|N|S)=([^,)]+)", lambda m: f"{m.group(1)}={big}", text, count=1)
    return out if n else _insert_line(text, rng, f"z = step.Repeat(n={big})")


def spin(text: str, rng: random.Random) -> str:
    return _insert_line(text, rng, rng.choice(["y = max(range(10**18))",
                                               "for i in range(10**12):\n    j = i"]))


def truncate(text: str, rng: random.Random) -> str:
    return text[: rng.randrange(len(text) + 1)]


_HOSTILE_CHARS = ["\x00", "\r", "\t", "\ud800", "\u202e", "'", '"', ":", "|", "&a ", "*a", "`",
                  "```", "\\", "#", "    ", "\n", "{", "}", "é", "\x1b[2J", "%"]


def flip_chars(text: str, rng: random.Random) -> str:
    chars = list(text)
    for _ in range(rng.randint(1, 12)):
        at = rng.randrange(len(chars) + 1)
        if chars and rng.random() < 0.4:
            chars[min(at, len(chars) - 1)] = rng.choice(_HOSTILE_CHARS)
        else:
            chars.insert(at, rng.choice(_HOSTILE_CHARS))
    return "".join(chars)


def duplicate_lines(text: str, rng: random.Random) -> str:
    lines = _lines(text)
    i = rng.randrange(len(lines))
    k = min(rng.choice([10, 500, 5000]), MAX_FUZZ_CHARS // (len(lines[i]) + 1) + 1)
    lines[i:i] = [lines[i]] * k
    return "\n".join(lines)


def alias_bomb(text: str, rng: random.Random) -> str:
    bomb = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, rng.choice([4, 9])):
        bomb.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    block = "\n".join(bomb)
    return text.replace("```yaml\n", "```yaml\n" + block + "\n", 1) if "```yaml" in text else (
        "```yaml\n" + block + "\nimpl: *a1\n```\n" + text)


def fence_storm(text: str, rng: random.Random) -> str:
    k = rng.choice([3, 50, 2000])
    storm = rng.choice(["```\n```\n", "```python\nx = 1\n```\n", "```yaml\n"]) * k
    return storm + text if rng.random() < 0.5 else text + storm


def think_open(text: str, rng: random.Random) -> str:
    return "<think>" * rng.randint(1, 3) + text


def indent_mess(text: str, rng: random.Random) -> str:
    return "\n".join(" " * rng.choice([0, 1, 2, 4, 7, 400]) + line for line in _lines(text))


def abuse(text: str, rng: random.Random) -> str:
    return _insert_line(text, rng, rng.choice([
        "import os", "x = __import__('os').system('true')", "x = ().__class__.__mro__",
        "x = getattr(step, 'Map')", "x = max([1, 2], key=len)", "f = lambda q: q",
        "while True:\n    pass", "x = open('/etc/passwd')", "x = step.Map.__init__",
        "x = [i for i in range(10**9)]", "x = 2 ** 10 ** 10", "raise SystemExit(0)",
        "x = f'{step}'", "x = {1: 2}", "global step",
    ]))


def deep_yaml(text: str, rng: random.Random) -> str:
    k = rng.choice([100, 1000])
    return "```yaml\n" + "".join(" " * i + f"k{i}:\n" for i in range(k)) + "```\n" + text


def huge_answer(text: str, rng: random.Random) -> str:
    return text + "\n" + "word " * rng.choice([10_000, 60_000])


MUTATIONS: list[Mutation] = [
    nest_brackets, minus_chain, binop_chain, call_chain, huge_value, truncate, flip_chars,
    duplicate_lines, alias_bomb, fence_storm, think_open, indent_mess, abuse, deep_yaml,
    huge_answer,
]
RARE: list[Mutation] = [spin]  # each one costs a full CPU-time limit in a worker


def hostile_corpus() -> list[str]:
    """Fixed answers that broke (or could break) extraction before it was made total."""
    return [
        "```yaml\nimpl: " + "[" * 600 + "]" * 600 + "\n```",
        "[" * 600 + "]" * 600,
        "```python\nx = " + "-" * 3000 + "1\nreturn x\n```",
        "```python\nx = " + "+".join(["1"] * 20000) + "\nreturn x\n```",
        "```python\nx = a" + ".b" * 5000 + "\nreturn x\n```",
        "```python\nx = f" + "()" * 5000 + "\nreturn x\n```",
        "```python\n" + "x = 1\n" * 200_000 + "return x\n```",
        "```python\nx = \x00\nreturn x\n```",
        "```python\nx = '\ud800'\nreturn x\n```",
        "```yaml\nimpl: |-\n  " + "{" * 2000 + "\n```",
        "```yaml\n" + "".join(" " * i + f"k{i}:\n" for i in range(1500)) + "```",
        "<think>" + "```" * 10_000,
        "```\n" * 20_000,
        "\t" * 10_000 + "return x",
        "",
        "   \n\n",
    ]


#: Mutations that keep an answer readable: applied to the program before it is wrapped, so
#: hostile programs (not just hostile answers) reach the verifier.
PROGRAM_MUTATIONS: list[Mutation] = [
    minus_chain, binop_chain, call_chain, huge_value, huge_value, abuse, abuse, duplicate_lines,
]


def mutated_answers(n: int, seed: int, impls: list[str], spin_rate: float = 0.005) -> list[str]:
    """`n` answers, reproducibly: half are correct answers around a mutated program, half are
    mutations (1-3 each) of whole answers."""
    rng = random.Random(seed)
    seeds = [a for impl in impls for a in seed_answers(impl)]
    out = []
    for _ in range(n):
        if rng.random() < 0.5:
            program = rng.choice(impls)
            for _ in range(rng.randint(1, 2)):
                mutate = rng.choice(RARE) if rng.random() < spin_rate * 4 else rng.choice(
                    PROGRAM_MUTATIONS)
                program = mutate(program, rng)[:MAX_FUZZ_CHARS]
            out.append(rng.choice(seed_answers(program)))
            continue
        text = rng.choice(seeds)
        for _ in range(rng.randint(1, 3)):
            if rng.random() < spin_rate:
                text = rng.choice(RARE)(text, rng)
            elif rng.random() < 0.08:  # splice two answers
                other = rng.choice(seeds)
                text = text[: rng.randrange(len(text) + 1)] + other[rng.randrange(len(other)):]
            else:
                text = rng.choice(MUTATIONS)(text, rng)
            text = text[:MAX_FUZZ_CHARS]  # compounding mutations (5000 x a 300 KB line) stop here
        out.append(text)
    return out


# --------------------------------------------------------------------------------- the run


def _worker_peak_mb(pool: Any) -> float:
    peak = 0.0
    for w in list(getattr(pool, "_workers", [])):
        try:
            status = Path(f"/proc/{w.proc.pid}/status").read_text()
        except OSError:
            continue
        m = re.search(r"VmHWM:\s+(\d+) kB", status)
        if m:
            peak = max(peak, int(m.group(1)) / 1024)
    return peak


def largest_stored(db: Path) -> dict[str, int]:
    """Longest text of each kind in the call log: the model's answers (bounded by the model's
    max_tokens, not by us), call errors, and user turns (repair feedback quotes the verifier)."""
    import json

    sizes = {"answer": 0, "error": 0, "user turn": 0}
    con = sqlite3.connect(db)
    try:
        for (text,) in con.execute("SELECT response FROM calls WHERE response IS NOT NULL"):
            sizes["answer"] = max(sizes["answer"], len(text))
        for (text,) in con.execute("SELECT error FROM calls WHERE error IS NOT NULL"):
            sizes["error"] = max(sizes["error"], len(text))
        for (messages,) in con.execute("SELECT messages FROM prompts"):
            for m in json.loads(messages):
                if m.get("role") == "user":
                    sizes["user turn"] = max(sizes["user turn"], len(m.get("content", "")))
    finally:
        con.close()
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=1000, help="mutated answers (default 1000)")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--timeout", type=float, default=1.0, help="CPU s per candidate")
    args = parser.parse_args(argv)

    from stepsmith.agents import Agent
    from stepsmith.llm import CallStore, LLMClient
    from stepsmith.llm.testing import ScriptedBackend
    from stepsmith.tasks.suite import get_task
    from stepsmith.verify import VerifierPool

    tasks = [get_task(name) for name in TASKS]
    impls = [t.impl for t in tasks if t.impl]
    answers = hostile_corpus() + mutated_answers(args.n, args.seed, impls)
    queue = iter(answers)

    def model(messages: list[dict], temperature: float | None, sample_index: int) -> str:
        return next(queue, "no more answers")

    crashes: list[str] = []
    kinds: Counter[str] = Counter()
    longest_feedback = 0
    with tempfile.TemporaryDirectory() as tmp, VerifierPool(
        workers=2, timeout_s=args.timeout, grace_s=1.0
    ) as pool:
        pool.warm_up()
        db = Path(tmp) / "calls.db"
        client = LLMClient(ScriptedBackend(model), store=CallStore(db), run_id="fuzz",
                           max_retries=0, cache_mode="refresh")
        agent = Agent(client, pool, method="agent", guardian="rule", repair=1,
                      max_tokens=100_000)
        t0 = time.perf_counter()
        worker_peak = 0.0
        for i in range(len(answers)):
            task = tasks[i % len(tasks)]
            try:
                attempt = asyncio.run(agent.attempt(task, [], temperature=1.0, sample_index=i))
            except Exception as exc:  # noqa: BLE001 - this is what we count
                crashes.append(f"answer {i}: {type(exc).__name__}: {str(exc)[:200]}\n"
                               + "".join(traceback.format_exc(limit=4)))
                continue
            kinds["passed" if attempt.passed else str(attempt.failure_kind)] += 1
            longest_feedback = max(longest_feedback, len(attempt.feedback or ""))
            if attempt.verdict is not None:
                longest_feedback = max(longest_feedback, len(attempt.verdict.feedback or ""))
            if i % 50 == 0:
                worker_peak = max(worker_peak, _worker_peak_mb(pool))
                print(f"  {i}/{len(answers)} answers, {len(crashes)} crashes, "
                      f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        worker_peak = max(worker_peak, _worker_peak_mb(pool))
        seconds = time.perf_counter() - t0
        stored = largest_stored(db)
        db_mb = db.stat().st_size / 1e6
        respawns = pool.respawns

    main_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"answers:                {len(answers)} ({len(hostile_corpus())} fixed + {args.n} mutated, "
          f"seed {args.seed})")
    print(f"crashes:                {len(crashes)}")
    print(f"outcomes:               {dict(kinds.most_common())}")
    print(f"peak memory (main):     {main_peak:.0f} MB")
    print(f"peak memory (a worker): {worker_peak:.0f} MB (its limit: 4096 MB)")
    print(f"largest stored message: {stored['user turn']} characters (a user turn: repair "
          f"feedback); call errors {stored['error']}; model answers {stored['answer']} (the "
          "scripted model's own text)")
    print(f"largest feedback:       {longest_feedback} characters")
    print(f"call log size:          {db_mb:.1f} MB")
    print(f"worker respawns:        {respawns}")
    print(f"wall time:              {seconds:.0f} s ({seconds / len(answers) * 1000:.0f} ms/answer)")
    for c in crashes[:10]:
        print("CRASH", c)
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
