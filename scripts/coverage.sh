#!/usr/bin/env bash
# Line coverage of src/ (SPEC §13) over the whole test suite, measured with cargo-llvm-cov
# (LLVM's source-based coverage: the compiler counts every region, nothing is traced).
#
# Installs cargo-llvm-cov into target/tools on first use (and the rustup component llvm-tools
# if it is missing) and builds instrumented into target/llvm-cov-target, so the usual
# target/debug stays warm. Runs every test target as `cargo test --tests` does, the console's
# browser test included (the browser is not instrumented; only the server it talks to is).
#
# The end-to-end tests' child processes (the real `edgeplane`, started through
# CARGO_BIN_EXE_edgeplane) count too: cargo-llvm-cov hands them LLVM_PROFILE_FILE. Most of them
# end with SIGKILL, which leaves no chance to write a profile at exit, so the counters are
# kept in continuous mode (`%c`: the profile file is mapped into the process and every count
# lands in it as it happens), which on Linux needs the counters relocated at run time
# (`-runtime-counter-relocation`). A process still loses nothing but the counts of its last
# instant.
#
# Counted: the lines of src/ (test modules inside src/ files included, as llvm-cov sees them);
# not counted: tests/, benches/, dependencies. Doctests are not run (stable rustc cannot
# instrument them).
#
# Prints the per-file table, the files with the most lines missed and the total; leaves
# HTML (target/coverage/html), LCOV (target/coverage/lcov.info) and a JSON summary
# (target/coverage/summary.json). A failing test does not hide the figure: the report is
# made from what ran, and the script then exits with the test run's status.
#
#   bash scripts/coverage.sh              # the whole suite
#   bash scripts/coverage.sh --lib        # further arguments go to `cargo llvm-cov test`
#   bash scripts/coverage.sh -- --skip the_console_in_a_browser   # ... and after -- to the tests
set -euo pipefail
cd "$(dirname "$0")/.."

LLVM_COV_VERSION="0.9.1"
TOOLS="target/tools"
LLVM_COV="$TOOLS/bin/cargo-llvm-cov"
OUT="target/coverage"
IGNORE='(^|/)(tests|benches)/'

host=$(rustc -vV | sed -n 's/^host: //p')
llvm_bin="$(rustc --print sysroot)/lib/rustlib/$host/bin"
if [ ! -x "$llvm_bin/llvm-profdata" ] || [ ! -x "$llvm_bin/llvm-cov" ]; then
    echo "== adding the rustup component llvm-tools (llvm-profdata, llvm-cov)"
    if ! rustup component add llvm-tools; then
        echo "coverage needs llvm-profdata and llvm-cov from the rustup component llvm-tools," >&2
        echo "which could not be added to this toolchain: run 'rustup component add llvm-tools'" >&2
        echo "where rustup can reach its distribution server, then run this script again." >&2
        exit 2
    fi
fi

installed=$("$LLVM_COV" llvm-cov --version 2>/dev/null || true)
if [ "$installed" != "cargo-llvm-cov $LLVM_COV_VERSION" ]; then
    echo "== installing cargo-llvm-cov $LLVM_COV_VERSION into $TOOLS"
    cargo install cargo-llvm-cov --locked --version "$LLVM_COV_VERSION" --root "$TOOLS"
fi

# One profile per process (%p), written continuously (%c) so SIGKILL loses nothing.
export LLVM_PROFILE_FILE_NAME="edgeplane-%p-%c%m.profraw"
export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C llvm-args=-runtime-counter-relocation"

mkdir -p "$OUT"
started=$(date +%s)

echo "== instrumented build and test run (cargo llvm-cov, into target/llvm-cov-target)"
# Profiles of an earlier run would be counted again: start from none.
"$LLVM_COV" llvm-cov clean --workspace
set +e
"$LLVM_COV" llvm-cov --no-report --locked --no-fail-fast "$@" 2>&1 | tee "$OUT/run.log"
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ]; then
    echo "!!!!!!!! the test run failed (exit $status): the figure below counts what ran !!!!!!!!"
fi

echo "== reports"
"$LLVM_COV" llvm-cov report --ignore-filename-regex "$IGNORE" --html --output-dir "$OUT"
"$LLVM_COV" llvm-cov report --ignore-filename-regex "$IGNORE" --lcov --output-path "$OUT/lcov.info"
"$LLVM_COV" llvm-cov report --ignore-filename-regex "$IGNORE" --json --summary-only \
    --output-path "$OUT/summary.json"
"$LLVM_COV" llvm-cov report --ignore-filename-regex "$IGNORE" >"$OUT/table.txt"

echo "== line coverage of src/ by file (paths under src/)"
cat "$OUT/table.txt"

# The table's columns: file, regions, missed, cover, functions, missed, executed, lines,
# missed lines, line cover, ...
echo "== the 15 files with the most lines missed"
# (awk rather than head: head leaving early would fail the pipeline under pipefail)
awk '$1 ~ /\.rs$/ { print }' "$OUT/table.txt" | sort -k9,9nr |
    awk 'NR <= 15 { printf "src/%-40s %5d of %5d lines missed  (%s covered)\n", $1, $9, $8, $10 }'

# llvm-cov counts the lines of a file's `#[cfg(test)] mod tests` too, and those always run:
# the second figure leaves out every line from a file's top-level `#[cfg(test)]` on.
without_tests=$(awk '
    /^SF:/ {
        file = substr($0, 4); first_test_line = 0; n = 0
        while ((getline line < file) > 0) {
            n++
            if (line ~ /^#\[cfg\(test\)\]/) { first_test_line = n; break }
        }
        close(file)
        next
    }
    /^DA:/ {
        split(substr($0, 4), field, ",")
        if (first_test_line && field[1] + 0 >= first_test_line) next
        found++
        if (field[2] + 0 > 0) hit++
    }
    END { if (found) printf "%.2f%% (%d of %d lines)", 100 * hit / found, hit, found }
' "$OUT/lcov.info")

echo "== summary"
awk '/^TOTAL/ { printf "line coverage of src/: %s (%d of %d lines)\n", $10, $8 - $9, $8 }' "$OUT/table.txt"
echo "line coverage of src/ without its test modules (counted on the LCOV line records): $without_tests"
echo "took $(( ($(date +%s) - started) / 60 )) min; reports in $OUT (html/index.html, lcov.info, summary.json)"
exit "$status"
