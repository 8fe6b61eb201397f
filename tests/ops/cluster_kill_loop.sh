#!/usr/bin/env bash
# A longer failover loop than the test suite's 20 rounds: a primary and a standby under sync
# replication, 4 concurrent writers, kill -9 of the primary at a random moment, promotion of
# the standby; every acknowledged write must be on the new primary, and once the old primary
# has rejoined as a standby both stores must hash the same.
#
#   tests/ops/cluster_kill_loop.sh [ROUNDS] [SEED]     # defaults: 200 rounds, a random seed
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

echo "== failover loop: $ROUNDS rounds, CLUSTER_KILL_SEED=$SEED"
CLUSTER_KILL_ROUNDS="$ROUNDS" CLUSTER_KILL_SEED="$SEED" \
    cargo test --locked --test cluster_e2e kill_9_of_the_primary -- --nocapture
