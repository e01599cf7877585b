#!/usr/bin/env bash
# The README's first command: set up LibTorch (once), build seqpipe in
# release mode, and run the quickstart pipeline end to end.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh
. scripts/env.sh
cargo build --release --workspace
exec target/release/seqpipe run pipelines/quickstart.toml "$@"
