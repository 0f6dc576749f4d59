#!/usr/bin/env bash
# Creates the Python environment of the loader peer benchmark (benches/loader_peer/peer.py):
# CPU PyTorch + torchvision + pillow + tokenizers + pyarrow + numpy.
#
# Usage: benches/loader_peer/setup.sh [VENV_DIR]      (default: <repo>/.venv-bench)
# Env:   PYTHON=python3.11   interpreter that creates the venv (default: python3)
#
# torch comes from PyTorch's CPU-only index when that host answers; otherwise from PyPI, whose
# Linux x86_64 torch wheel is the CUDA build (it pulls the nvidia-* runtime wheels, a few GiB,
# but runs on CPU-only machines). The peer only uses the CPU either way.
# Prints the venv's python path as the last line of stdout.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${1:-$repo/.venv-bench}"
python="${PYTHON:-python3}"
cpu_index="https://download.pytorch.org/whl/cpu"

log() { echo "setup.sh: $*" >&2; }

if [[ ! -x "$venv/bin/python" ]]; then
    log "creating venv $venv with $("$python" --version 2>&1)"
    "$python" -m venv "$venv"
fi
py="$venv/bin/python"
pip=("$py" -m pip install --disable-pip-version-check --quiet)

"${pip[@]}" --upgrade pip >&2

# Reachability probe first: pip's own retries against a host that does not resolve take minutes.
if "$py" - "$cpu_index" <<'PY' >&2 2>&1
import sys, urllib.request
try:
    urllib.request.urlopen(sys.argv[1] + "/torch/", timeout=10)
except Exception as e:
    print(f"CPU index unreachable: {e}")
    sys.exit(1)
PY
then
    log "installing torch + torchvision from the PyTorch CPU index"
    "${pip[@]}" --index-url "$cpu_index" torch torchvision >&2
else
    log "falling back to PyPI for torch + torchvision (CUDA build, runs on CPU)"
    "${pip[@]}" torch torchvision >&2
fi

log "installing pillow tokenizers pyarrow numpy from PyPI"
"${pip[@]}" pillow tokenizers pyarrow numpy >&2

# Smoke test: everything imports and torch runs a CPU op.
"$py" - <<'PY' >&2
import numpy, PIL, pyarrow, tokenizers, torch, torchvision
torch.ones(2, 2).sum().item()
print(f"torch {torch.__version__} (cuda build: {torch.version.cuda}), torchvision {torchvision.__version__}, "
      f"pillow {PIL.__version__}, tokenizers {tokenizers.__version__}, pyarrow {pyarrow.__version__}, "
      f"numpy {numpy.__version__}")
PY

echo "$py"
