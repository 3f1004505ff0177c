#!/usr/bin/env bash
# The host side of the Vagrant reproduction (root, idempotent):
#   vagrant/host.sh install   Debian packages: vagrant, vagrant-libvirt, libvirt, QEMU, box build tools
#   vagrant/host.sh start     libvirt daemons and storage pool, also where PID 1 is not systemd
#   vagrant/host.sh stop      stop the daemons that `start` started itself, nothing else
#   vagrant/host.sh driver    print the libvirt domain type to use: kvm if KVM boots a kernel, else qemu
set -euo pipefail

state=/run/spawnwatch-vagrant
box_cache=${SPAWNWATCH_BOX_CACHE:-/var/cache/spawnwatch-box}
say() { printf 'vagrant-host: %s\n' "$*" >&2; }

install_packages() {
    local wanted=(vagrant vagrant-libvirt libvirt-daemon-system libvirt-clients qemu-system-x86
        qemu-utils dnsmasq-base iptables rsync libarchive-tools debootstrap extlinux syslinux-common fdisk docker.io)
    local missing=() pkg
    for pkg in "${wanted[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

running() {  # running PIDFILE: the daemon that wrote PIDFILE is alive
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

start_daemon() {  # start_daemon NAME: start NAME -d unless running, remember that we did
    local name=$1
    running "/run/$name.pid" && return 0
    "$name" -d
    touch "$state/started-$name"
}

start() {
    mkdir -p "$state"
    # Under systemd the packages' units own the daemons.
    if [ -d /run/systemd/system ]; then
        systemctl start virtlogd.socket libvirtd.service
    else
        start_daemon virtlogd
        start_daemon libvirtd
    fi
    local i
    for i in $(seq 50); do
        virsh -q version >/dev/null 2>&1 && break
        [ "$i" -eq 50 ] && { say "libvirtd does not answer"; exit 1; }
        sleep 0.2
    done
    if ! virsh -q pool-info default >/dev/null 2>&1; then
        virsh -q pool-define-as default dir --target /var/lib/libvirt/images >/dev/null
        virsh -q pool-build default >/dev/null
    fi
    # grep reads all of virsh's output: -q would end the pipe early and fail it (pipefail).
    if ! virsh -q pool-info default | grep '^State:.*running' >/dev/null; then
        virsh -q pool-start default >/dev/null
    fi
}

stop() {
    local name
    # libvirtd would leave the dnsmasq of its networks (vagrant-libvirt's own) running.
    if [ -e "$state/started-libvirtd" ]; then
        virsh -q net-list --name | while read -r network; do
            [ -z "$network" ] || virsh -q net-destroy "$network" >/dev/null
        done
    fi
    for name in libvirtd virtlogd; do
        [ -e "$state/started-$name" ] || continue
        if running "/run/$name.pid"; then
            kill "$(cat "/run/$name.pid")"
        fi
        rm -f "$state/started-$name"
    done
}

# KVM that opens fine may still be unable to run a stock kernel (nested virtualisation
# that only runs modified guests, where the guest hangs silently): boot a Debian kernel
# under KVM and see whether it prints its banner.  The kernel comes from /boot or from
# the box build's package cache; without one, a writable /dev/kvm has to do.
driver() {
    local cached="$state/driver"
    if [ ! -s "$cached" ]; then
        mkdir -p "$state"
        probe_driver >"$cached"
    fi
    cat "$cached"
}

probe_driver() {
    [ -w /dev/kvm ] || { echo qemu; return; }
    local kernel scratch="" package
    kernel=$(find /boot -maxdepth 1 -name 'vmlinuz-*' 2>/dev/null | head -n1)
    package=$(find "$box_cache/apt" -maxdepth 1 -name 'linux-image-*-cloud-amd64_*.deb' 2>/dev/null | head -n1)
    if [ -z "$kernel" ] && [ -n "$package" ]; then
        scratch=$(mktemp -d)
        dpkg-deb --fsys-tarfile "$package" | tar -x -C "$scratch" --wildcards './boot/vmlinuz-*'
        kernel=$(find "$scratch/boot" -name 'vmlinuz-*' | head -n1)
    fi
    if [ -z "$kernel" ]; then
        echo kvm
    elif { timeout 20 qemu-system-x86_64 -accel kvm -m 256 -nodefaults \
            -display none -no-reboot -serial stdio -kernel "$kernel" -append "console=ttyS0 panic=-1" \
            2>/dev/null || true; } | grep -q 'Linux version'; then
        echo kvm
    else
        echo qemu
    fi
    [ -z "$scratch" ] || rm -rf "$scratch"
}

case "${1:-}" in
    install) install_packages ;;
    start) start ;;
    stop) stop ;;
    driver) driver ;;
    *) echo "usage: $0 install|start|stop|driver" >&2; exit 2 ;;
esac
