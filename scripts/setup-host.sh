#!/usr/bin/env bash
# Idempotent host set-up for spawnwatch: Debian packages, kernel headers for bcc,
# tracefs, a venv that sees Debian's bcc, and the project installed in it.
# A second run only checks and returns quickly.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
venv="$repo/.venv"
kernel=$(uname -r)

say() { printf 'setup: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    say "must run as root (try: sudo make setup)"
    exit 1
fi

apt_updated=no
apt_install() {
    local missing=()
    local pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$apt_updated" = no ]; then
        say "apt-get update"
        apt-get update -qq
        apt_updated=yes
    fi
    say "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# docker.io and busybox-static: the container tests; shellcheck and vagrant(-libvirt):
# `make test` lints the scripts and validates the Vagrantfile (booting a VM is
# `make vagrant-test`, which installs the rest through vagrant/host.sh).
apt_install python3-bpfcc python3-venv python3-pip bpftool busybox-static docker.io shellcheck \
    build-essential vagrant vagrant-libvirt
# The alerting engine the service feeds (tests run a real Alertmanager and Prometheus),
# and systemd-analyze, which judges the service unit.
apt_install prometheus prometheus-alertmanager systemd
# The other container runtimes the tests name containers of (tests/runtimes_env.py):
# rootful Podman, and Debian's containerd (docker.io's own dependency, the same package)
# started on a socket of the tests' own; runc runs both (crun refuses cgroup v1 hybrids).
apt_install podman containerd runc
# The container image's base is a Debian 12 made here (scripts/build-base-image.sh).
apt_install debootstrap
# The healthy corpus (tests/test_healthy_corpus.py): real servers the tests start privately,
# on 127.0.0.1 or unix sockets with their own config.  Services the install itself starts
# (Apache on :80, PostgreSQL's main cluster) are stopped and disabled when this script
# installed them: the tests need the programs, not system-wide servers.  Dovecot (IMAP) and
# xinetd: per-connection servers the managed-pool corpus runs (tests/test_managed_pools.py).
corpus_services=()
for package_service in apache2:apache2 postgresql:postgresql dovecot-imapd:dovecot xinetd:xinetd; do
    package=${package_service%%:*}
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || corpus_services+=("${package_service#*:}")
done
apt_install postgresql python3-psycopg2 openssh-server openssh-client apache2 procps dovecot-imapd xinetd
if [ ${#corpus_services[@]} -gt 0 ] && [ -d /run/systemd/system ]; then
    systemctl disable --now "${corpus_services[@]}" >/dev/null 2>&1 || say "WARNING: could not stop ${corpus_services[*]}"
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    apt_install nodejs npm
fi

# bcc compiles against /lib/modules/$(uname -r)/build.  Prefer the headers of this
# exact kernel; when the archive has none, link the distribution's generic ones.
# Our BPF code reads only tracepoint fields and helpers, so mismatched headers are
# harmless for it, but say so loudly.
modules="/lib/modules/$kernel"
if [ ! -e "$modules/build/include/linux/kconfig.h" ] && [ ! -e "$modules/source/include/linux/kconfig.h" ]; then
    if apt-cache show "linux-headers-$kernel" >/dev/null 2>&1 || { apt-get update -qq && apt_updated=yes && apt-cache show "linux-headers-$kernel" >/dev/null 2>&1; }; then
        apt_install "linux-headers-$kernel"
    else
        arch=$(dpkg --print-architecture)
        apt_install "linux-headers-$arch"
        generic=$(dpkg-query -W -f='${Depends}' "linux-headers-$arch" | grep -o 'linux-headers-[^ ,]*' | head -n1)
        common=$(dpkg-query -W -f='${Depends}' "$generic" | grep -o 'linux-headers-[^ ,]*-common[^ ,]*' | head -n1)
        mkdir -p "$modules"
        ln -sfn "/usr/src/$generic" "$modules/build"
        ln -sfn "/usr/src/${common:-$generic}" "$modules/source"
        say "WARNING: no headers for kernel $kernel in the archive; linked $generic instead."
        say "WARNING: they do not match the running kernel; spawnwatch reads no kernel structs, so it still works."
    fi
fi

# Tracepoints live in tracefs; minimal hosts and containers may not mount it.
if [ ! -d /sys/kernel/tracing/events ]; then
    mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || say "WARNING: could not mount tracefs"
fi
if [ ! -d /sys/kernel/debug/tracing ] && [ -d /sys/kernel/debug ]; then
    mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null || true
fi

# The venv is made from Debian's python, the one bcc is packaged for.
if [ ! -x "$venv/bin/python" ]; then
    say "creating $venv"
    /usr/bin/python3 -m venv --system-site-packages "$venv"
fi
stamp="$venv/.installed"
if [ ! -e "$stamp" ] || [ "$repo/pyproject.toml" -nt "$stamp" ]; then
    say "installing spawnwatch into $venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -e "${repo}[test]"
    touch "$stamp"
fi
