#!/usr/bin/env bash
# Idempotent setup: a project-local virtual environment with torch==2.11.0
# (LibTorch for tch 0.24) from PyPI, plus what the Python command-stage
# example reads artifacts with (pyarrow, safetensors, numpy). Does nothing
# when it is already there.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TORCH_VERSION="2.11.0"
PYARROW_VERSION="22.0.0"
PY="${PYTHON:-python3}"

if [ -x "$ROOT/.venv/bin/python" ] &&
   "$ROOT/.venv/bin/python" -c "import torch,sys; sys.exit(0 if torch.__version__.split('+')[0]=='$TORCH_VERSION' else 1)" 2>/dev/null; then
    if ! "$ROOT/.venv/bin/python" -c "import pyarrow" 2>/dev/null; then
        "$ROOT/.venv/bin/python" -m pip install --quiet "pyarrow==$PYARROW_VERSION"
    fi
    echo "setup: .venv has torch $TORCH_VERSION"
    exit 0
fi
echo "setup: creating .venv with torch==$TORCH_VERSION (a few GB from PyPI; once)"
"$PY" -m venv "$ROOT/.venv"
"$ROOT/.venv/bin/python" -m pip install --quiet --upgrade pip
"$ROOT/.venv/bin/python" -m pip install --quiet "torch==$TORCH_VERSION" numpy safetensors "pyarrow==$PYARROW_VERSION"
"$ROOT/.venv/bin/python" -c "import torch; print('setup: torch', torch.__version__, 'installed')"
