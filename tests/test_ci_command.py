"""CI runs exactly the README's test command, and that command type-checks before testing."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_test_command() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = re.findall(r"```bash\n(.*?)\n```", text, re.S)
    return next(c.strip() for c in commands if "pytest" in c)


def test_ci_ends_with_the_readme_test_command() -> None:
    lines = [ln for ln in (ROOT / ".ci" / "run").read_text().splitlines() if ln.strip()]
    assert lines[-1].strip() == _readme_test_command()


def test_the_test_command_runs_mypy_with_unused_ignores_as_errors() -> None:
    command = _readme_test_command()
    assert command.index("mypy src") < command.index("pytest")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert config["tool"]["mypy"]["warn_unused_ignores"] is True
    dev = " ".join(config["project"]["optional-dependencies"]["dev"])
    assert "mypy" in dev
