#!/usr/bin/env bash
# Vagrant's shell provisioner runs this as root in the guest:
#   provision.sh REPO
# installs spawnwatch with `make setup`, runs `spawnwatch watch` as the systemd service
# spawnwatch-watch, and once it traces, starts the leak (spawnwatch-leak).
# Idempotent: `vagrant provision` restarts both services with fresh alerts.
set -euo pipefail

repo=${1:?usage: provision.sh REPO}
out="$repo/vagrant/out"
say() { printf 'provision: %s\n' "$*" >&2; }

# The host downloads the Python wheels (`make vagrant-wheels`) so pip needs no PyPI;
# without them pip uses the network as usual.
wheels="$repo/vagrant/.cache/wheels"
if compgen -G "$wheels/*.whl" >/dev/null; then
    export PIP_NO_INDEX=1 PIP_FIND_LINKS="$wheels"
fi
# A public box lacks make; the local box has everything (vagrant/guest-packages.txt).
if ! command -v make >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq make >/dev/null
fi
say "make setup"
make -C "$repo" --no-print-directory setup

for unit in spawnwatch-watch spawnwatch-leak; do
    sed "s#@REPO@#$repo#g" "$repo/vagrant/$unit.service" >"/etc/systemd/system/$unit.service"
done
systemctl daemon-reload
systemctl stop spawnwatch-leak spawnwatch-watch
mkdir -p "$out"
: >"$out/alerts.jsonl"
systemctl start spawnwatch-watch

# Start the leak only once watch is attached, so it sees every spawn.
say "waiting for spawnwatch watch to attach"
for _ in $(seq 600); do
    grep -q '"kind": *"ready"' "$out/alerts.jsonl" && break
    if ! systemctl -q is-active spawnwatch-watch; then
        journalctl -u spawnwatch-watch --no-pager -n 20 >&2
        say "spawnwatch-watch failed"
        exit 1
    fi
    sleep 1
done
grep -q '"kind": *"ready"' "$out/alerts.jsonl" || { say "spawnwatch watch did not attach in 10 minutes"; exit 1; }
systemctl start spawnwatch-leak
say "leak started; alerts: journalctl -u spawnwatch-watch, or $out/alerts.jsonl"
