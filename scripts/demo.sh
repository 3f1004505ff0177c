#!/usr/bin/env bash
# The leak reproduction under spawnwatch, in about 40 seconds (needs root):
#   1. `spawnwatch watch` attaches to the kernel;
#   2. `spawnwatch simulate accumulate` starts a leaky MCP supervisor that launches one
#      `npm exec magic` child every 2 s and never ends any;
#   3. watch raises the `accumulating` alert (about 18 s after the first spawn);
#   4. `spawnwatch tree` shows the supervisor's collapsed children, flagged;
#   5. everything the simulation started is stopped and reaped.
# DEMO_SECONDS (default 30) is how long watch runs; PY is the interpreter with spawnwatch.
set -euo pipefail

cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WATCH_SECONDS=${DEMO_SECONDS:-30}
workdir=$(mktemp -d -t spawnwatch-demo.XXXXXX)
watch_pid=""
simulate_pid=""

cleanup() {
    trap - EXIT INT TERM
    # simulate stops its supervisor, which ends every child it started (orphans included).
    if [[ -n $simulate_pid ]] && kill -0 "$simulate_pid" 2>/dev/null; then
        kill -TERM "$simulate_pid" 2>/dev/null || true
        wait "$simulate_pid" 2>/dev/null || true
    fi
    if [[ -n $watch_pid ]] && kill -0 "$watch_pid" 2>/dev/null; then
        kill -TERM "$watch_pid" 2>/dev/null || true
        wait "$watch_pid" 2>/dev/null || true
    fi
    rm -rf "$workdir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "spawnwatch watch --duration $WATCH_SECONDS   (compiling and attaching the BPF programs)"
# Text logs whatever SPAWNWATCH_LOG_FORMAT says: the demo waits for watch's ready line.
"$PY" -m spawnwatch --log-format text watch --duration "$WATCH_SECONDS" 2>"$workdir/watch.err" &
watch_pid=$!
until grep -q ' watch: watching ' "$workdir/watch.err" 2>/dev/null; do
    if ! kill -0 "$watch_pid" 2>/dev/null; then
        cat "$workdir/watch.err" >&2
        exit 1
    fi
    sleep 0.2
done
cat "$workdir/watch.err"

say "spawnwatch simulate accumulate   (a leaky MCP supervisor: one \`npm exec magic\` every 2 s, none ended)"
# --duration is only a safety net: the demo stops it as soon as the tree is shown.
"$PY" -m spawnwatch simulate accumulate --max 20 --duration $((WATCH_SECONDS + 60)) >"$workdir/simulate.log" 2>&1 &
simulate_pid=$!

wait "$watch_pid" || { echo "watch failed:" >&2; cat "$workdir/watch.err" >&2; exit 1; }
watch_pid=""
tail -n 1 "$workdir/watch.err"

say "spawnwatch tree --pid $simulate_pid   (identical siblings collapsed, leaks flagged)"
"$PY" -m spawnwatch tree --pid "$simulate_pid"

say "cleaning up: the supervisor ends its children"
kill -TERM "$simulate_pid"
wait "$simulate_pid" || { echo "simulate did not clean up:" >&2; tail -n 5 "$workdir/simulate.log" >&2; exit 1; }
simulate_pid=""
echo "done"
