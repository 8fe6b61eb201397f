#!/usr/bin/env bash
# Checks the unit files in systemd/ with systemd's own tools: `systemd-analyze verify` is
# clean for both, and `systemd-analyze security` scores the control plane at 2.0 or lower and
# the agent (which keeps what it needs to drive its proxy) at 3.5 or lower.
set -euo pipefail
cd "$(dirname "$0")/../.."

max_exposure_serve=2.0
max_exposure_agent=3.5

if ! command -v systemd-analyze >/dev/null; then
    echo "systemd-analyze missing: installing Debian's systemd package"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null; }; then
        echo "SKIPPED: systemd-analyze is not installed and cannot be installed here" >&2
        echo "SKIPPED: the unit files in systemd/ were NOT checked" >&2
        exit 0
    fi
fi

# verify checks that ExecStart names an executable: point the copies at the built binary.
binary="$PWD/target/debug/edgeplane"
if [ ! -x "$binary" ]; then
    cargo build --locked --bin edgeplane
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for unit in systemd/*.service; do
    sed "s#/usr/local/bin/edgeplane#$binary#g" "$unit" >"$work/$(basename "$unit")"
done

status=0
for unit in "$work"/*.service; do
    name=$(basename "$unit")
    # verify prints nothing for a clean unit; any line is a finding.
    findings=$(systemd-analyze verify "$unit" 2>&1) || true
    if [ -n "$findings" ]; then
        echo "FAIL: systemd-analyze verify $name:" >&2
        echo "$findings" >&2
        status=1
    else
        echo "ok: systemd-analyze verify $name"
    fi
done

check_exposure() {
    local name=$1 limit=$2 exposure
    exposure=$(systemd-analyze security --offline=true --no-pager "$work/$name" 2>&1 |
        sed -n 's/^→ Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
    if [ -z "$exposure" ]; then
        echo "FAIL: no exposure level for $name" >&2
        status=1
    elif awk -v e="$exposure" -v l="$limit" 'BEGIN { exit !(e <= l) }'; then
        echo "ok: $name exposure $exposure (at most $limit)"
    else
        echo "FAIL: $name exposure $exposure, above $limit" >&2
        systemd-analyze security --offline=true --no-pager "$work/$name" | grep '✗' >&2 || true
        status=1
    fi
}
check_exposure edgeplane.service "$max_exposure_serve"
check_exposure edgeplane-agent.service "$max_exposure_agent"
exit "$status"
