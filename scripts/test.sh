#!/usr/bin/env bash
# The README's second command (and CI's): set up LibTorch (once), then run
# the whole test suite: engine tests with toy stages, the stage library's
# unit tests, and end-to-end tests through the real `seqpipe` binary.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh
. scripts/env.sh
# Release profile: one build serves the tests and the binary they drive, and
# tensor code runs at real speed.
cargo test --release --workspace "$@"
