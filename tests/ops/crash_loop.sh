#!/usr/bin/env bash
# A longer kill -9 loop than the test suite's 20 rounds: the real binary under 8 concurrent
# writers is killed at a random acknowledgement each round, then the store it left behind is
# checked (log without gaps, no half-written configuration, versions in increasing order) and
# so is every acknowledged write (that version, with that content, after a restart).
#
#   tests/ops/crash_loop.sh [ROUNDS] [SEED]     # defaults: 200 rounds, a random seed
#
# The seed is printed first; the same seed and rounds replay the same kill points.
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS="${1:-200}"
SEED="${2:-$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')}"
case "$ROUNDS" in
    '' | *[!0-9]*) echo "ROUNDS must be a number, got '$ROUNDS'" >&2; exit 2 ;;
esac
case "$SEED" in
    '' | *[!0-9]*) echo "SEED must be a number, got '$SEED'" >&2; exit 2 ;;
esac

echo "== kill -9 loop: $ROUNDS rounds, EDGEPLANE_CRASH_SEED=$SEED"
EDGEPLANE_CRASH_ROUNDS="$ROUNDS" EDGEPLANE_CRASH_SEED="$SEED" \
    cargo test --locked --test crash_e2e acknowledged_writes_survive_sigkill -- --nocapture
