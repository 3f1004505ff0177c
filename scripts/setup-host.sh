#!/usr/bin/env bash
# Idempotent host set-up for spawnwatch.  Two modes, each saying what it installs
# before it does:
#   demo   what `make demo` needs: Debian's bcc (python3-bpfcc), python3-venv and pip,
#          the kernel headers bcc compiles against, node and npm (the simulated leak);
#   test   demo's packages plus the test corpus `make test` runs against (container
#          engines, Prometheus, Alertmanager, PostgreSQL, Apache, OpenSSH, Vagrant, ...).
# Then tracefs, a venv that sees Debian's bcc, and the project installed in it.
# It never removes or replaces a package: Docker's engine is left alone when one is
# present (Debian's docker.io Conflicts: docker-ce), apt is asked first (apt-get -s)
# and the set-up refuses when apt would remove anything.
# --dry-run prints the plan and apt's simulation, and changes nothing.
set -euo pipefail

usage="usage: setup-host.sh demo|test [--dry-run]"
repo=$(cd "$(dirname "$0")/.." && pwd)
venv="$repo/.venv"
kernel=$(uname -r)

say() { printf 'setup: %s\n' "$*" >&2; }

mode=""
dry_run=no
for arg in "$@"; do
    case $arg in
        demo|test) mode=$arg ;;
        --dry-run) dry_run=yes ;;
        *) say "$usage"; exit 2 ;;
    esac
done
if [ -z "$mode" ]; then
    say "$usage"
    exit 2
fi
if [ "$(id -u)" -ne 0 ]; then
    say "must run as root (try: sudo make setup-$mode)"
    exit 1
fi

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }

# apt_install only plans: install_planned installs everything at once, after saying what.
planned=()
apt_install() {
    local pkg
    for pkg in "$@"; do
        installed "$pkg" || planned+=("$pkg")
    done
}

apt_updated=no
apt_update() {
    [ "$dry_run" = yes ] && return 0
    [ "$apt_updated" = yes ] && return 0
    say "apt-get update"
    apt-get update -qq
    apt_updated=yes
}

# A Docker engine the user installed (Docker CE, Moby, a dockerd of any origin) is
# kept: Debian's docker.io would replace it.  Docker CE's containerd.io provides
# containerd and runc.  A docker client alone is no engine: the tests start a dockerd,
# and Debian's puts its client in /usr/bin, beside any other.
docker_engine_present() {
    command -v dockerd >/dev/null && return 0
    local pkg
    for pkg in docker-ce docker-ce-cli docker-ee moby-engine containerd.io; do
        installed "$pkg" && return 0
    done
    return 1
}

install_planned() {
    [ ${#planned[@]} -eq 0 ] && { say "$mode: every Debian package is already installed"; return 0; }
    say "$mode: installing from the Debian archive: ${planned[*]} (and what they depend on)"
    apt_update
    local simulation removals
    simulation=$(LC_ALL=C apt-get -s install --no-install-recommends "${planned[@]}" 2>&1) || {
        printf '%s\n' "$simulation" >&2
        say "apt cannot install these packages; nothing was changed"
        exit 1
    }
    if [ "$dry_run" = yes ]; then
        printf '%s\n' "$simulation" | grep -E '^(Inst|Remv) ' || true
    fi
    removals=$(printf '%s\n' "$simulation" | awk '$1 == "Remv" { print $2 }' | sort -u | tr '\n' ' ')
    if [ -n "$removals" ]; then
        say "refusing: apt would remove ${removals}to install ${planned[*]}; nothing was changed."
        say "install what you need by hand, or remove those packages yourself first"
        exit 1
    fi
    if [ "$dry_run" = yes ]; then
        say "$mode: dry run, nothing was installed"
        return 0
    fi
    # --no-remove: should apt's answer change after the simulation, it aborts instead.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-remove --no-install-recommends \
        "${planned[@]}" >/dev/null
}

# The demo: bcc from Debian (packaged for Debian's python3), a venv to install into.
apt_install python3-bpfcc python3-venv python3-pip
# `spawnwatch simulate` runs a node supervisor that starts `npm exec` children.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    apt_install nodejs npm
fi

# bcc compiles against /lib/modules/$(uname -r)/build.  Prefer the headers of this
# exact kernel; when the archive has none, link the distribution's generic ones.
# Our BPF code reads only tracepoint fields and helpers, so mismatched headers are
# harmless for it, but say so loudly.
modules="/lib/modules/$kernel"
generic_headers=no
if [ ! -e "$modules/build/include/linux/kconfig.h" ] && [ ! -e "$modules/source/include/linux/kconfig.h" ]; then
    if apt-cache show "linux-headers-$kernel" >/dev/null 2>&1 || { apt_update && apt-cache show "linux-headers-$kernel" >/dev/null 2>&1; }; then
        apt_install "linux-headers-$kernel"
    else
        apt_install "linux-headers-$(dpkg --print-architecture)"
        generic_headers=yes
    fi
fi

corpus_services=()
if [ "$mode" = test ]; then
    # The container tests: Debian's docker.io unless an engine is already here.
    if ! docker_engine_present; then
        apt_install docker.io
    fi
    # busybox-static: the container tests' image; shellcheck and vagrant(-libvirt):
    # `make test` lints the scripts and validates the Vagrantfile (booting a VM is
    # `make vagrant-test`, which installs the rest through vagrant/host.sh); bpftool and
    # build-essential: the kernel-fault and hostile tests.
    apt_install bpftool busybox-static shellcheck build-essential vagrant vagrant-libvirt
    # The alerting engine the service feeds (tests run a real Alertmanager and Prometheus),
    # and systemd-analyze, which judges the service unit.
    apt_install prometheus prometheus-alertmanager systemd
    # The other container runtimes the tests name containers of (tests/runtimes_env.py):
    # rootful Podman, and Debian's containerd started on a socket of the tests' own; runc
    # runs both (crun refuses cgroup v1 hybrids).  Docker CE's containerd.io provides both.
    apt_install podman
    if ! installed containerd.io; then
        command -v containerd >/dev/null || apt_install containerd
        command -v runc >/dev/null || apt_install runc
    fi
    # The container image's base is a Debian 12 made here (scripts/build-base-image.sh).
    apt_install debootstrap
    # The healthy corpus (tests/test_healthy_corpus.py): real servers the tests start
    # privately, on 127.0.0.1 or unix sockets with their own config.  Services the install
    # itself starts (Apache on :80, PostgreSQL's main cluster) are stopped and disabled when
    # this script installed them: the tests need the programs, not system-wide servers.
    # Dovecot (IMAP) and xinetd: per-connection servers the managed-pool corpus runs
    # (tests/test_managed_pools.py).
    for package_service in apache2:apache2 postgresql:postgresql dovecot-imapd:dovecot xinetd:xinetd; do
        installed "${package_service%%:*}" || corpus_services+=("${package_service#*:}")
    done
    apt_install postgresql python3-psycopg2 openssh-server openssh-client apache2 procps dovecot-imapd xinetd
fi

install_planned
if [ "$dry_run" = yes ]; then
    exit 0
fi

if [ ${#corpus_services[@]} -gt 0 ] && [ -d /run/systemd/system ]; then
    systemctl disable --now "${corpus_services[@]}" >/dev/null 2>&1 || say "WARNING: could not stop ${corpus_services[*]}"
fi

if [ "$generic_headers" = yes ]; then
    generic=$(dpkg-query -W -f='${Depends}' "linux-headers-$(dpkg --print-architecture)" | grep -o 'linux-headers-[^ ,]*' | head -n1)
    common=$(dpkg-query -W -f='${Depends}' "$generic" | grep -o 'linux-headers-[^ ,]*-common[^ ,]*' | head -n1)
    mkdir -p "$modules"
    ln -sfn "/usr/src/$generic" "$modules/build"
    ln -sfn "/usr/src/${common:-$generic}" "$modules/source"
    say "WARNING: no headers for kernel $kernel in the archive; linked $generic instead."
    say "WARNING: they do not match the running kernel; spawnwatch reads no kernel structs, so it still works."
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
# The test extras (pytest and the clients the tests drive) come with `test` only.
fresh() { [ -e "$1" ] && ! [ "$repo/pyproject.toml" -nt "$1" ]; }
if ! fresh "$venv/.installed-test" && { [ "$mode" = test ] || ! fresh "$venv/.installed-demo"; }; then
    target=$repo
    [ "$mode" = test ] && target="${repo}[test]"
    say "installing spawnwatch into $venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -e "$target"
    touch "$venv/.installed-$mode"
fi
