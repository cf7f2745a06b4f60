"""Program identity moved to `stepsmith.demos.identity`; this name stays for `agents/reference.py`."""

from stepsmith.demos.identity import canonical_form, isomorphic, normalized_dump

__all__ = ["canonical_form", "isomorphic", "normalized_dump"]
