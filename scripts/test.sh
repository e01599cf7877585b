#!/usr/bin/env bash
# The README's second command (and CI's): set up LibTorch (once), then run
# the whole test suite: engine tests with toy stages, the stage library's
# unit tests, and end-to-end tests through the real `seqpipe` binary.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh
. scripts/env.sh
# Headless Chromium renders the HTML report in a test (Debian's package;
# installed when missing and we may, i.e. as root with apt-get). Once it is
# there the test may not skip.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian's chromium for the report rendering test"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1 ||
        echo "setup: chromium could not be installed; the rendering test will say it skipped"
fi
if command -v chromium >/dev/null 2>&1; then
    export SEQPIPE_REQUIRE_CHROMIUM=1
fi
# cargo-fuzz runs the spec parser's fuzz target for a bounded time in a test
# (tests/fuzz_spec.rs; stable toolchain, no sanitizer). Installed from
# crates.io when missing; once it is there the test may not skip.
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "setup: installing cargo-fuzz for the spec fuzz test"
    cargo install cargo-fuzz --locked --quiet ||
        echo "setup: cargo-fuzz could not be installed; the fuzz test will say it skipped"
fi
if cargo fuzz --version >/dev/null 2>&1; then
    export SEQPIPE_REQUIRE_FUZZ=1
fi
# A test fills a small tmpfs mounted as the cache root (a real full disk):
# where this process can mount one (root with the right to), it may not skip.
probe="$(mktemp -d)"
if [ "$(id -u)" = 0 ] && mount -t tmpfs -o size=1m tmpfs "$probe" 2>/dev/null; then
    umount "$probe"
    export SEQPIPE_REQUIRE_TMPFS=1
fi
rmdir "$probe"
# A one-node Slurm cluster (munge, slurmctld, slurmd; Debian's slurm-wlm,
# installed when missing as root) for the executor tests. Once it is up the
# tests may not skip; it is stopped again at exit if this script started it.
slurm_state="${SEQPIPE_SLURM_STATE:-/tmp/seqpipe-slurm}"
if ! SLURM_CONF="$slurm_state/slurm.conf" sinfo >/dev/null 2>&1; then
    if scripts/slurm-up.sh "$slurm_state" >/tmp/seqpipe-slurm-up.log 2>&1; then
        trap 'scripts/slurm-down.sh "$slurm_state" >/dev/null 2>&1 || true' EXIT
    else
        echo "setup: no Slurm cluster ($(tail -n 1 /tmp/seqpipe-slurm-up.log)); the Slurm tests will say they skipped"
    fi
fi
if SLURM_CONF="$slurm_state/slurm.conf" sinfo >/dev/null 2>&1; then
    export SEQPIPE_REQUIRE_SLURM=1
fi
# moto, an S3-compatible server from PyPI, for the object-store cache tests
# (started on loopback by the tests). Once it is there they may not skip.
if ! .venv/bin/python -c "import moto.server" >/dev/null 2>&1; then
    echo "setup: installing moto (an S3 server) into .venv for the object-store tests"
    .venv/bin/pip install -q "moto[server]==5.2.5" ||
        echo "setup: moto could not be installed; the object-store tests will say they skipped"
fi
if .venv/bin/python -c "import moto.server" >/dev/null 2>&1; then
    export SEQPIPE_REQUIRE_MOTO=1
fi
# Release profile: one build serves the tests and the binary they drive, and
# tensor code runs at real speed.
cargo test --release --workspace "$@"
