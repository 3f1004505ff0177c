#!/usr/bin/env bash
# Vagrant's shell provisioner runs this as root in the guest:
#   provision.sh REPO
# installs spawnwatch as a user would (the wheel, into a venv of Debian's python that
# sees python3-bpfcc), runs it as the shipped systemd unit (deploy/systemd/), and once
# it traces, starts the leak (spawnwatch-leak).
# Idempotent: `vagrant provision` reinstalls and restarts both with fresh alerts.
set -euo pipefail

repo=${1:?usage: provision.sh REPO}
say() { printf 'provision: %s\n' "$*" >&2; }

# The host built the wheel and fetched its dependencies (vagrant/vm.sh), so the guest
# installs with no package index.
wheels="$repo/vagrant/.cache/wheels"
if ! compgen -G "$wheels/spawnwatch-*.whl" >/dev/null; then
    say "no spawnwatch wheel in $wheels (make vagrant-demo builds it on the host)"
    exit 1
fi
say "installing the wheel into /opt/spawnwatch"
[ -x /opt/spawnwatch/bin/python ] || python3 -m venv --system-site-packages /opt/spawnwatch
/opt/spawnwatch/bin/pip install --quiet --disable-pip-version-check --no-index --find-links "$wheels" \
    --force-reinstall spawnwatch
ln -sfn /opt/spawnwatch/bin/spawnwatch /usr/local/bin/spawnwatch

say "installing the systemd unit"
install -m 0644 "$repo/deploy/systemd/spawnwatch.service" /etc/systemd/system/spawnwatch.service
install -D -m 0644 "$repo/deploy/systemd/config.toml" /etc/spawnwatch/config.toml
sed "s#@REPO@#$repo#g" "$repo/vagrant/spawnwatch-leak.service" >/etc/systemd/system/spawnwatch-leak.service
systemctl daemon-reload
systemctl stop spawnwatch-leak spawnwatch
since=$(date '+%Y-%m-%d %H:%M:%S')
systemctl enable --now spawnwatch

# Start the leak only once watch is attached, so it sees every spawn.
say "waiting for spawnwatch to attach"
ready() { journalctl -u spawnwatch --since "$since" -o cat --no-pager | grep -q '"kind":"ready"'; }
for _ in $(seq 600); do
    ready && break
    if ! systemctl -q is-active spawnwatch; then
        journalctl -u spawnwatch --no-pager -n 20 >&2
        say "the spawnwatch service failed"
        exit 1
    fi
    sleep 1
done
ready || { say "spawnwatch did not attach in 10 minutes"; exit 1; }
systemctl start spawnwatch-leak
say "leak started; alerts: journalctl -u spawnwatch -o cat"
