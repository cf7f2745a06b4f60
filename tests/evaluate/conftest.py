"""The evaluate tests share their test doubles with the improve tests (tests/shared)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "shared"))
