#!/usr/bin/env bash
# Builds the statically linked release binary and proves it: no dynamic loader needed, it
# prints its version, serves on a free port with an empty data dir, and exits 0 on SIGTERM.
# Prints the binary's size and its start-up time (exec to `listening on`).
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-gnu
binary="target/$target/release/edgeplane"

echo "== static release build ($target)"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --target "$target"

echo "== linked statically?"
if ! command -v file >/dev/null; then
    apt-get install -y -qq file >/dev/null || { apt-get update -qq && apt-get install -y -qq file >/dev/null; }
fi
file_says=$(file -L "$binary")
echo "$file_says"
case "$file_says" in
    *"statically linked"* | *"static-pie linked"*) ;;
    *) echo "FAIL: $binary is not statically linked" >&2; exit 1 ;;
esac
ldd_says=$(ldd "$binary" 2>&1 || true)
echo "ldd: $ldd_says"
case "$ldd_says" in
    *"not a dynamic executable"* | *"statically linked"*) ;;
    *) echo "FAIL: ldd lists shared libraries" >&2; exit 1 ;;
esac

echo "== starts"
"$binary" --version

work=$(mktemp -d)
server_pid=""
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -KILL "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# An empty environment, as under systemd: no CA bundle path, no HOME, nothing inherited.
started=$(date +%s%N)
env -i PATH=/usr/bin:/bin "$binary" serve --listen 127.0.0.1:0 --data-dir "$work/data" \
    >"$work/stdout" 2>"$work/stderr" &
server_pid=$!
deadline=$((SECONDS + 30))
until grep -q "^listening on " "$work/stdout"; do
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "FAIL: the server exited before listening" >&2
        cat "$work/stderr" >&2
        exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "FAIL: no 'listening on' within 30 s" >&2
        exit 1
    fi
    sleep 0.01
done
ready=$(date +%s%N)
grep "^listening on " "$work/stdout"

kill -TERM "$server_pid"
status=0
wait "$server_pid" || status=$?
server_pid=""
if [ "$status" -ne 0 ]; then
    echo "FAIL: SIGTERM exit status $status (expected 0)" >&2
    cat "$work/stderr" >&2
    exit 1
fi
echo "SIGTERM: exit 0"

size_bytes=$(stat -c %s "$binary")
echo "== $binary: $((size_bytes / 1024 / 1024)) MiB ($size_bytes bytes), start-up to 'listening on' $(((ready - started) / 1000000)) ms on an empty data dir"
