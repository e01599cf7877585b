# Sourced by the other scripts: points the build and the runtime at the
# project-local LibTorch (torch==2.11.0 from PyPI in .venv). Source it yourself
# (`. scripts/env.sh`) before running cargo by hand.
SEQPIPE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export SEQPIPE_ROOT
export VIRTUAL_ENV="$SEQPIPE_ROOT/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
# torch's pip wheel ships its shared libraries in site-packages/torch/lib; the
# binaries carry a run path to it, this covers anything built another way.
_torch_lib="$(ls -d "$VIRTUAL_ENV"/lib/python3*/site-packages/torch/lib 2>/dev/null | head -n1)"
if [ -n "$_torch_lib" ]; then
    export LD_LIBRARY_PATH="$_torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
unset _torch_lib
