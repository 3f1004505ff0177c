#!/usr/bin/env bash
# Make sure a Docker engine answers; start our own dockerd when none does.
# Prints the daemon's socket (unix:///...) on stdout, diagnostics on stderr.
#
# Idempotent: when `docker info` already works (the host's engine, or one this
# script started earlier) it only prints the socket.  The engine it starts runs
# without iptables or a bridge (minimal hosts and VMs have neither; spawnwatch's
# containers use `--network none`), with its own data root so it never touches a
# host engine's images or containers.
#
# Stop an engine this script started:  scripts/start-dockerd.sh --stop
set -euo pipefail

socket_path=${SPAWNWATCH_DOCKER_SOCKET:-/run/docker.sock}
data_root=${SPAWNWATCH_DOCKER_DATA_ROOT:-/var/lib/spawnwatch-docker}
pidfile=/run/spawnwatch-dockerd.pid
logfile=/var/log/spawnwatch-dockerd.log
wait_seconds=60

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"

answers() {
    DOCKER_HOST="$1" docker_cli info --format '{{.ServerVersion}}' >/dev/null 2>&1
}

ours_running() {
    [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

if [ "${1:-}" = "--stop" ]; then
    if ours_running; then
        pid=$(cat "$pidfile")
        say "stopping dockerd (pid $pid)"
        kill -TERM "$pid"
        for _ in $(seq 1 "$wait_seconds"); do
            kill -0 "$pid" 2>/dev/null || exit 0
            sleep 1
        done
        say "dockerd (pid $pid) did not stop within ${wait_seconds}s"
        exit 1
    fi
    say "no dockerd started by this script is running"
    exit 0
fi

candidates=()
[ -n "${DOCKER_HOST:-}" ] && candidates+=("$DOCKER_HOST")
candidates+=("unix://$socket_path" "unix:///var/run/docker.sock")
for host in "${candidates[@]}"; do
    if answers "$host"; then
        echo "$host"
        exit 0
    fi
done

if [ "$(id -u)" -ne 0 ]; then
    say "no Docker engine answers and starting one needs root"
    exit 1
fi
if ! command -v dockerd >/dev/null; then
    say "dockerd is not installed (apt-get install docker.io, or: sudo make setup)"
    exit 1
fi

# One starter at a time (make test's two workers may both get here): a second one waits,
# then finds the first's engine running rather than start another on the same socket.
exec 9>/run/spawnwatch-dockerd.lock
flock 9
if ! ours_running; then
    mkdir -p "$data_root" "$(dirname "$logfile")"
    say "starting dockerd (data root $data_root, log $logfile)"
    # setsid: the engine must outlive the shell (or test session) that started it.
    setsid dockerd \
        --host "unix://$socket_path" \
        --data-root "$data_root" \
        --pidfile "$pidfile" \
        --iptables=false --ip-masq=false --bridge=none \
        >>"$logfile" 2>&1 </dev/null 9>&- &  # the engine must not hold the starters' lock
fi

for _ in $(seq 1 "$wait_seconds"); do
    if answers "unix://$socket_path"; then
        echo "unix://$socket_path"
        exit 0
    fi
    sleep 1
done
say "dockerd did not answer within ${wait_seconds}s; last lines of $logfile:"
tail -n 20 "$logfile" >&2
exit 1
