#!/usr/bin/env bash
# The API contract against a live server: Schemathesis generates valid and invalid requests
# from the server's own OpenAPI document and fails on any 5xx, any answer that breaks its
# schema, any status code or content type the document does not declare.
#
# Uses the debug binary (built if missing), a temp data dir, port 0, and a virtualenv under
# target/ where Schemathesis is installed on first use.
set -euo pipefail
cd "$(dirname "$0")/../.."

SCHEMATHESIS_VERSION="4.32.5"
VENV="target/venv"
BIN="target/debug/edgeplane"
ADMIN_PASSWORD="contract-admin-password"
# Test cases per operation and mode; the whole run stays within a few minutes.
MAX_EXAMPLES="${CONTRACT_MAX_EXAMPLES:-50}"

if [ ! -x "$VENV/bin/schemathesis" ] \
    || ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
    echo "== installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
    if ! { python3 -m venv "$VENV" \
        && "$VENV/bin/pip" install --quiet --disable-pip-version-check \
            "schemathesis==$SCHEMATHESIS_VERSION"; }; then
        echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
        echo "!!! schemathesis could not be installed: the API contract run is SKIPPED  !!!"
        echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
        exit 0
    fi
fi

cargo build --locked --quiet --bin edgeplane

WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# Budgets far above what the run sends, so that 429 does not drown the real answers; the
# seeded version is approved by its own author.
cat > "$WORK/edgeplane.toml" <<'EOF'
[server]
allow_self_approval = true

[log]
format = "text"
level = "warn"

[limits]
writes_per_minute = 1000000
reads_per_minute = 1000000
validate_per_minute = 1000000
deployment_actions_per_minute = 1000000
metrics_reads_per_minute = 1000000
heartbeats_per_second = 1000000
public_per_minute = 1000000
login_attempts_per_minute = 1000000
EOF

EDGEPLANE_BOOTSTRAP_ADMIN_PASSWORD="$ADMIN_PASSWORD" "$BIN" serve \
    --config "$WORK/edgeplane.toml" --data-dir "$WORK/data" --listen 127.0.0.1:0 \
    > "$WORK/server.out" 2> "$WORK/server.err" &
SERVER_PID=$!

ADDRESS=""
for _ in $(seq 1 300); do
    ADDRESS="$(sed -n 's/^listening on \(http:\/\/\)\{0,1\}//p' "$WORK/server.out" | head -n 1)"
    [ -n "$ADDRESS" ] && break
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "the server stopped before listening:"
        cat "$WORK/server.err"
        exit 1
    fi
    sleep 0.1
done
if [ -z "$ADDRESS" ]; then
    echo "the server did not say where it listens within 30 s"
    cat "$WORK/server.err"
    exit 1
fi
BASE="http://$ADDRESS"
echo "== server on $BASE"

TOKEN="$("$VENV/bin/python" tests/contract/seed.py "$BASE" "$ADMIN_PASSWORD" \
    "$WORK/schemathesis.toml")"

echo "== schemathesis $SCHEMATHESIS_VERSION (max $MAX_EXAMPLES examples per operation)"
status=0
# Run from the temp dir: Schemathesis and Hypothesis keep their caches in the working dir.
ROOT="$PWD"
cd "$WORK"
timeout 900 "$ROOT/$VENV/bin/schemathesis" --config-file "$WORK/schemathesis.toml" \
    run "$BASE/api/v1/openapi.json" \
    --url "$BASE" \
    --header "Authorization: Bearer $TOKEN" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --mode all \
    --phases examples,coverage,fuzzing \
    --max-examples "$MAX_EXAMPLES" \
    --seed 20261129 \
    --generation-database none \
    --request-timeout 30 \
    --no-color \
    || status=$?

if grep -q "panicked" "$WORK/server.err"; then
    echo "the server panicked during the run:"
    grep -A5 "panicked" "$WORK/server.err"
    status=1
fi
if [ "$status" -ne 0 ]; then
    echo "== schemathesis found contract failures (exit $status); server log tail:"
    tail -n 40 "$WORK/server.err"
fi
exit "$status"
