#!/usr/bin/env bash
# Line coverage of src/ (SPEC §13) over the whole test suite, measured with cargo-tarpaulin's
# ptrace engine: it needs no extra rustup component (llvm-tools is not required), only the
# toolchain that builds the project. The end-to-end tests start the real binary; those
# processes are followed too, so what they run counts. The console's browser test is left
# out: traced, Chromium would take the whole run (the console's routes have their own tests).
#
# Installs cargo-tarpaulin into target/tools on first use and builds into target/coverage, so
# the usual target/debug stays warm. Takes several times as long as `cargo test`: it is not
# part of .ci/run. Prints the per-file table and the total; the HTML and JSON reports are
# left in target/coverage/report.
#
#   scripts/coverage.sh            # the whole suite
#   scripts/coverage.sh --lib      # any further arguments go to cargo tarpaulin
set -euo pipefail
cd "$(dirname "$0")/.."

TARPAULIN_VERSION="0.37.5"
TOOLS="target/tools"
TARPAULIN="$TOOLS/bin/cargo-tarpaulin"

if [ ! -x "$TARPAULIN" ] || ! "$TARPAULIN" tarpaulin --version 2>/dev/null | grep -q "$TARPAULIN_VERSION"; then
    echo "== installing cargo-tarpaulin $TARPAULIN_VERSION into $TOOLS"
    cargo install cargo-tarpaulin --locked --version "$TARPAULIN_VERSION" --root "$TOOLS"
fi

mkdir -p target/coverage/report

echo "== line coverage of src/ (cargo tarpaulin, ptrace engine)"
set +e
"$TARPAULIN" tarpaulin \
    --engine ptrace \
    --locked \
    --skip-clean \
    --follow-exec \
    --target-dir target/coverage \
    --include-files 'src/*' \
    --exclude-files 'tests/*' 'benches/*' \
    --timeout 900 \
    --no-fail-fast \
    --out Stdout --out Html --out Json \
    --output-dir target/coverage/report \
    "$@" \
    -- --skip the_console_in_a_browser \
    2>&1 | tee target/coverage/report/run.log
status=${PIPESTATUS[0]}
set -e

echo "== summary"
# A failing test is reported above; the figure still counts what ran.
grep -E '^[0-9.]+% coverage' target/coverage/report/run.log | tail -1 || echo "no coverage figure"
exit "$status"
