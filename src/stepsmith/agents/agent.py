"""One sample of the agentic system: proposer → (guardian) → verifier, with optional repair turns.

`Agent.attempt` never raises for faults of the model or the program: an LLM failure is an
`llm_error` sample, an answer without a program is `unparsable`, a wrong program carries the
verifier's verdict. Run-stopping signals (`BudgetExceeded`, `CacheMiss`, `InfrastructureError` —
the model could not be asked at all) and caller bugs
(`LeakageError`, bad arguments) do propagate.
"""

from __future__ import annotations

import asyncio
import inspect
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

from stepsmith.agents.decoding.judge import SEARCH_MODES, PrefixJudge, searched_constraint
from stepsmith.agents.extract import Unparsable, extract_impl
from stepsmith.agents.guardian import GUARDIAN_MODES, run_guardian
from stepsmith.agents.prompts import REFERENCE_STYLES, compose_messages
from stepsmith.demos import Demonstration
from stepsmith.llm.base import Completion
from stepsmith.llm.client import LLMClient
from stepsmith.llm.constraint import CONSTRAIN_MODES, Constraint
from stepsmith.tasks.task import Task
from stepsmith.verify.verdict import Verdict, Verifier

__all__ = ["Attempt", "Agent", "METHODS"]

METHODS = ("single", "single-no-ir", "agent")


@dataclass
class Attempt:
    """The outcome of one sample (including its guardian call and repair turns)."""

    impl: str | None
    verdict: Verdict | None
    failure_kind: str | None  # "unparsable", "incomplete", "llm_error", "verifier_error" or verdict.kind
    passed: bool
    input_tokens: int
    output_tokens: int
    cost_usd: float
    calls: int
    guardian_changed: bool
    guardian_corrupted: bool  # the guardian changed a program that already passed
    feedback: str
    turns: int = 1  # proposer answers used (1 + repair turns taken)
    answer: str = ""  # the last raw proposer answer (for logs)
    unguarded_impl: str | None = None  # the proposer's program when the guardian changed it
    notes: tuple[str, ...] = ()


@dataclass
class _Totals:
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    calls: int = 0

    def add(self, completion: Completion) -> None:
        self.calls += 1
        self.input_tokens += completion.input_tokens
        self.output_tokens += completion.output_tokens
        self.cost_usd += completion.cost_usd


class Agent:
    """Proposer (+ guardian for method "agent") whose answers are checked by `verifier`."""

    def __init__(
        self,
        client: LLMClient,
        verifier: Verifier,
        *,
        method: str = "agent",
        guardian: str = "llm",
        repair: int = 0,
        max_tokens: int = 1024,
        constrain: str = "none",
        search: str = "none",
        reference: str = "full",
        sibling: bool = False,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
        if guardian not in GUARDIAN_MODES:
            raise ValueError(
                f"guardian must be one of {', '.join(GUARDIAN_MODES)}; got {guardian!r}"
            )
        if not isinstance(repair, int) or repair < 0:
            raise ValueError(f"repair must be a non-negative integer; got {repair!r}")
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive integer; got {max_tokens!r}")
        self.client = client
        self.verifier = verifier
        self.method = method
        # The paper's single baselines are the proposer alone; only "agent" has a guardian.
        self.guardian = guardian if method == "agent" else "none"
        self.repair = repair
        self.max_tokens = max_tokens
        if constrain not in CONSTRAIN_MODES:
            raise ValueError(
                f"constrain must be one of {', '.join(CONSTRAIN_MODES)}; got {constrain!r}"
            )
        # the constraint fixes the answer's format (a ```yaml impl block), which only the
        # structural-IR methods ask for
        self.constrain = constrain if method != "single-no-ir" else "none"
        if search not in SEARCH_MODES:
            raise ValueError(f"search must be one of {', '.join(SEARCH_MODES)}; got {search!r}")
        if search != "none" and self.constrain != "typed":
            raise ValueError(f"search {search!r} judges typed prefixes: it needs constrain='typed'")
        self.search = search
        if reference not in REFERENCE_STYLES:
            raise ValueError(
                f"reference must be one of {', '.join(REFERENCE_STYLES)}; got {reference!r}"
            )
        self.reference = reference
        self.sibling = sibling
        self.judges: dict[str, PrefixJudge] = {}
        self._constraints: dict[str, Constraint | None] = {}

    @property
    def with_ir(self) -> bool:
        return self.method != "single-no-ir"

    def messages(self, task: Task, demonstrations: Sequence[Demonstration]) -> list[dict]:
        """The proposer's first prompt for `task` (raises LeakageError on a leaking demo)."""
        return compose_messages(
            task, demonstrations, with_ir=self.with_ir, reference=self.reference,
            sibling=self.sibling,
        )

    def constraint(self, task: Task) -> Constraint | None:
        """The decoding constraint for `task` (built once per task: it instantiates it)."""
        if self.constrain == "none":
            return None
        if task.name not in self._constraints:
            constraint, judge = searched_constraint(task, self.constrain, self.search,
                                                    self.verifier)
            if judge is not None:
                self.judges[task.name] = judge
            self._constraints[task.name] = constraint
        return self._constraints[task.name]

    async def attempt(
        self,
        task: Task,
        demonstrations: Sequence[Demonstration],
        *,
        temperature: float | None,
        sample_index: int,
    ) -> Attempt:
        """One sample: up to 1 + `repair` proposer turns, stopping at the first verified program."""
        from stepsmith.llm import InfrastructureError, LLMError

        messages = self.messages(task, demonstrations)
        constraint = self.constraint(task)
        params = task.input_names
        totals = _Totals()
        guardian_changed = guardian_corrupted = False
        notes: list[str] = []
        impl: str | None = None
        unguarded: str | None = None
        verdict: Verdict | None = None
        failure: str | None = None
        feedback = ""
        answer = ""
        turns = 0
        for turn in range(self.repair + 1):
            turns = turn + 1
            unguarded = None  # the attempt describes the last turn only
            tag = "proposer" if turn == 0 else f"repair{turn}"
            try:
                completion = await self.client.sample(
                    messages,
                    temperature=temperature,
                    max_tokens=self.max_tokens,
                    sample_index=sample_index,
                    task=task.name,
                    tag=tag,
                    constraint=constraint,
                )
            except InfrastructureError:
                raise  # the model could not be asked: stop the run, don't blame the model
            except LLMError as exc:
                failure, feedback, verdict = "llm_error", f"LLM call failed: {exc}", None
                break
            totals.add(completion)
            answer = completion.text or ""
            try:
                impl = extract_impl(answer)
            except Unparsable as exc:
                impl, verdict, failure = None, None, "unparsable"
                feedback = f"Your answer could not be used: {exc.reason}"
                if completion.finish_reason == "length":
                    feedback += " (the answer hit the output token limit; write a shorter answer)"
            else:
                if constraint is not None and constraint.mode == "typed" and not has_return(impl):
                    # a typed answer that never reached `return` (statement budget, dead end or
                    # token limit) is no program at all: say so instead of "wrong outputs"
                    verdict, failure = None, "incomplete"
                    feedback = (
                        "Your program stopped before a `return` "
                        f"({completion.finish_reason}): write fewer statements and return the "
                        "output stream(s) once they are computed."
                    )
                else:
                    verified = await self._guard_and_verify(
                        task, impl, params, temperature, sample_index, totals, notes, turn
                    )
                    impl, verdict, changed, corrupted, unguarded_src = verified
                    guardian_changed |= changed
                    guardian_corrupted |= corrupted
                    unguarded = unguarded_src
                    if verdict is None:
                        failure = "verifier_error"
                        feedback = notes[-1] if notes else "the verifier failed"
                    elif verdict.passed:
                        failure, feedback = None, ""
                        break
                    else:
                        failure = verdict.kind.value if verdict.kind is not None else "unknown"
                        feedback = verdict.feedback
            if turn < self.repair:
                messages = messages + [
                    {"role": "assistant", "content": answer},
                    {
                        "role": "user",
                        "content": self._repair_message(failure, feedback, impl, unguarded),
                    },
                ]
        passed = verdict is not None and verdict.passed and failure is None
        return Attempt(
            impl=impl,
            verdict=verdict,
            failure_kind=None if passed else failure,
            passed=passed,
            input_tokens=totals.input_tokens,
            output_tokens=totals.output_tokens,
            cost_usd=totals.cost_usd,
            calls=totals.calls,
            guardian_changed=guardian_changed,
            guardian_corrupted=guardian_corrupted,
            feedback=feedback,
            turns=turns,
            answer=answer,
            unguarded_impl=unguarded,
            notes=tuple(notes),
        )

    async def _guard_and_verify(
        self,
        task: Task,
        impl: str,
        params: list[str],
        temperature: float | None,
        sample_index: int,
        totals: _Totals,
        notes: list[str],
        turn: int,
    ) -> tuple[str, Verdict | None, bool, bool, str | None]:
        """Guardian then verifier; a changed program is verified before and after (corruption)."""
        if self.guardian == "none":
            return impl, await self._verify(task, impl, notes), False, False, None
        guarded = await run_guardian(
            self.guardian,
            impl,
            params,
            client=self.client,
            temperature=temperature,
            max_tokens=self.max_tokens,
            sample_index=sample_index,
            task_name=task.name,
            tag="guardian" if turn == 0 else f"guardian{turn}",
        )
        totals.calls += guarded.calls
        totals.input_tokens += guarded.input_tokens
        totals.output_tokens += guarded.output_tokens
        totals.cost_usd += guarded.cost_usd
        if guarded.note:
            notes.append(guarded.note)
        if not guarded.changed:
            return impl, await self._verify(task, impl, notes), False, False, None
        before, after = await asyncio.gather(
            self._verify(task, impl, notes), self._verify(task, guarded.impl, notes)
        )
        corrupted = bool(
            before is not None and before.passed and after is not None and not after.passed
        )
        if corrupted:
            notes.append("guardian corrupted a program that already passed")
        return guarded.impl, after, True, corrupted, impl

    async def _verify(self, task: Task, impl: str, notes: list[str]) -> Verdict | None:
        """Run the (blocking, thread-safe) verifier off the event loop; None if it crashed."""
        try:
            result = await asyncio.to_thread(self.verifier.verify, task, impl)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:  # noqa: BLE001 - a verifier crash must not kill the run
            notes.append(f"verifier error: {type(exc).__name__}: {exc}")
            return None
        return result

    def _repair_message(
        self, failure: str | None, feedback: str, impl: str | None, unguarded: str | None
    ) -> str:
        """The follow-up turn: what failed and how, and what to answer."""
        if failure == "unparsable":
            lines = ["Your answer did not contain a usable program."]
        elif failure == "llm_error" or failure == "verifier_error":
            lines = [f"The previous attempt could not be checked ({failure})."]
        else:
            lines = [f"Your program failed verification ({failure})."]
        if unguarded is not None and impl is not None:
            lines.append(
                "After the affine-rule guardian, the program that was verified is:\n"
                "```yaml\nimpl: |-\n" + textwrap.indent(impl, "  ", lambda _l: True) + "\n```"
            )
        if feedback:
            lines.append("Verifier feedback:\n" + feedback.strip())
        if self.with_ir:
            lines.append(
                "Fix the program and answer again with `impl: |-` in a ```yaml code block."
            )
        else:
            lines.append(
                "Fix the program and answer again with the complete `def impl(...)` in a ```python code block."
            )
        return "\n\n".join(lines)


def has_return(impl: str) -> bool:
    """Whether a program body has a `return` statement (at its top level)."""
    return any(line.startswith("return") for line in impl.splitlines())
