"""The evaluated prompt prefix of a local model, kept on disk across processes.

Every proposer prompt starts with the same long system message (the STeP reference, ~7k
tokens). Reading it is most of a small model's first call: minutes on a busy 2-core machine.
llama.cpp can save the context state (the KV cache of the evaluated tokens) and load it back in
a fraction of a second, so the reference is read once per machine and model, not once per
process. Files live in `$STEPSMITH_HOME/kvcache/`, named by model file and a hash of the prefix
tokens; a file that fails to load is deleted and the prefix is evaluated as usual.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .config import stepsmith_home

ENABLED = os.environ.get("STEPSMITH_LLAMACPP_DISK_PREFIX", "1") != "0"
MIN_PREFIX = 256  # shorter prefixes are cheap to evaluate
MAX_FILES = 8  # per model; oldest removed first


def _dir() -> Path:
    return stepsmith_home() / "kvcache"


def _path(model_path: str, prefix: list[int]) -> Path:
    h = hashlib.sha256(np.asarray(prefix, dtype=np.int32).tobytes()).hexdigest()[:24]
    return _dir() / f"{Path(model_path).stem}-{len(prefix)}-{h}.kv"


def system_prefix_len(llm: Any, messages: list[dict], tokens: list[int], render: Any) -> int:
    """How many leading tokens of `tokens` are the system turn (0 when there is none, it is
    short, or the template does not render it as a prefix)."""
    if not messages or messages[0].get("role") != "system":
        return 0
    head = render(llm, messages[:1], generation_prompt=False)
    head_tokens = llm.tokenize(head.encode("utf-8"), add_bos=False, special=True)
    n = len(head_tokens)
    if n < MIN_PREFIX or tokens[:n] != head_tokens:
        return 0
    return n


def restore(llm: Any, model_path: str, tokens: list[int], n: int) -> bool:
    """Load the saved state of `tokens[:n]` into the context when the context does not already
    hold that prefix; True when the prefix is now in the KV cache."""
    if not ENABLED or n <= 0:
        return False
    held = llm.input_ids[: llm.n_tokens].tolist()
    if len(held) >= n and held[:n] == tokens[:n]:
        return True
    path = _path(model_path, tokens[:n])
    if not path.is_file():
        return False
    try:
        data = path.read_bytes()
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        import llama_cpp

        if llama_cpp.llama_state_set_data(llm._ctx.ctx, buf, len(data)) != len(data):
            raise RuntimeError("size mismatch")
    except (OSError, RuntimeError):
        path.unlink(missing_ok=True)
        llm.reset()
        return False
    llm.input_ids[:n] = tokens[:n]
    llm.n_tokens = n
    return True


def save(llm: Any, model_path: str, tokens: list[int], n: int) -> None:
    """Save the context state holding exactly `tokens[:n]` (call right after evaluating it)."""
    if not ENABLED or n <= 0 or int(llm.n_tokens) != n:
        return
    path = _path(model_path, tokens[:n])
    if path.is_file():
        return
    import llama_cpp

    size = llama_cpp.llama_state_get_size(llm._ctx.ctx)
    buf = (ctypes.c_uint8 * int(size))()
    written = int(llama_cpp.llama_state_get_data(llm._ctx.ctx, buf, size))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
    with os.fdopen(fd, "wb") as fh:
        fh.write(bytes(buf)[:written])
    os.replace(tmp, path)
    mine = sorted(path.parent.glob(f"{Path(model_path).stem}-*.kv"), key=lambda p: p.stat().st_mtime)
    for old in mine[:-MAX_FILES]:
        old.unlink(missing_ok=True)


def prepare(llm: Any, model_path: str, tokens: list[int], n: int) -> None:
    """Make the context hold `tokens[:n]`: from disk when saved, else evaluate it and save."""
    if not ENABLED or n <= 0:
        return
    if restore(llm, model_path, tokens, n):
        return
    held = llm.input_ids[: llm.n_tokens].tolist()
    common = 0
    for a, b in zip(held, tokens[:n], strict=False):
        if a != b:
            break
        common += 1
    llm.n_tokens = common
    llm.eval(tokens[common:n])
    save(llm, model_path, tokens, n)
