"""The agents: prompt composition, answer extraction, guardian, repair turns, one sample's flow.

Contract (docs/architecture.md and the agents/improve contract): `Demonstration`,
`compose_messages`, `extract_impl` / `Unparsable`, `LeakageError`, `Attempt`, `Agent`.
"""

from stepsmith.agents.agent import METHODS, Agent, Attempt
from stepsmith.agents.extract import Unparsable, extract_impl
from stepsmith.agents.guardian import GUARDIAN_MODES, guardian_messages, rule_repair, run_guardian
from stepsmith.agents.prompts import LeakageError, base_prompt, compose_messages, estimate_tokens
from stepsmith.agents.render import python_scaffold
from stepsmith.demos import Demonstration, isomorphic, task_ir

__all__ = [
    "Agent",
    "Attempt",
    "Demonstration",
    "GUARDIAN_MODES",
    "LeakageError",
    "METHODS",
    "Unparsable",
    "base_prompt",
    "compose_messages",
    "estimate_tokens",
    "extract_impl",
    "guardian_messages",
    "isomorphic",
    "python_scaffold",
    "rule_repair",
    "run_guardian",
    "task_ir",
]
